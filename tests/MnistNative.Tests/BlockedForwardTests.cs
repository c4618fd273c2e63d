using System.Runtime.Intrinsics;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Kernels;
using Xunit;

namespace MnistNative.Tests;

/// <summary>
/// The sample blocks' forward alone (<see cref="FusedTilePath{TW, TVec}.BlockedHiddenForward"/>) against its
/// definition computed one float at a time: per hidden unit and sample, z = fma(w, x, z) over the block's kept pixel
/// columns in order from 0, then relu(fma(z, 1/255, b)). Both kernels (the generic walk at avx512, the unit-pair walk
/// at avx2) keep that order, so the activations must match to the bit, at hidden widths that take one walk, a partial
/// last walk and several walks. A width this machine cannot run is skipped, except under CI=true, where it fails.
/// </summary>
public sealed unsafe class BlockedForwardTests
{
    private const int In = MlpParameters.InputSize;

    public static TheoryData<string, int> WidthsAndHidden
    {
        get
        {
            var data = new TheoryData<string, int>();
            foreach (string width in new[] { "avx2", "avx512" })
                foreach (int hidden in new[] { 1, 2, 9, 10, 17, 34, 128 })
                    data.Add(width, hidden);
            return data;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(WidthsAndHidden))]
    public void ActivationsMatchTheDefinitionBitwise(string width, int hidden)
    {
        if (width == "avx512") Check<Width512, Vector512<float>>(hidden);
        else Check<Width256, Vector256<float>>(hidden);
    }

    private static void Check<TW, TVec>(int hidden) where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
    {
        Skip.If(!TW.IsSupported && Environment.GetEnvironmentVariable("CI") != "true",
            $"{TW.Name} is not supported on this machine");
        const int Tile = FusedTilePath<TW, TVec>.Tile, Count = 2 * Tile - 3, Tiles = 2;
        int hp = (hidden + 1) & ~1, hv = FusedTilePath<TW, TVec>.SparseRowWidth(hp), block = TW.Count;
        var rng = new Random(hidden);
        var pixels = new byte[Count * In];
        for (int i = 0; i < pixels.Length; i++)
            pixels[i] = rng.NextDouble() < 0.8 ? (byte)0 : (byte)rng.Next(1, 256);
        var labels = new byte[Count];
        for (int i = 0; i < Count; i++) labels[i] = (byte)rng.Next(10);
        using PixelBlocks blocks = PixelBlocks.Build(pixels, labels, Tiles * Tile, block, pixelsPerColumn: 2);
        using var w1T = new NativeBuffer<float>(In * hv);
        using var b1 = new NativeBuffer<float>(hv);
        using var a1T = new NativeBuffer<float>(hp * Tile);
        for (int k = 0; k < In; k++)
            for (int j = 0; j < hp; j++) w1T.Span[k * hv + j] = (float)(rng.NextDouble() - 0.5);
        for (int j = 0; j < hp; j++) b1.Span[j] = (float)(rng.NextDouble() - 0.5);
        for (int t = 0; t < Tiles; t++)
        {
            a1T.Span.Fill(float.NaN);
            FusedTilePath<TW, TVec>.BlockedHiddenForward(a1T.Pointer, blocks, t * Tile / block, w1T.Pointer,
                b1.Pointer, hp, hv);
            for (int i = 0; i < Tile / block; i++)
            {
                int b = t * Tile / block + i;
                int start = blocks.BlockStart.Pointer[b], end = blocks.BlockStart.Pointer[b + 1];
                for (int j = 0; j < hp; j++)
                    for (int s = 0; s < block; s++)
                    {
                        float z = 0;
                        for (int e = start; e < end; e++)
                            z = MathF.FusedMultiplyAdd(w1T.Span[blocks.BlockColumn.Pointer[e] * hv + j],
                                blocks.BlockBytes.Pointer[(long)e * block + s], z);
                        float want = MathF.Max(MathF.FusedMultiplyAdd(z, 1f / 255f, b1.Span[j]), 0f);
                        float got = a1T.Span[j * Tile + i * block + s];
                        Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got),
                            $"{TW.Name} H={hidden}: tile {t} block {i} unit {j} sample {s}: {got} against {want}");
                    }
            }
        }
    }
}

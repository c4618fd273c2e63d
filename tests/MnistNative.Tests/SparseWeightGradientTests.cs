using System.Runtime.Intrinsics;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Kernels;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>
/// The rows' weight gradient alone (<see cref="FusedTilePath{TW, TVec}.SparseHiddenWeightGradient"/>) over the
/// columns of pixel pairs of <see cref="SparseImages"/>: every hidden width it serves (the scatter at 1-2 vectors, the
/// pair walks of 4 and 8 vectors, several walks per column at 256) against a float64 sum over the dense pixels, and
/// the layout itself (every non-zero once, in sample order). A width this machine cannot run is skipped, except
/// under CI=true, where it fails.
/// </summary>
public sealed unsafe class SparseWeightGradientTests(ITestOutputHelper output)
{
    private const int In = MlpParameters.InputSize;

    public static TheoryData<string, int> WidthsAndHidden
    {
        get
        {
            var data = new TheoryData<string, int>();
            foreach (string width in new[] { "avx2", "avx512" })
                foreach (int hidden in new[] { 1, 10, 33, 64, 127, 128, 256 })
                    data.Add(width, hidden);
            return data;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(WidthsAndHidden))]
    public void WeightGradientMatchesAFloat64Sum(string width, int hidden)
    {
        double max = width == "avx512"
            ? Check<Width512, Vector512<float>>(hidden)
            : Check<Width256, Vector256<float>>(hidden);
        output.WriteLine($"{width} H={hidden}: max |kernel - float64| {max:E2}");
    }

    [Fact]
    public void PairColumnsHoldEveryNonZeroOnceInSampleOrder()
    {
        const int Tile = 32, Count = 101, Rows = 128;
        byte[] pixels = Pixels(Count, seed: 3);
        using SparseImages images = SparseImages.Build(pixels, Count, Rows, rowWidth: 16, Tile);
        var rebuilt = new byte[pixels.Length];
        long entries = 0;
        for (int t = 0; t < Rows / Tile; t++)
            for (int c = images.TileColumnStart.Pointer[t]; c < images.TileColumnStart.Pointer[t + 1]; c++)
            {
                int offset = images.ColumnOffset.Pointer[c], previous = -1;
                Assert.True(offset % (2 * 16) == 0, $"column {c}: offset {offset} is not an even pixel's row");
                int k = offset / 16;
                for (int i = images.ColumnEntryStart.Pointer[c]; i < images.ColumnEntryStart.Pointer[c + 1]; i++)
                {
                    uint e = images.ColumnEntries.Pointer[i];
                    int sample = (int)(e >> 16);
                    Assert.True(sample > previous && sample < Tile, $"column {c}: sample {sample} after {previous}");
                    Assert.True((e & 0xFFFF) != 0, $"column {c}: an entry with both pixels zero");
                    previous = sample;
                    int image = t * Tile + sample;
                    Assert.Equal(0, rebuilt[image * In + k] | rebuilt[image * In + k + 1]);
                    rebuilt[image * In + k] = (byte)e;
                    rebuilt[image * In + k + 1] = (byte)(e >> 8);
                    entries++;
                }
            }
        Assert.Equal(pixels, rebuilt);
        long lit = 0;
        for (int i = 0; i < pixels.Length; i += 2)
            if ((pixels[i] | pixels[i + 1]) != 0) lit++;
        Assert.Equal(lit, entries);
        Assert.Equal(lit, images.ColumnEntryCount);
    }

    // ~20% non-zero, pixels independent (so the pairs hold each pixel alone and both), a few pairs where only the
    // second pixel is ever non-zero, one all-zero image and one without a zero
    private static byte[] Pixels(int count, int seed)
    {
        var rng = new Random(seed);
        var pixels = new byte[count * In];
        for (int i = 0; i < pixels.Length; i++)
            pixels[i] = rng.NextDouble() < 0.8 ? (byte)0 : (byte)rng.Next(1, 256);
        for (int i = 0; i < count; i++)
            for (int k = 100; k < 110; k += 2) pixels[i * In + k] = 0;
        Array.Clear(pixels, 2 * In, In);
        for (int k = 0; k < In; k++) pixels[5 * In + k] = (byte)(1 + k % 255);
        return pixels;
    }

    private double Check<TW, TVec>(int hidden) where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
    {
        Skip.If(!TW.IsSupported && Environment.GetEnvironmentVariable("CI") != "true",
            $"{TW.Name} is not supported on this machine");
        const int Tile = FusedTilePath<TW, TVec>.Tile, Count = 3 * Tile + 5, Tiles = 4;
        int hp = (hidden + 1) & ~1, hv = FusedTilePath<TW, TVec>.SparseRowWidth(hp);
        byte[] pixels = Pixels(Count, seed: hidden);
        using SparseImages images = SparseImages.Build(pixels, Count, Tiles * Tile, hv, Tile);
        using var dw1T = new NativeBuffer<float>(In * hv);
        using var rows = new NativeBuffer<float>(Tile * hv);
        using var dz1T = new NativeBuffer<float>(Tiles * hp * Tile);
        using var values = new NativeBuffer<float>(256);
        for (int v = 0; v < 256; v++) values.Span[v] = v;
        var rng = new Random(hidden + 1);
        var want = new double[In * hv];
        var magnitude = new double[In * hv]; // sum of the terms' sizes: what float32 rounding scales with
        dw1T.Span.Clear();
        for (int k = 0; k < In; k++)
            for (int j = 0; j < hp; j++) want[k * hv + j] = dw1T.Span[k * hv + j] = (float)(rng.NextDouble() - 0.5);
        for (int i = 0; i < dz1T.Length; i++) dz1T.Span[i] = (float)(rng.NextDouble() - 0.5);
        rows.Span.Fill(float.NaN); // the kernel must write every row it reads, the padding columns included
        for (int t = 0; t < Tiles; t++)
        {
            float* dz1 = dz1T.Pointer + t * hp * Tile;
            for (int s = 0; s < Tile && t * Tile + s < Count; s++)
                for (int k = 0; k < In; k++)
                {
                    byte x = pixels[(t * Tile + s) * In + k];
                    if (x == 0) continue;
                    for (int j = 0; j < hp; j++)
                    {
                        want[k * hv + j] += (double)x * dz1[j * Tile + s];
                        magnitude[k * hv + j] += Math.Abs((double)x * dz1[j * Tile + s]);
                    }
                }
            FusedTilePath<TW, TVec>.SparseHiddenWeightGradient(dw1T.Pointer, rows.Pointer, dz1,
                images.Offsets.Pointer, images.Values.Pointer, images.RowStart.Pointer + t * Tile,
                images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer, images.ColumnOffset.Pointer,
                images.TileColumnStart.Pointer[t], images.TileColumnStart.Pointer[t + 1], values.Pointer, hp, hv);
        }
        double max = 0;
        for (int k = 0; k < In; k++)
            for (int j = 0; j < hv; j++)
            {
                double got = dw1T.Span[k * hv + j], diff = Math.Abs(got - want[k * hv + j]);
                max = Math.Max(max, diff);
                Assert.True(diff <= 1e-6 + 4e-6 * magnitude[k * hv + j],
                    $"H={hidden} dw1T[{k}, {j}]: kernel {got:R}, float64 {want[k * hv + j]:R}");
            }
        return max;
    }
}

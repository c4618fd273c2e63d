using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.Cpu.Simd;
using Xunit;
using Narrow = MnistNative.Backends.Cpu.Simd.VectorKernels<MnistNative.Backends.Cpu.Simd.Avx2Width,
    System.Runtime.Intrinsics.Vector256<float>>;
using Wide = MnistNative.Backends.Cpu.Simd.VectorKernels<MnistNative.Backends.Cpu.Simd.Avx512Width,
    System.Runtime.Intrinsics.Vector512<float>>;

namespace MnistNative.Tests;

/// <summary>
/// The kernels both SIMD paths share (<see cref="VectorKernels{TW, TVec}"/>) against their scalar references in
/// <see cref="Reference"/>, at each width this CPU runs, over every length 0..n and starts that are not aligned.
/// </summary>
public sealed unsafe class VectorKernelTests
{
    public static TheoryData<string> Widths => new() { "avx2", "avx512" };

    /// <summary>Skips a width this CPU or runtime lacks (DOTNET_EnableAVX2=0, DOTNET_EnableAVX512=0), except under
    /// CI=true, where that fails.</summary>
    internal static void RequireWidth(string width)
    {
        bool supported = width == "avx2" ? Avx2Width.IsSupported : Avx512Width.IsSupported;
        if (Environment.GetEnvironmentVariable("CI") == "true")
            Assert.True(supported, $"{width} is not available on this CPU or runtime");
        Skip.IfNot(supported, $"{width} is not available on this CPU or runtime");
    }

    private static int Compact(string width, float* a, int len, int* idx, float* val) => width == "avx512"
        ? VectorKernels<Avx512Width, Vector512<float>>.CompactNonzero(a, len, idx, val)
        : VectorKernels<Avx2Width, Vector256<float>>.CompactNonzero(a, len, idx, val);

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void CompactNonzeroMatchesItsReferenceOverLengthsAndOffsets(string width)
    {
        VectorKernelTests.RequireWidth(width);
        var rng = new Random(3);
        const int max = 100;
        float* buffer = (float*)NativeMemory.AlignedAlloc((max + 16) * sizeof(float), 64);
        int* idx = (int*)NativeMemory.Alloc(max * sizeof(int));
        float* val = (float*)NativeMemory.Alloc(max * sizeof(float));
        try
        {
            foreach (double zeros in new[] { 0.0, 0.5, 1.0 })
                for (int len = 0; len <= max; len++)
                    foreach (int start in new[] { 0, 1, 3, 7 })
                    {
                        float* a = buffer + start;
                        for (int k = 0; k < len; k++) a[k] = rng.NextDouble() < zeros ? 0f : rng.NextSingle() + 0.1f;
                        if (len > 2) a[len - 1] = -0f; // negative zero is a zero too
                        var wantIdx = new int[len];
                        var wantVal = new float[len];
                        int want = Reference.CompactNonzero(new ReadOnlySpan<float>(a, len), wantIdx, wantVal);
                        int got = Compact(width, a, len, idx, val);
                        Assert.True(want == got, $"len {len} start {start}: {got} entries, reference {want}");
                        Assert.Equal(wantIdx[..want], new ReadOnlySpan<int>(idx, got).ToArray());
                        Assert.Equal(wantVal[..want], new ReadOnlySpan<float>(val, got).ToArray());
                    }
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
            NativeMemory.Free(idx);
            NativeMemory.Free(val);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void ArgMaxIsTheFirstLargest(string width)
    {
        VectorKernelTests.RequireWidth(width);
        var rng = new Random(4);
        for (int len = 0; len <= 40; len++)
        {
            float[] v = Enumerable.Range(0, len).Select(_ => (float)rng.Next(5)).ToArray(); // many ties
            fixed (float* p = v)
            {
                int got = width == "avx512" ? VectorKernels<Avx512Width, Vector512<float>>.ArgMax(p, len)
                    : VectorKernels<Avx2Width, Vector256<float>>.ArgMax(p, len);
                Assert.Equal(Reference.ArgMax<float>(v), got);
            }
        }
    }

    /// <summary>Both accumulate kernels, bitwise against the reference (one fused multiply-add per term, in entry
    /// order), over entry counts 0..n, row strides and unaligned starts of every operand.</summary>
    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void SparseAccumulateMatchesItsReferenceBitwise(string width)
    {
        VectorKernelTests.RequireWidth(width);
        int w = width == "avx512" ? 16 : 8;
        var rng = new Random(5);
        foreach (int vectors in new[] { 1, 4 })
            foreach (int offset in new[] { 0, 1, 5 })
                for (int n = 0; n <= 37; n++)
                {
                    int cols = vectors * w, stride = cols + offset, rows = 23;
                    float[] m = Enumerable.Range(0, rows * stride + offset).Select(_ => rng.NextSingle() - 0.5f)
                        .ToArray();
                    float[] init = Enumerable.Range(0, cols + offset).Select(_ => rng.NextSingle()).ToArray();
                    int[] at = Enumerable.Range(0, n + offset).Select(_ => rng.Next(rows)).ToArray();
                    float[] x = Enumerable.Range(0, n + offset).Select(_ => rng.NextSingle() * 255).ToArray();
                    var want = new float[cols];
                    Reference.SparseAccumulate(want, init.AsSpan(offset), m.AsSpan(offset), stride,
                        at.AsSpan(offset, n), x.AsSpan(offset, n), cols);
                    var got = new float[cols + offset];
                    fixed (float* pm = m, pi = init, px = x, pg = got)
                    fixed (int* pa = at)
                    {
                        float* dst = pg + offset, i0 = pi + offset, m0 = pm + offset, x0 = px + offset;
                        int* r0 = pa + offset;
                        if (width == "avx512")
                        {
                            if (vectors == 4) Wide.SparseAccumulate4(dst, i0, m0, stride, r0, x0, n);
                            else Wide.SparseAccumulate1(dst, i0, m0, stride, r0, x0, n);
                        }
                        else if (vectors == 4) Narrow.SparseAccumulate4(dst, i0, m0, stride, r0, x0, n);
                        else Narrow.SparseAccumulate1(dst, i0, m0, stride, r0, x0, n);
                    }
                    Assert.Equal(want, got[offset..]);
                }
    }
}

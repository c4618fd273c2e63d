using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MnistNative.Backends.Cpu.Reference;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>The widths the tests run, and how a test asks for one this CPU or runtime may lack.</summary>
public static class VectorWidths
{
    /// <summary>The SIMD training backends' widths, by backend name.</summary>
    public static TheoryData<string> BackendNames => new() { Width256.Name, Width512.Name };

    /// <summary>Skips a backend width this CPU or runtime lacks (DOTNET_EnableAVX2=0, DOTNET_EnableAVX512=0),
    /// except under CI=true, where that fails.</summary>
    public static void Require(string name) =>
        Require(name == Width512.Name ? Width512.IsSupported : Width256.IsSupported, name);

    internal static void Require(bool supported, string name)
    {
        if (Environment.GetEnvironmentVariable("CI") == "true")
            Assert.True(supported, $"{name} is not available on this CPU or runtime");
        Skip.IfNot(supported, $"{name} is not available on this CPU or runtime");
    }
}

public sealed class VectorKernelTests128(ITestOutputHelper output)
    : VectorKernelTests<Width128, Vector128<float>>(output);

public sealed class VectorKernelTests256(ITestOutputHelper output)
    : VectorKernelTests<Width256, Vector256<float>>(output);

public sealed class VectorKernelTests512(ITestOutputHelper output)
    : VectorKernelTests<Width512, Vector512<float>>(output);

/// <summary>
/// The shared kernels (<see cref="VectorKernels{TW, TVec}"/>) and the width's own operations against their scalar
/// references (<see cref="ScalarKernels"/>, MathF), once per width: every length from 0 up, inputs and outputs that
/// start off a vector boundary, -0 and NaN where the kernels promise something about them.
/// </summary>
public abstract unsafe class VectorKernelTests<TW, TVec>(ITestOutputHelper output)
    where TW : struct, IVectorWidth<TVec>
    where TVec : unmanaged
{
    private static void RequireWidth() => VectorWidths.Require(TW.IsSupported, TW.Name);

    // whether the width rounds a * b + c once, as the references' MathF.FusedMultiplyAdd (128 bits without FMA: twice)
    private static bool Fused => TW.Count > 4 || Fma.IsSupported;

    // 64-byte aligned native memory, freed with the test; `offset` elements in, so a start can sit off a boundary
    private sealed class Buffer : IDisposable
    {
        public readonly void* Base;
        public Buffer(int bytes) => Base = NativeMemory.AlignedAlloc((nuint)bytes + 256, 64);
        public float* Floats(int offset = 0) => (float*)Base + offset;
        public int* Ints(int offset = 0) => (int*)Base + offset;
        public byte* Bytes(int offset = 0) => (byte*)Base + offset;
        public void Dispose() => NativeMemory.AlignedFree(Base);
    }

    private static int Bits(float x) => BitConverter.SingleToInt32Bits(x);

    [SkippableFact]
    public void CompactNonzeroKeepsTheNonzeroEntriesInOrderAtEveryLengthAndStart()
    {
        RequireWidth();
        var rng = new Random(TW.Count);
        const int Max = 130;
        using Buffer input = new(Max * 4 + 64), idx = new(Max * 4 + 64), val = new(Max * 4 + 64),
            refIdx = new(Max * 4), refVal = new(Max * 4);
        int cases = 0;
        foreach (double zeros in new[] { 0.0, 0.5, 1.0 })
            for (int len = 0; len <= Max; len++)
                foreach (int start in new[] { 0, 1, 3, 7 })
                {
                    float* a = input.Floats(start);
                    for (int k = 0; k < len; k++)
                        a[k] = rng.NextDouble() < zeros ? (rng.Next(2) == 0 ? 0f : -0f) : rng.NextSingle() * 4 - 2;
                    if (len > 2) a[len - 1] = -0f; // negative zero is a zero too
                    int* outIdx = idx.Ints((start + 1) % 4);
                    float* outVal = val.Floats((start + 3) % 4);
                    // a canary past len: the whole-vector stores must stay within the len entries idx, val hold
                    outIdx[len] = -7;
                    outVal[len] = -7f;
                    int got = VectorKernels<TW, TVec>.CompactNonzero(a, len, outIdx, outVal);
                    int want = ScalarKernels.CompactNonzero(a, len, refIdx.Ints(), refVal.Floats());
                    Assert.True(want == got, $"len {len} start {start}: {got} entries, reference {want}");
                    for (int i = 0; i < got; i++)
                    {
                        Assert.Equal(refIdx.Ints()[i], outIdx[i]);
                        Assert.Equal(Bits(refVal.Floats()[i]), Bits(outVal[i]));
                    }
                    Assert.True(outIdx[len] == -7 && outVal[len] == -7f, $"len {len}: written past the end");
                    cases++;
                }
        output.WriteLine($"{TW.Name}: {cases} densities x lengths x starts equal to ScalarKernels.CompactNonzero");
    }

    [SkippableFact]
    public void CompactPixelsMatchesItsReferenceOnImagesOfEveryDensityAndLength()
    {
        RequireWidth();
        var rng = new Random(TW.Count + 1);
        using Buffer image = new(800), idx = new(800 * 4), val = new(800 * 4), refIdx = new(800 * 4),
            refVal = new(800 * 4);
        foreach (int len in Enumerable.Range(0, 70).Append(784))
            foreach (double density in new[] { 0.0, 0.01, 0.2, 0.5, 0.99, 1.0 })
                for (int start = 0; start < 4; start++)
                {
                    byte* pixels = image.Bytes(start);
                    for (int k = 0; k < len; k++)
                        pixels[k] = rng.NextDouble() < density ? (byte)rng.Next(1, 256) : (byte)0;
                    int* outIdx = idx.Ints(start);
                    float* outVal = val.Floats((start + 2) % 4);
                    int n = VectorKernels<TW, TVec>.CompactPixels(pixels, len, outIdx, outVal);
                    int expected = ScalarKernels.CompactPixels(pixels, len, refIdx.Ints(), refVal.Floats());
                    Assert.Equal(expected, n);
                    Assert.True(new ReadOnlySpan<int>(outIdx, n).SequenceEqual(new ReadOnlySpan<int>(refIdx.Ints(), n)),
                        $"len {len}, density {density}, start {start}: indices differ");
                    Assert.True(new ReadOnlySpan<float>(outVal, n).SequenceEqual(
                        new ReadOnlySpan<float>(refVal.Floats(), n)), $"len {len}, density {density}: values differ");
                }
    }

    /// <summary>The one- and four-vector accumulates, bitwise against the reference (one fused multiply-add per
    /// term, in entry order), over entry counts 0..n, row strides and unaligned starts of every operand.</summary>
    [SkippableFact]
    public void SparseAccumulate1And4MatchTheirReferenceBitwise()
    {
        RequireWidth();
        int w = TW.Count;
        var rng = new Random(5);
        double worst = 0;
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
                    var got = new float[cols + offset];
                    fixed (float* pm = m, pi = init, px = x, pg = got, pw = want)
                    fixed (int* pa = at)
                    {
                        float* dst = pg + offset, i0 = pi + offset, m0 = pm + offset, x0 = px + offset;
                        int* r0 = pa + offset;
                        ScalarKernels.SparseAccumulate(pw, i0, m0, stride, r0, x0, n, cols);
                        if (vectors == 4) VectorKernels<TW, TVec>.SparseAccumulate4(dst, i0, m0, stride, r0, x0, n);
                        else VectorKernels<TW, TVec>.SparseAccumulate1(dst, i0, m0, stride, r0, x0, n);
                    }
                    if (Fused) Assert.Equal(want, got[offset..]);
                    else
                        for (int c = 0; c < cols; c++)
                        {
                            // two roundings per term: a few units in the last place of the largest partial sum
                            double tolerance = (n + 2) * 128 * 6e-8 * (1 + n);
                            double diff = Math.Abs(want[c] - got[offset + c]);
                            worst = Math.Max(worst, diff / tolerance);
                            Assert.True(diff <= tolerance, $"n {n}, column {c}: {got[offset + c]} vs {want[c]}");
                        }
                }
        output.WriteLine(Fused ? $"{TW.Name}: bitwise equal" : $"{TW.Name} without FMA: worst {worst:P1} of tolerance");
    }

    /// <summary>The whole-row accumulate: its four-vector blocks bitwise the reference (where the width fuses), the
    /// columns left over (four partial sums) within rounding, for every row width, entry count and list start.
    /// </summary>
    [SkippableFact]
    public void SparseAccumulateMatchesItsReferenceForEveryEntryCountRowWidthAndListStart()
    {
        RequireWidth();
        var rng = new Random(TW.Count + 2);
        const int Rows = 50;
        double worst = 0;
        foreach (int width in new[] { 16, 32, 48, 64, 80, 128, 144, 384 })
        {
            using Buffer m = new(Rows * width * 4), init = new(width * 4), idx = new(64 * 4), val = new(64 * 4);
            using Buffer result = new(width * 4), expected = new(width * 4);
            for (int i = 0; i < Rows * width; i++) m.Floats()[i] = (float)(rng.NextDouble() * 2 - 1);
            for (int j = 0; j < width; j++) init.Floats()[j] = (float)(rng.NextDouble() * 2 - 1);
            int blockColumns = width / (4 * TW.Count) * 4 * TW.Count;
            for (int n = 0; n <= 40; n++)
            {
                int start = n % 4;
                int* rows = idx.Ints(start);
                float* x = val.Floats(3 - start);
                double magnitude = 1;
                for (int i = 0; i < n; i++)
                {
                    rows[i] = rng.Next(Rows);
                    x[i] = (float)(rng.NextDouble() * 2);
                    magnitude += x[i];
                }
                VectorKernels<TW, TVec>.SparseAccumulate(result.Floats(), init.Floats(), m.Floats(), width, rows, x, n,
                    width);
                ScalarKernels.SparseAccumulate(expected.Floats(), init.Floats(), m.Floats(), width, rows, x, n, width);
                // float32 sums of n + 1 terms of size <= magnitude, in another order: a few units in the last place
                double tolerance = (n + 2) * magnitude * 6e-8;
                for (int j = 0; j < width; j++)
                {
                    float got = result.Floats()[j], want = expected.Floats()[j];
                    if (j < blockColumns && Fused)
                        Assert.True(Bits(got) == Bits(want), $"width {width}, n {n}, block column {j}: {got}, {want}");
                    double diff = Math.Abs(got - want);
                    worst = Math.Max(worst, diff / tolerance);
                    Assert.True(diff <= tolerance, $"width {width}, n {n}, column {j}: {got} vs {want}");
                }
            }
        }
        output.WriteLine($"{TW.Name}: largest difference {worst:P1} of the tolerance");
    }

    [SkippableFact]
    public void ReluMatchesItsReferenceAtEveryLengthAndStart()
    {
        RequireWidth();
        var rng = new Random(TW.Count + 3);
        using Buffer a = new(400 * 4), b = new(400 * 4);
        for (int len = 0; len <= 150; len++)
            foreach (int start in new[] { 0, 1, 5 })
            {
                float* got = a.Floats(start), want = b.Floats(start);
                for (int i = 0; i < len; i++)
                    got[i] = want[i] = rng.Next(6) switch
                    {
                        0 => 0f,
                        1 => -0f,
                        2 => float.NaN, // maxps keeps the second operand: 0, and so does the reference
                        _ => (float)(rng.NextDouble() * 4 - 2),
                    };
                got[len] = want[len] = -3f; // past the end: left alone
                VectorKernels<TW, TVec>.Relu(got, len);
                ScalarKernels.Relu(want, len);
                for (int i = 0; i <= len; i++)
                    Assert.True(got[i] == want[i], $"length {len}, start {start}, lane {i}: {got[i]} vs {want[i]}");
            }
    }

    [SkippableFact]
    public void ArgMax10TakesTheFirstOfEqualMaximaAndIgnoresThePadding()
    {
        RequireWidth();
        var rng = new Random(TW.Count + 4);
        using Buffer z = new(32 * 4);
        int ties = 0;
        for (int trial = 0; trial < 4000; trial++)
        {
            float* logits = z.Floats(trial % 4);
            for (int j = 0; j < 10; j++)
                logits[j] = trial % 3 == 0 ? rng.Next(-3, 1) : (float)(rng.NextDouble() * 20 - 15);
            // padding lanes as a layer leaves them: 0, which beats negative logits unless it is ignored
            for (int j = 10; j < 16; j++) logits[j] = trial % 5 == 0 ? float.PositiveInfinity : 0f;
            int expected = ScalarKernels.ArgMax(logits, 10);
            int label = VectorKernels<TW, TVec>.ArgMax10(logits);
            Assert.True(expected == label, $"trial {trial}: {label}, {expected} expected "
                + $"({string.Join(", ", new ReadOnlySpan<float>(logits, 10).ToArray())})");
            for (int j = expected + 1; j < 10; j++) ties += logits[j] == logits[expected] ? 1 : 0;
        }
        Assert.True(ties > 100, $"only {ties} ties drawn");
    }

    /// <summary>The scalar argmax the kernels mirror is the training reference's (numpy's) argmax: the first
    /// largest, 0 for no values, over lengths 0..40 with many ties.</summary>
    [SkippableFact]
    public void ScalarArgMaxIsTheReferenceArgMax()
    {
        RequireWidth();
        var rng = new Random(4);
        for (int len = 0; len <= 40; len++)
        {
            float[] v = Enumerable.Range(0, len).Select(_ => (float)rng.Next(5)).ToArray(); // many ties
            fixed (float* p = v) Assert.Equal(Reference.ArgMax<float>(v), ScalarKernels.ArgMax(p, len));
        }
    }

    /// <summary>The width's own operations the kernels build on, lane by lane against scalar math: Exp within
    /// 2e-7 relative of MathF.Exp over the clamped range, the fixed-order sums against double sums, the lane masks,
    /// select, the byte widening and the max across lanes.</summary>
    [SkippableFact]
    public void WidthOperationsMatchScalarMath()
    {
        RequireWidth();
        int w = TW.Count;
        var rng = new Random(TW.Count + 5);
        using Buffer a = new(4 * w * 4), b = new(4 * w * 4), r = new(4 * w * 4), bytes = new(w), l = new(w * 4);
        double worstExp = 0, worstLog = 0;
        for (int trial = 0; trial < 500; trial++)
        {
            for (int i = 0; i < 4 * w; i++)
            {
                a.Floats()[i] = (float)(rng.NextDouble() * 175 - 87.3);
                b.Floats()[i] = rng.Next(3) == 0 ? a.Floats()[i] : (float)(rng.NextDouble() * 4 - 2);
            }
            for (int i = 0; i < w; i++) bytes.Bytes()[i] = (byte)rng.Next(256);
            TVec va = TW.Load(a.Floats()), vb = TW.Load(b.Floats());
            TW.Store(r.Floats(), TW.Exp(va));
            for (int i = 0; i < w; i++)
            {
                double want = Math.Exp(a.Floats()[i]), rel = Math.Abs(r.Floats()[i] - want) / want;
                worstExp = Math.Max(worstExp, rel);
                Assert.True(rel < 2e-7, $"exp({a.Floats()[i]}) = {r.Floats()[i]}, {want} expected");
            }
            // Log over positive normals, from just above the smallest to the largest magnitudes the softmax sums reach
            for (int i = 0; i < w; i++)
                l.Floats()[i] = trial % 2 == 0 ? (float)(1 + rng.NextDouble() * 20)
                    : MathF.Pow(2, (float)(rng.NextDouble() * 250 - 125));
            TW.Store(r.Floats(), TW.Log(TW.Load(l.Floats())));
            for (int i = 0; i < w; i++)
            {
                double want = Math.Log(l.Floats()[i]), err = Math.Abs(r.Floats()[i] - want);
                worstLog = Math.Max(worstLog, err / Math.Max(1, Math.Abs(want)));
                Assert.True(err <= 2.5e-7 * Math.Max(1, Math.Abs(want)),
                    $"log({l.Floats()[i]:R}) = {r.Floats()[i]:R}, {want:R} expected");
            }
            TW.Store(r.Floats(), TW.Select(TW.GreaterThan(va, vb), va, TW.Create(-1f)));
            for (int i = 0; i < w; i++)
                Assert.Equal(a.Floats()[i] > b.Floats()[i] ? a.Floats()[i] : -1f, r.Floats()[i]);
            TW.Store(r.Floats(), TW.Select(TW.Equal(va, vb), TW.Create(1f), TW.Zero));
            for (int i = 0; i < w; i++) Assert.Equal(a.Floats()[i] == b.Floats()[i] ? 1f : 0f, r.Floats()[i]);
            TW.Store(r.Floats(), TW.LoadBytes(bytes.Bytes()));
            for (int i = 0; i < w; i++) Assert.Equal(bytes.Bytes()[i], r.Floats()[i]);
            float max = TW.MaxAcross(vb);
            Assert.Equal(new ReadOnlySpan<float>(b.Floats(), w).ToArray().Max(), max);
            uint mask = TW.EqualsMask(vb, max);
            for (int i = 0; i < w; i++) Assert.Equal(b.Floats()[i] == max, (mask >> i & 1) != 0);

            Vector128<float> sums = TW.Sum4(TW.Load(b.Floats()), TW.Load(b.Floats() + w), TW.Load(b.Floats() + 2 * w),
                TW.Load(b.Floats() + 3 * w));
            for (int v = 0; v < 4; v++)
            {
                double want = 0, size = 0;
                for (int i = 0; i < w; i++)
                {
                    want += b.Floats()[v * w + i];
                    size += Math.Abs(b.Floats()[v * w + i]);
                }
                // a tree of float adds: at most log2(w) + 1 roundings of partial sums no larger than size
                double tolerance = size * 6e-8 * (Math.Log2(w) + 2);
                Assert.True(Math.Abs(sums[v] - want) <= tolerance, $"Sum4 lane {v}: {sums[v]} vs {want}");
                float one = TW.Sum(TW.Load(b.Floats() + v * w));
                Assert.True(Math.Abs(one - want) <= tolerance, $"Sum of vector {v}: {one} vs {want}");
            }
        }
        output.WriteLine($"{TW.Name}: Exp within {worstExp:E2} relative of exp, Log within {worstLog:E2}");
    }
}

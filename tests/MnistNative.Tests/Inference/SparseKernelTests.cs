using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MnistNative.Inference;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

// The kernels written once over a SIMD width (SparseKernels) against their scalar references, at every width this
// CPU runs: every length from 0 up, inputs and index/value lists that start off a vector boundary, and the ties
// and padding lanes of the 10-way argmax.
public sealed unsafe class SparseKernelTests(ITestOutputHelper output)
{
    public static TheoryData<int> Widths() => new() { 128, 256, 512 };

    private static void SkipUnlessSupported(int width) => Skip.IfNot(width switch
    {
        512 => Width512.IsSupported,
        256 => Width256.IsSupported,
        _ => Width128.IsSupported,
    }, $"this CPU has no {width}-bit tier");

    // 64-byte aligned native memory, freed with the test; `offset` floats in, so that a start can sit off a boundary
    private sealed class Buffer : IDisposable
    {
        public readonly void* Base;
        public Buffer(int bytes) => Base = NativeMemory.AlignedAlloc((nuint)bytes + 256, 64);
        public float* Floats(int offset = 0) => (float*)Base + offset;
        public int* Ints(int offset = 0) => (int*)Base + offset;
        public byte* Bytes(int offset = 0) => (byte*)Base + offset;
        public void Dispose() => NativeMemory.AlignedFree(Base);
    }

    private static float RandomValue(Random rng) => rng.Next(4) switch
    {
        0 => 0f,
        1 => -0f,
        _ => (float)(rng.NextDouble() * 4 - 2),
    };

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void CompactFloatsKeepsTheNonzeroEntriesInOrderAtEveryLengthAndStart(int width)
    {
        SkipUnlessSupported(width);
        var rng = new Random(width);
        using Buffer input = new(200 * 4), idx = new(300 * 4), val = new(300 * 4), refIdx = new(300 * 4),
            refVal = new(300 * 4);
        int checkedCases = 0;
        for (int len = 0; len <= 130; len++)
            for (int start = 0; start < 4; start++)
            {
                float* a = input.Floats(start);
                for (int i = 0; i < len; i++) a[i] = RandomValue(rng);
                int* outIdx = idx.Ints((start + 1) % 4);
                float* outVal = val.Floats((start + 3) % 4);
                int n = width switch
                {
                    512 => SparseKernels.CompactFloats<Width512, Vector512<float>>(a, len, outIdx, outVal),
                    256 => SparseKernels.CompactFloats<Width256, Vector256<float>>(a, len, outIdx, outVal),
                    _ => SparseKernels.CompactFloats<Width128, Vector128<float>>(a, len, outIdx, outVal),
                };
                int expected = SparseKernels.CompactFloatsScalar(a, len, refIdx.Ints(), refVal.Floats());
                Assert.True(expected == n, $"length {len}, start {start}: {n} kept, {expected} expected");
                for (int i = 0; i < n; i++)
                {
                    Assert.Equal(refIdx.Ints()[i], outIdx[i]);
                    Assert.Equal(BitConverter.SingleToInt32Bits(refVal.Floats()[i]),
                        BitConverter.SingleToInt32Bits(outVal[i]));
                }
                checkedCases++;
            }
        output.WriteLine($"{width}-bit: {checkedCases} lengths x starts equal to CompactFloatsScalar");
    }

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void CompactPixelsMatchesItsReferenceOnImagesOfEveryDensity(int width)
    {
        SkipUnlessSupported(width);
        var rng = new Random(width + 1);
        using Buffer image = new(800), idx = new(800 * 4), val = new(800 * 4), refIdx = new(800 * 4),
            refVal = new(800 * 4);
        foreach (double density in new[] { 0.0, 0.01, 0.2, 0.5, 0.99, 1.0 })
            for (int start = 0; start < 4; start++)
            {
                byte* pixels = image.Bytes(start);
                for (int k = 0; k < 784; k++) pixels[k] = rng.NextDouble() < density ? (byte)rng.Next(1, 256) : (byte)0;
                int* outIdx = idx.Ints(start);
                float* outVal = val.Floats((start + 2) % 4);
                int n = width switch
                {
                    512 => SparseKernels.CompactPixels<Width512, Vector512<float>>(pixels, outIdx, outVal),
                    256 => SparseKernels.CompactPixels<Width256, Vector256<float>>(pixels, outIdx, outVal),
                    _ => SparseKernels.CompactPixels<Width128, Vector128<float>>(pixels, outIdx, outVal),
                };
                int expected = SparseKernels.CompactPixelsScalar(pixels, refIdx.Ints(), refVal.Floats());
                Assert.Equal(expected, n);
                Assert.True(new ReadOnlySpan<int>(outIdx, n).SequenceEqual(new ReadOnlySpan<int>(refIdx.Ints(), n)));
                Assert.True(new ReadOnlySpan<float>(outVal, n).SequenceEqual(new ReadOnlySpan<float>(refVal.Floats(),
                    n)));
            }
    }

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void AccumulateMatchesItsReferenceForEveryInputCountWidthAndListStart(int width)
    {
        SkipUnlessSupported(width);
        var rng = new Random(width + 2);
        const int Rows = 50;
        double worst = 0;
        foreach (int outPad in new[] { 16, 32, 48, 64, 80, 128, 144, 384 })
        {
            using Buffer wt = new(Rows * outPad * 4), bias = new(outPad * 4), idx = new(64 * 4), val = new(64 * 4);
            using Buffer result = new(outPad * 4), expected = new(outPad * 4);
            for (int i = 0; i < Rows * outPad; i++) wt.Floats()[i] = (float)(rng.NextDouble() * 2 - 1);
            for (int j = 0; j < outPad; j++) bias.Floats()[j] = (float)(rng.NextDouble() * 2 - 1);
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
                switch (width)
                {
                    case 512:
                        SparseKernels.Accumulate<Width512, Vector512<float>>(result.Floats(), wt.Floats(),
                            bias.Floats(), outPad, rows, x, n);
                        break;
                    case 256:
                        SparseKernels.Accumulate<Width256, Vector256<float>>(result.Floats(), wt.Floats(),
                            bias.Floats(), outPad, rows, x, n);
                        break;
                    default:
                        SparseKernels.Accumulate<Width128, Vector128<float>>(result.Floats(), wt.Floats(),
                            bias.Floats(), outPad, rows, x, n);
                        break;
                }
                SparseKernels.AccumulateScalar(expected.Floats(), wt.Floats(), bias.Floats(), outPad, rows, x, n);
                // float32 sums of n + 1 terms of size <= magnitude, in another order: a few units in the last place
                double tolerance = (n + 2) * magnitude * 6e-8;
                for (int j = 0; j < outPad; j++)
                {
                    double diff = Math.Abs(result.Floats()[j] - expected.Floats()[j]);
                    worst = Math.Max(worst, diff / tolerance);
                    Assert.True(diff <= tolerance,
                        $"outPad {outPad}, n {n}, column {j}: {result.Floats()[j]} vs {expected.Floats()[j]}");
                }
            }
        }
        output.WriteLine($"{width}-bit: largest difference {worst:P1} of the tolerance");
    }

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void ReluMatchesItsReference(int width)
    {
        SkipUnlessSupported(width);
        var rng = new Random(width + 3);
        using Buffer a = new(400 * 4), b = new(400 * 4);
        for (int len = 16; len <= 384; len += 16)
        {
            for (int i = 0; i < len; i++) a.Floats()[i] = b.Floats()[i] = RandomValue(rng);
            switch (width)
            {
                case 512: SparseKernels.Relu<Width512, Vector512<float>>(a.Floats(), len); break;
                case 256: SparseKernels.Relu<Width256, Vector256<float>>(a.Floats(), len); break;
                default: SparseKernels.Relu<Width128, Vector128<float>>(a.Floats(), len); break;
            }
            SparseKernels.ReluScalar(b.Floats(), len);
            for (int i = 0; i < len; i++) Assert.True(a.Floats()[i] == b.Floats()[i], $"length {len}, lane {i}");
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void ArgMax10TakesTheFirstOfEqualMaximaAndIgnoresThePadding(int width)
    {
        SkipUnlessSupported(width);
        var rng = new Random(width + 4);
        using Buffer z = new(32 * 4);
        int ties = 0;
        for (int trial = 0; trial < 4000; trial++)
        {
            float* logits = z.Floats(trial % 4);
            for (int j = 0; j < 10; j++) logits[j] = trial % 3 == 0 ? rng.Next(-3,
                1) : (float)(rng.NextDouble() * 20 - 15);
            // padding lanes as a layer leaves them: 0, which beats negative logits unless it is ignored
            for (int j = 10; j < 16; j++) logits[j] = trial % 5 == 0 ? float.PositiveInfinity : 0f;
            int expected = SparseKernels.ArgMaxScalar(logits, 10);
            int label = width switch
            {
                512 => SparseKernels.ArgMax10<Width512, Vector512<float>>(logits),
                256 => SparseKernels.ArgMax10<Width256, Vector256<float>>(logits),
                _ => SparseKernels.ArgMax10<Width128, Vector128<float>>(logits),
            };
            Assert.True(expected == label, $"trial {trial}: {label}, {expected} expected "
                + $"({string.Join(", ", new ReadOnlySpan<float>(logits, 10).ToArray())})");
            for (int j = expected + 1; j < 10; j++) ties += logits[j] == logits[expected] ? 1 : 0;
        }
        Assert.True(ties > 100, $"only {ties} ties drawn");
    }
}

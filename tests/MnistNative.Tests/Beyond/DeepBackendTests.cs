using MnistNative.Backends.Cpu.Simd;
using MnistNative.Backends.Cpu.Deep;
using MnistNative.Core;
using MnistNative.Data;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Beyond;

/// <summary>
/// The deep reference by finite differences; the deep SIMD backend against the reference (odd widths,
/// batches that are not multiples of the vector width, every optimizer); determinism, resume and allocation.
/// </summary>
public sealed class DeepBackendTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Widths() =>
        new[] { "avx2", "avx512" }.Where(w => w == "avx2" ? Avx2Width.IsSupported : Avx512Width.IsSupported).Select(w => new object[] { w });

    [Fact]
    public void ReferenceGradientsMatchFiniteDifferencesTwoHiddenLayers()
    {
        int[] sizes = [784, 6, 5, 10];
        using var backend = new DeepReferenceBackend<double>(sizes, OptimizerSettings.Gd);
        backend.Upload(TinyData.Images(4));
        MlpParameters w = MlpParameters.Initialize(sizes, 7);
        int[] batch = [0, 1, 2, 3];
        backend.SetWeights(w);
        var g = new MlpParameters(sizes);
        backend.ComputeGradients(batch, g);
        var scratch = new MlpParameters(sizes);
        double Loss(MlpParameters p) { backend.SetWeights(p); return backend.ComputeGradients(batch, scratch).Loss; }
        double worst = 0;
        var rng = new Random(1);
        for (int l = 0; l < sizes.Length - 1; l++)
        {
            // first-layer weights of pixels that are zero in every image have zero gradient: probe the ones that are not
            var candidates = Enumerable.Range(0, w.W[l].Length).Where(i => Math.Abs(g.W[l][i]) > 1e-6).ToArray();
            for (int probe = 0; probe < 8; probe++)
            {
                foreach (bool bias in new[] { false, true })
                {
                    double[] arr = bias ? w.B[l] : w.W[l];
                    int i = bias ? rng.Next(arr.Length) : candidates[rng.Next(candidates.Length)];
                    double saved = arr[i], h = 1e-6;
                    arr[i] = saved + h; double up = Loss(w);
                    arr[i] = saved - h; double down = Loss(w);
                    arr[i] = saved;
                    double numeric = (up - down) / (2 * h), analytic = (bias ? g.B[l] : g.W[l])[i];
                    double err = Math.Abs(numeric - analytic) / Math.Max(1e-4, Math.Abs(numeric) + Math.Abs(analytic));
                    worst = Math.Max(worst, err);
                }
            }
        }
        output.WriteLine($"worst relative error {worst:E2}");
        Assert.True(worst < 1e-5, $"worst relative error {worst:E2}");
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void SimdGradientsMatchTheReference(string width)
    {
        foreach (int[] sizes in new[] { new[] { 784, 33, 10 }, [784, 7, 17, 10], [784, 1, 10], [784, 100, 10] })
            foreach (int n in new[] { 1, 13, 37 })
            {
                LabeledImages data = TinyData.Images(64);
                MlpParameters w = MlpParameters.Initialize(sizes, 11);
                int[] batch = Enumerable.Range(0, n).Select(i => (i * 7) % 64).ToArray();
                using var reference = new DeepReferenceBackend<double>(sizes, OptimizerSettings.Gd);
                using IMiniBatchBackend simd = DeepSimd.Create(sizes, OptimizerSettings.Gd, 64, 2, width);
                reference.Upload(data); simd.Upload(data);
                reference.SetWeights(w); simd.SetWeights(w);
                var gr = new MlpParameters(sizes);
                var gs = new MlpParameters(sizes);
                StepMetrics mr = reference.ComputeGradients(batch, gr);
                StepMetrics ms = simd.ComputeGradients(batch, gs);
                Assert.Equal(mr.Correct, ms.Correct);
                Assert.Equal(mr.Loss, ms.Loss, 4);
                double diff = MaxDiff(gr, gs, 1e-6, 1e-3);
                output.WriteLine($"{width} {string.Join('-', sizes)} batch {n}: max scaled gradient difference {diff:E2}");
                Assert.True(diff <= 1, $"{string.Join('-', sizes)} batch {n}: {diff}");
            }
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void SimdStepsMatchTheReferenceForEveryOptimizer(string width)
    {
        int[] sizes = [784, 21, 9, 10];
        LabeledImages data = TinyData.Images(100);
        foreach (OptimizerKind kind in Enum.GetValues<OptimizerKind>())
        {
            var o = new OptimizerSettings(kind, WeightDecay: 1e-3);
            double lr = kind == OptimizerKind.Adam ? 1e-3 : 0.05;
            using var reference = new DeepReferenceBackend<double>(sizes, o);
            using IMiniBatchBackend simd = DeepSimd.Create(sizes, o, 32, 2, width);
            reference.Upload(data); simd.Upload(data);
            MlpParameters w = MlpParameters.Initialize(sizes, 5);
            reference.SetWeights(w); simd.SetWeights(w);
            for (int step = 0; step < 6; step++)
            {
                int[] batch = Enumerable.Range(0, 29).Select(i => (i * 13 + step * 29) % 100).ToArray();
                reference.StepBatch(batch, lr, false);
                simd.StepBatch(batch, lr, false);
            }
            double diff = MaxDiff(reference.GetWeights(), simd.GetWeights(), 1e-5, 1e-3);
            output.WriteLine($"{width} {kind}: max scaled weight difference after 6 steps {diff:E2}");
            Assert.True(diff <= 1, $"{kind}: {diff}");
        }
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void SimdIsBitwiseTheSameOnOneAndTwoThreadsAndAllocatesNothingPerStep(string width)
    {
        int[] sizes = [784, 64, 32, 10];
        LabeledImages data = TinyData.Images(256);
        var o = new OptimizerSettings(OptimizerKind.Adam);
        MlpParameters w = MlpParameters.Initialize(sizes, 2);
        MlpParameters Train(int threads)
        {
            using IMiniBatchBackend b = DeepSimd.Create(sizes, o, 50, threads, width);
            b.Upload(data);
            b.SetWeights(w);
            int[] batch = Enumerable.Range(0, 50).ToArray();
            b.StepBatch(batch, 1e-3, true);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 5; i++) b.StepBatch(batch.AsSpan(i, 45), 1e-3, true);
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
            return b.GetWeights();
        }
        Assert.Equal(0, MaxDiff(Train(1), Train(2), 0, 0, exact: true));
    }

    /// <summary>Max over all values of |a - b| / (abs + rel * |a|); with exact, the count of values that differ at all.</summary>
    internal static double MaxDiff(MlpParameters a, MlpParameters b, double abs, double rel, bool exact = false)
    {
        double worst = 0;
        for (int l = 0; l < a.LayerCount; l++)
            foreach (var (x, y) in a.W[l].Zip(b.W[l]).Concat(a.B[l].Zip(b.B[l])))
                worst = exact ? worst + (x.Equals(y) ? 0 : 1) : Math.Max(worst, Math.Abs(x - y) / (abs + rel * Math.Abs(x)));
        return worst;
    }
}

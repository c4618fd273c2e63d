using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Tests.Training;
using MnistNative.Tests.Conformance;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>
/// The SIMD backend's per-layer path on real digits beyond the conformance suite (hidden widths 1 and 100, a
/// 7-17 stack), determinism across thread counts, zero allocation per step, and the two paths of one backend
/// sharing one model.
/// </summary>
public sealed class SimdLayerPathTests(ITestOutputHelper output)
{
    public static TheoryData<string> Widths => VectorWidths.BackendNames;

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void GradientsMatchTheReferenceOnRealDigits(string width)
    {
        VectorWidths.Require(width);
        foreach (int[] sizes in new[] { new[] { 784, 33, 10 }, [784, 7, 17, 10], [784, 1, 10], [784, 100, 10] })
            foreach (int n in new[] { 1, 13, 37 })
            {
                var data = TinyData.Images(64);
                MlpParameters w = MlpParameters.Initialize(sizes, 11);
                int[] batch = Enumerable.Range(0, n).Select(i => (i * 7) % 64).ToArray();
                using var reference = new ReferenceBackend<double>(sizes, OptimizerSettings.Gd);
                using ITrainingBackend simd = SimdBackend.Create(width, sizes, OptimizerSettings.Gd, 64, 2,
                    KernelMode.Auto);
                reference.Upload(data); simd.Upload(data);
                reference.SetWeights(w); simd.SetWeights(w);
                var gr = new MlpParameters(sizes);
                var gs = new MlpParameters(sizes);
                StepMetrics mr = reference.ComputeGradients(TrainingBatch.Of(batch), gr);
                StepMetrics ms = simd.ComputeGradients(TrainingBatch.Of(batch), gs);
                Assert.Equal(mr.Correct, ms.Correct);
                Assert.Equal(mr.Loss, ms.Loss, 4);
                double diff = TrainingBackendConformance.MaxDiff(gr, gs, 1e-6, 1e-3);
                output.WriteLine(
                    $"{width} {string.Join('-', sizes)} batch {n}: max scaled gradient difference {diff:E2}");
                Assert.True(diff <= 1, $"{string.Join('-', sizes)} batch {n}: {diff}");
            }
    }

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void ItsKernelChoiceSaysWhenKernelDenseDoesNotApply(string width)
    {
        // the per-layer path has only its sparse inputs: a forced dense kernel is reported as not applying
        VectorWidths.Require(width);
        int[] sizes = [784, 16, 12, 10];
        var data = TinyData.Images(32);
        foreach (KernelMode mode in new[] { KernelMode.Dense, KernelMode.Auto, KernelMode.Sparse })
        {
            using ITrainingBackend b = SimdBackend.Create(width, sizes, OptimizerSettings.Gd, 32, 1, mode);
            b.Upload(data);
            KernelChoice choice = b.KernelChoice!;
            Assert.Equal(KernelMode.Sparse, choice.Kernel);
            Assert.StartsWith("per-layer path", choice.Reason);
            Assert.Equal(mode == KernelMode.Dense, choice.Reason.Contains("--kernel dense"));
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void OneAndTwoThreadsAreBitwiseTheSameAndAStepAllocatesNothing(string width)
    {
        VectorWidths.Require(width);
        int[] sizes = [784, 64, 32, 10];
        var data = TinyData.Images(256);
        var o = new OptimizerSettings(OptimizerKind.Adam);
        MlpParameters w = MlpParameters.Initialize(sizes, 2);
        MlpParameters Train(int threads)
        {
            using ITrainingBackend b = SimdBackend.Create(width, sizes, o, 50, threads, KernelMode.Auto);
            b.Upload(data);
            b.SetWeights(w);
            int[] batch = Enumerable.Range(0, 50).ToArray();
            b.Step(TrainingBatch.Of(batch), 1e-3, true);
            Func<long> workers = SimdBackendTests.WorkerAllocatedBytes(b);
            long workersBefore = workers();
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 5; i++) b.Step(TrainingBatch.Of(batch.AsSpan(i, 45)), 1e-3, true);
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
            Assert.Equal(0, workers() - workersBefore);
            return b.GetWeights();
        }
        Assert.Equal(0, TrainingBackendConformance.MaxDiff(Train(1), Train(2), 0, 0, exact: true));
    }

    /// <summary>784-H-10 with whole-set gd runs the fused tile path (its reduce phase and one row per worker show in
    /// the profile); a sampled step runs the per-layer path (no reduce); and a whole-set step after sampled ones
    /// starts from the weights those left.</summary>
    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void WholeSetGdRunsTheFusedPathAndSampledStepsThePerLayerPathOnOneModel(string width)
    {
        VectorWidths.Require(width);
        int[] sizes = [784, 10, 10];
        var data = TinyData.Images(100);
        MlpParameters w = MlpParameters.Initialize(sizes, 4);
        using ITrainingBackend simd = SimdBackend.Create(width, sizes, OptimizerSettings.Gd, 100, 2, KernelMode.Auto);
        using var reference = new ReferenceBackend<double>(sizes, OptimizerSettings.Gd);
        simd.Upload(data); reference.Upload(data);
        simd.SetWeights(w); reference.SetWeights(w);
        IReadOnlyList<PhaseStat> Profile(TrainingBatch batch)
        {
            var profiler = new Profiler();
            simd.Profiler = profiler;
            simd.Step(batch, 0.5, measure: false);
            reference.Step(batch, 0.5, measure: false);
            simd.Profiler = null;
            return profiler.Summary();
        }
        IReadOnlyList<PhaseStat> fused = Profile(TrainingBatch.WholeSet);
        Assert.Contains(fused, p => p.Phase == Phases.Reduce);
        Assert.Equal(2, fused.Single(p => p.Phase == $"{Phases.Backward} layer 1").Calls); // one per worker
        IReadOnlyList<PhaseStat> layered = Profile(TrainingBatch.Of([3, 1, 4, 1, 5, 9, 2, 6]));
        Assert.DoesNotContain(layered, p => p.Phase == Phases.Reduce);
        Assert.Contains(layered, p => p.Phase == $"{Phases.Backward} layer 1");
        Profile(TrainingBatch.WholeSet);
        double diff = TrainingBackendConformance.MaxDiff(reference.GetWeights(), simd.GetWeights(), 2e-6, 1e-4);
        output.WriteLine($"{width}: max scaled weight difference after fused, per-layer, fused steps {diff:E2}");
        Assert.True(diff <= 1, $"{diff}");
    }

    /// <summary>Anything but plain gd, or another depth, keeps whole-set steps on the per-layer path.</summary>
    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void OnlyPlainGdOnOneHiddenLayerTakesTheFusedPath(string width)
    {
        VectorWidths.Require(width);
        bool Fused(int[] sizes, OptimizerSettings o)
        {
            using ITrainingBackend b = SimdBackend.Create(width, sizes, o, 10, 1, KernelMode.Auto);
            return b is SimdBackend<Width256, System.Runtime.Intrinsics.Vector256<float>> a2 ? a2.FusedStepsApply
                : ((SimdBackend<Width512, System.Runtime.Intrinsics.Vector512<float>>)b).FusedStepsApply;
        }
        Assert.True(Fused([784, 10, 10], OptimizerSettings.Gd));
        Assert.True(Fused([784, 128, 10], OptimizerSettings.Gd));
        Assert.False(Fused([784, 10, 10], new OptimizerSettings(WeightDecay: 1e-4)));
        Assert.False(Fused([784, 10, 10], new OptimizerSettings(OptimizerKind.Momentum)));
        Assert.False(Fused([784, 10, 10, 10], OptimizerSettings.Gd));
    }

    [Fact]
    public void AnUnknownWidthOrAMissingInstructionSetIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            SimdBackend.Create("avx1024", [784, 10, 10], OptimizerSettings.Gd, 10, 1, KernelMode.Auto));
        Assert.Contains("avx2 or avx512", e.Message);
        if (!Width512.IsSupported)
        {
            var missing = Assert.Throws<BackendUnavailableException>(() =>
                SimdBackend.Create("avx512", [784, 10, 10], OptimizerSettings.Gd, 10, 1, KernelMode.Auto));
            Assert.Contains("AVX-512F", missing.Message);
        }
    }

    // A backend keeps the training set in its own layouts; holding the caller's images as well would keep 47 MB
    // alive for a run on all of MNIST (fast98 grew from 176 to 227 MB of peak memory before this was fixed).
    [SkippableTheory]
    [MemberData(nameof(Widths))]
    public void TheBackendDoesNotKeepTheCallersImagesAlive(string width)
    {
        VectorWidths.Require(width);
        foreach (int[] sizes in new[] { new[] { 784, 16, 8, 10 }, [784, 16, 10] })
        {
            using ITrainingBackend simd = SimdBackend.Create(width, sizes, OptimizerSettings.Gd, 40, 2,
                KernelMode.Auto);
            WeakReference images = Upload(simd, sizes);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            Assert.False(images.IsAlive, $"{string.Join('-', sizes)}: the uploaded images are still referenced");
            // the per-layer path of the 784-H-10 backend is built from the fused path's own copy
            StepMetrics whole = simd.Step(TrainingBatch.WholeSet, 0.1, measure: true);
            StepMetrics sampled = simd.Step(TrainingBatch.Of([0, 5, 39]), 0.1, measure: true);
            Assert.Equal(40, whole.Count);
            Assert.Equal(3, sampled.Count);
            Assert.True(double.IsFinite(sampled.Loss));
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static WeakReference Upload(ITrainingBackend backend, int[] sizes)
    {
        LabeledImages data = TinyData.Images(40);
        backend.Upload(data);
        backend.SetWeights(MlpParameters.Initialize(sizes, 3));
        return new WeakReference(data.Pixels);
    }
}

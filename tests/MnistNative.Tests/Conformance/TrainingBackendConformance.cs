using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using Xunit;

namespace MnistNative.Tests.Conformance;

/// <summary>
/// The one conformance suite of <see cref="ITrainingBackend"/>, instantiated once per backend, width, thread count
/// and precision: gradients, steps, optimizer state and probabilities against <see cref="ReferenceBackend{T}"/> in
/// float64, over depths (784-10-10, an odd hidden width, two hidden layers), batch sizes (1, 7, 45: no multiple of
/// a tile or a vector, and the whole set of 100), every optimizer (gd, momentum, Adam with weight decay), whole-set
/// and sampled steps in one run, all-zero and fully dense images. A backend this machine cannot run
/// (<see cref="BackendUnavailableException"/>) is skipped, except under CI=true, where it fails.
/// </summary>
public abstract class TrainingBackendConformance
{
    /// <summary>a fresh backend for these sizes/optimizer/max batch</summary>
    protected abstract ITrainingBackend Create(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch);

    /// <summary>max abs difference allowed against the float64 reference's gradients and updated weights</summary>
    protected abstract double Tolerance { get; }

    /// <summary>Samples in every problem of the suite: the whole set.</summary>
    protected const int Samples = 100;

    public static TheoryData<string> Depths => new() { "784-10-10", "784-33-10", "784-64-32-10" };

    /// <summary>Batch sizes; 0 stands for the whole set.</summary>
    public static TheoryData<string, int> DepthsAndBatches
    {
        get
        {
            var data = new TheoryData<string, int>();
            foreach (string depth in new[] { "784-10-10", "784-33-10", "784-64-32-10" })
                foreach (int batch in new[] { 1, 7, 45, 0 })
                    data.Add(depth, batch);
            return data;
        }
    }

    public static TheoryData<string, OptimizerKind> DepthsAndOptimizers
    {
        get
        {
            var data = new TheoryData<string, OptimizerKind>();
            foreach (string depth in new[] { "784-10-10", "784-33-10", "784-64-32-10" })
                foreach (OptimizerKind kind in Enum.GetValues<OptimizerKind>())
                    data.Add(depth, kind);
            return data;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(DepthsAndBatches))]
    public void GradientsMatchTheReference(string depth, int batchSize)
    {
        int[] sizes = Parse(depth);
        var (data, weights) = RandomProblem(sizes, Samples, seed: 2);
        int[] indices = Batch(batchSize, offset: 3);
        using ITrainingBackend reference = Reference(sizes, OptimizerSettings.Gd, data, weights);
        using ITrainingBackend backend = Open(sizes, OptimizerSettings.Gd, data, weights);
        var want = new MlpParameters(sizes);
        var got = new MlpParameters(sizes);
        StepMetrics wantMetrics = reference.ComputeGradients(BatchOf(indices), want);
        StepMetrics gotMetrics = backend.ComputeGradients(BatchOf(indices), got);
        AssertMetrics(wantMetrics, gotMetrics);
        AssertParameters($"{depth} batch {Describe(batchSize)} gradient", want, got);
    }

    /// <summary>
    /// A run that switches between whole-set and sampled steps (so a backend with a fused whole-set path hands its
    /// weights across both ways), then Predict: weights, optimizer state and probabilities stay on the reference's.
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(DepthsAndOptimizers))]
    public void WholeSetAndSampledStepsMatchTheReference(string depth, OptimizerKind kind)
    {
        int[] sizes = Parse(depth);
        OptimizerSettings optimizer = Optimizer(kind);
        double lr = LearningRate(kind);
        var (data, weights) = RandomProblem(sizes, Samples, seed: 3);
        using ITrainingBackend reference = Reference(sizes, optimizer, data, weights);
        using ITrainingBackend backend = Open(sizes, optimizer, data, weights);
        int[][] schedule = [[], [], Batch(7, 1), Batch(45, 11), [], Batch(1, 5), []];
        for (int step = 0; step < schedule.Length; step++)
        {
            bool measure = step % 2 == 0;
            StepMetrics want = reference.Step(BatchOf(schedule[step]), lr, measure);
            StepMetrics got = backend.Step(BatchOf(schedule[step]), lr, measure);
            if (measure) AssertMetrics(want, got);
            else Assert.Equal(default, got);
            AssertParameters($"{depth} {kind} weights after step {step + 1}", reference.GetWeights(),
                backend.GetWeights());
        }
        OptimizerState wantState = reference.GetOptimizerState(), gotState = backend.GetOptimizerState();
        Assert.Equal(wantState.Steps, gotState.Steps);
        Assert.Equal(wantState.Moments.Length, gotState.Moments.Length);
        for (int k = 0; k < wantState.Moments.Length; k++)
            AssertParameters($"{depth} {kind} moment {k + 1}", wantState.Moments[k], gotState.Moments[k]);
        AssertProbabilities(reference, backend, data.Pixels);
    }

    /// <summary>Images a sparse kernel handles differently: all-zero images (no entries at all) and one fully dense
    /// image (784 entries), in the whole set and in a sampled batch.</summary>
    [SkippableTheory]
    [MemberData(nameof(Depths))]
    public void EmptyAndFullyDenseImagesMatchTheReference(string depth)
    {
        int[] sizes = Parse(depth);
        var (data, weights) = RandomProblem(sizes, Samples, seed: 6);
        byte[] pixels = data.Pixels.ToArray();
        Array.Clear(pixels, 0, 5 * 784);                                          // images 0..4: all zero
        for (int k = 0; k < 784; k++) pixels[6 * 784 + k] = (byte)(1 + k % 255); // image 6: no zero pixel
        Array.Clear(pixels, (Samples - 1) * 784, 784);                           // the last image: all zero
        data = new LabeledImages(pixels, data.Labels);
        using ITrainingBackend reference = Reference(sizes, OptimizerSettings.Gd, data, weights);
        using ITrainingBackend backend = Open(sizes, OptimizerSettings.Gd, data, weights);
        foreach (int[] indices in new[] { [], new[] { 0, 6, 99, 6, 3 } })
        {
            var want = new MlpParameters(sizes);
            var got = new MlpParameters(sizes);
            AssertMetrics(reference.ComputeGradients(BatchOf(indices), want),
                backend.ComputeGradients(BatchOf(indices), got));
            string over = indices.Length == 0 ? "the whole set" : "5 samples";
            AssertParameters($"{depth} gradient over {over}", want, got);
            reference.Step(BatchOf(indices), 0.5, measure: false);
            backend.Step(BatchOf(indices), 0.5, measure: false);
            AssertParameters($"{depth} updated weight", reference.GetWeights(), backend.GetWeights());
        }
        AssertProbabilities(reference, backend, pixels);
    }

    /// <summary>Weights and optimizer state taken out of one backend and put into a fresh one continue the run
    /// bitwise (a checkpoint's resume).</summary>
    [SkippableTheory]
    [InlineData(OptimizerKind.Gd)]
    [InlineData(OptimizerKind.Momentum)]
    [InlineData(OptimizerKind.Adam)]
    public void OptimizerStateRoundTripsThroughAFreshBackend(OptimizerKind kind)
    {
        int[] sizes = [784, 12, 10];
        OptimizerSettings optimizer = Optimizer(kind);
        double lr = LearningRate(kind);
        var (data, weights) = RandomProblem(sizes, Samples, seed: 8);
        using ITrainingBackend first = Open(sizes, optimizer, data, weights);
        first.Step(BatchOf(Batch(45, 2)), lr, measure: false);
        first.Step(TrainingBatch.WholeSet, lr, measure: false);
        using ITrainingBackend second = Open(sizes, optimizer, data, first.GetWeights());
        second.SetOptimizerState(first.GetOptimizerState());
        Assert.Equal(2, second.GetOptimizerState().Steps);
        foreach (ITrainingBackend b in new[] { first, second })
        {
            b.Step(BatchOf(Batch(7, 4)), lr, measure: false);
            b.Step(TrainingBatch.WholeSet, lr, measure: false);
        }
        Assert.Equal(0, MaxDiff(first.GetWeights(), second.GetWeights(), 0, 0, exact: true));
    }

    [SkippableFact]
    public void SetThenGetWeightsRoundTripsAtTheBackendsPrecision()
    {
        int[] sizes = [784, 33, 10];
        var (data, weights) = RandomProblem(sizes, 20, seed: 4);
        using ITrainingBackend backend = Open(sizes, OptimizerSettings.Gd, data, weights);
        MlpParameters got = backend.GetWeights();
        bool f32 = backend.Info.Precision == Precision.F32;
        for (int l = 0; l < weights.LayerCount; l++)
        {
            Assert.Equal(weights.W[l].Select(v => f32 ? (float)v : v), got.W[l]);
            Assert.Equal(weights.B[l].Select(v => f32 ? (float)v : v), got.B[l]);
        }
        Assert.Equal(sizes, backend.Sizes);
        Assert.True(backend.MaxBatch >= Samples);
    }

    /// <summary>Every phase a backend records carries one of the names in <see cref="Phases"/>, whole-set and
    /// sampled steps both record, and with the profiler detached nothing more is recorded.</summary>
    [SkippableTheory]
    [MemberData(nameof(Depths))]
    public void StepsRecordTheirPhasesUnderTheContractsNames(string depth)
    {
        int[] sizes = Parse(depth);
        var (data, weights) = RandomProblem(sizes, Samples, seed: 9);
        using ITrainingBackend backend = Open(sizes, OptimizerSettings.Gd, data, weights);
        string[] names = [Phases.Forward, Phases.SoftmaxLoss, Phases.Backward, Phases.Reduce, Phases.Update,
            Phases.Gather, Phases.TransferToDevice, Phases.TransferFromDevice];
        foreach (int[] indices in new[] { [], Batch(45, 0) })
        {
            var profiler = new Profiler();
            backend.Profiler = profiler;
            backend.Step(BatchOf(indices), 0.1, measure: true);
            backend.Synchronize();
            long recorded = profiler.Summary().Sum(p => p.Calls);
            backend.Profiler = null;
            backend.Step(BatchOf(indices), 0.1, measure: true);
            backend.Synchronize();
            IReadOnlyList<PhaseStat> phases = profiler.Summary();
            string which = indices.Length == 0 ? "whole set" : "sampled";
            Assert.True(recorded > 0, $"{depth} {which}: no phase recorded");
            Assert.Equal(recorded, phases.Sum(p => p.Calls));
            foreach (PhaseStat p in phases)
                Assert.True(p.Phase.StartsWith(Phases.DevicePrefix, StringComparison.Ordinal)
                    || names.Any(n => p.Phase == n || p.Phase.StartsWith(n + " ", StringComparison.Ordinal)),
                    $"{depth} {which}: phase '{p.Phase}' is not one of the contract's names");
            Assert.Contains(phases, p => p.Phase.StartsWith(Phases.Forward, StringComparison.Ordinal)
                || p.Phase.StartsWith(Phases.DevicePrefix, StringComparison.Ordinal));
        }
    }

    [SkippableFact]
    public void KernelChoiceIsReportedAfterUpload()
    {
        int[] sizes = [784, 10, 10];
        var (data, weights) = RandomProblem(sizes, Samples, seed: 10);
        using ITrainingBackend backend = Open(sizes, OptimizerSettings.Gd, data, weights);
        KernelChoice choice = Assert.IsType<KernelChoice>(backend.KernelChoice);
        Assert.InRange(choice.Density, 0.15, 0.25);
        Assert.False(string.IsNullOrWhiteSpace(choice.Reason));
    }

    private ITrainingBackend Open(int[] sizes, OptimizerSettings optimizer, LabeledImages data, MlpParameters weights)
    {
        ITrainingBackend backend;
        try
        {
            backend = Create(sizes, optimizer, Samples);
        }
        catch (BackendUnavailableException e) when (Environment.GetEnvironmentVariable("CI") != "true")
        {
            Skip.If(true, $"backend unavailable on this machine: {e.Message}");
            throw;
        }
        backend.Upload(data);
        backend.SetWeights(weights);
        return backend;
    }

    private static ReferenceBackend<double> Reference(int[] sizes, OptimizerSettings optimizer, LabeledImages data,
        MlpParameters weights)
    {
        var r = new ReferenceBackend<double>(sizes, optimizer);
        r.Upload(data);
        r.SetWeights(weights);
        return r;
    }

    private static int[] Parse(string depth) => depth.Split('-').Select(int.Parse).ToArray();

    private static OptimizerSettings Optimizer(OptimizerKind kind) => kind switch
    {
        OptimizerKind.Gd => OptimizerSettings.Gd,
        OptimizerKind.Momentum => new OptimizerSettings(OptimizerKind.Momentum),
        _ => new OptimizerSettings(OptimizerKind.Adam, WeightDecay: 1e-3),
    };

    private static double LearningRate(OptimizerKind kind) => kind switch
    {
        OptimizerKind.Gd => 0.5,
        OptimizerKind.Momentum => 0.05,
        _ => 1e-3,
    };

    /// <summary>n distinct-enough samples (0 for the whole set: no indices), with a repeat when n &gt; 13.</summary>
    private static int[] Batch(int n, int offset) =>
        n == 0 ? [] : Enumerable.Range(0, n).Select(i => (offset + i * 13) % Samples).ToArray();

    private static TrainingBatch BatchOf(int[] indices) =>
        indices.Length == 0 ? TrainingBatch.WholeSet : TrainingBatch.Of(indices);

    private static string Describe(int batch) => batch == 0 ? "whole set" : batch.ToString();

    /// <summary>MNIST-like: about 80% zero pixels, the rest uniform 1..255; labels uniform 0..9; the seed's
    /// initialisation for <paramref name="sizes"/>.</summary>
    public static (LabeledImages Data, MlpParameters Weights) RandomProblem(int[] sizes, int n, int seed)
    {
        var rng = new Random(seed);
        var pixels = new byte[n * 784];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = rng.NextDouble() < 0.8 ? (byte)0 : (byte)rng.Next(1, 256);
        var labels = new byte[n];
        for (int i = 0; i < n; i++) labels[i] = (byte)rng.Next(10);
        return (new LabeledImages(pixels, labels), MlpParameters.Initialize(sizes, (uint)seed));
    }

    /// <summary>Max over all values of |a - b| / (abs + rel * |a|); with exact, the count of values that differ at
    /// all.</summary>
    public static double MaxDiff(MlpParameters a, MlpParameters b, double abs, double rel, bool exact = false)
    {
        double worst = 0;
        for (int l = 0; l < a.LayerCount; l++)
            foreach (var (x, y) in a.W[l].Zip(b.W[l]).Concat(a.B[l].Zip(b.B[l])))
                worst = exact ? worst + (x.Equals(y) ? 0 : 1)
                    : Math.Max(worst, Math.Abs(x - y) / (abs + rel * Math.Abs(x)));
        return worst;
    }

    private void AssertMetrics(StepMetrics want, StepMetrics got)
    {
        Assert.Equal(want.Count, got.Count);
        // a float32 backend may flip a near tie of two logits
        Assert.InRange(got.Correct, want.Correct - 1, want.Correct + 1);
        Assert.True(Math.Abs(want.Loss - got.Loss) <= Tolerance * 10,
            $"mean loss {got.Loss:R}, reference {want.Loss:R} (tolerance {Tolerance * 10:E1})");
    }

    private void AssertProbabilities(ITrainingBackend reference, ITrainingBackend backend, byte[] pixels)
    {
        int n = pixels.Length / 784;
        var want = new double[n * 10];
        var got = new double[n * 10];
        reference.Predict(pixels, want);
        backend.Predict(pixels, got);
        AssertClose("probabilities", want, got);
    }

    private void AssertParameters(string what, MlpParameters want, MlpParameters got)
    {
        Assert.Equal(want.Sizes, got.Sizes);
        for (int l = 0; l < want.LayerCount; l++)
        {
            AssertClose($"{what} w{l + 1}", want.W[l], got.W[l]);
            AssertClose($"{what} b{l + 1}", want.B[l], got.B[l]);
        }
    }

    private void AssertClose(string what, double[] want, double[] got)
    {
        Assert.Equal(want.Length, got.Length);
        double maxDiff = 0;
        int worst = -1;
        for (int i = 0; i < want.Length; i++)
        {
            double diff = double.IsNaN(got[i]) ? double.PositiveInfinity : Math.Abs(got[i] - want[i]);
            if (diff > maxDiff) { maxDiff = diff; worst = i; }
        }
        if (maxDiff > Tolerance)
            Assert.Fail($"{what}[{worst}] = {got[worst]:R}, reference {want[worst]:R} " +
                $"(max |difference| {maxDiff:E2} over {want.Length} values, tolerance {Tolerance:E1})");
    }
}

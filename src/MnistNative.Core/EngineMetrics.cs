using System.Diagnostics.Metrics;

namespace MnistNative.Core;

/// <summary>
/// The engine's counters under the meter name "MnistNative", visible to `dotnet-counters monitor
/// --counters MnistNative -n mnistnative` and `dotnet-trace` without any flag. Adding to an instrument
/// nobody listens to costs a flag check and allocates nothing.
/// </summary>
public static class EngineMetrics
{
    public const string MeterName = "MnistNative";

    private static readonly Meter Meter = new(MeterName, "0.1.0");
    private static double _iterationsPerSecond, _gflops, _inferenceSamplesPerSecond;

    public static readonly Counter<long> Iterations = Meter.CreateCounter<long>(
        "mnistnative.training.iterations", "{iteration}", "Training steps completed");
    public static readonly Counter<long> SamplesTrained = Meter.CreateCounter<long>(
        "mnistnative.training.samples", "{sample}", "Samples passed forward and backward");
    public static readonly Counter<long> SamplesInferred = Meter.CreateCounter<long>(
        "mnistnative.inference.samples", "{sample}", "Samples classified");

    /// <summary>Phase durations of a profiled run (tag "phase": the names in <see cref="Phases"/>).</summary>
    public static readonly Histogram<double> PhaseDuration = Meter.CreateHistogram<double>(
        "mnistnative.training.phase.duration", "ms",
        "Time of one training phase, recorded while a Profiler is attached (train --profile / --trace)");

    static EngineMetrics()
    {
        Meter.CreateObservableGauge("mnistnative.training.iterations_per_second",
            () => Volatile.Read(ref _iterationsPerSecond), "{iteration}/s");
        Meter.CreateObservableGauge("mnistnative.training.gflops",
            () => Volatile.Read(ref _gflops), "GFLOP/s", "Arithmetic rate of the last training steps");
        Meter.CreateObservableGauge("mnistnative.inference.samples_per_second",
            () => Volatile.Read(ref _inferenceSamplesPerSecond), "{sample}/s");
    }

    public static void TrainingRate(double iterationsPerSecond, double gflops)
    {
        Volatile.Write(ref _iterationsPerSecond, iterationsPerSecond);
        Volatile.Write(ref _gflops, gflops);
    }

    public static void InferenceRate(double samplesPerSecond) =>
        Volatile.Write(ref _inferenceSamplesPerSecond, samplesPerSecond);
}

/// <summary>Floating-point operations of the passes (a multiply-add counts as two).</summary>
public static class FlopCount
{
    /// <summary>
    /// One full-batch step of 784-H-10 on n samples: forward x·w1ᵀ and a1·w2ᵀ, backward dz2ᵀ·a1, dz2·w2
    /// and dz1ᵀ·x, plus the update. The seed's step (n = 10,000, H = 10) is about 320 MFLOP, of which the
    /// two 10 x 784 x 10,000 products are 314.
    /// </summary>
    public static double TrainingStep(int n, int hidden) =>
        TrainingStep(n, [MlpParameters.InputSize, hidden, MlpParameters.Classes]);

    /// <summary>
    /// One training step of an MLP of any depth on n samples: every layer's forward product and weight gradient,
    /// the input gradient of every layer but the first, and the update. For [784, H, 10] it is
    /// <see cref="TrainingStep(int, int)"/>.
    /// </summary>
    public static double TrainingStep(int n, IReadOnlyList<int> sizes)
    {
        double flops = 0;
        for (int l = 0; l + 1 < sizes.Count; l++)
        {
            double product = 2.0 * n * sizes[l] * sizes[l + 1];
            flops += product * (l == 0 ? 2 : 3) + 2.0 * (sizes[l] * sizes[l + 1] + sizes[l + 1]);
        }
        return flops;
    }

    /// <summary>Forward-only inference of n images.</summary>
    public static double Inference(int n, int hidden) =>
        2.0 * n * hidden * MlpParameters.InputSize + 2.0 * n * MlpParameters.Classes * hidden;
}

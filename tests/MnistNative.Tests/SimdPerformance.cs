using System.Diagnostics;
using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>
/// A small Stopwatch harness for the SIMD backends (median ms/iteration after warm-up, GFLOP/s and % of the
/// measured FMA peak). Opt-in with MNISTNATIVE_PERF=1: the machine is shared, so it never runs by default.
/// MNISTNATIVE_PERF_FILTER restricts it to configurations whose label contains the text.
/// </summary>
[Collection(nameof(SerialCollection))]
public sealed class SimdPerformance(ITestOutputHelper output)
{
    [SkippableFact]
    [Trait("Category", "Perf")]
    public void MillisecondsPerIteration()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MNISTNATIVE_PERF") == "1", "set MNISTNATIVE_PERF=1 to measure");
        string filter = Environment.GetEnvironmentVariable("MNISTNATIVE_PERF_FILTER") ?? "";
        LabeledImages data = TestPaths.Train.Take(10_000);
        var peaks = new Dictionary<(int, int), double>();
        foreach (int hidden in new[] { 10, 128 })
            foreach (string name in new[] { "avx2", "avx512" })
                foreach (int threads in new[] { 1, 2 })
                    foreach (InputLayout layout in new[] { InputLayout.BytesPerTile, InputLayout.Float32 })
                    {
                        string label = $"{name} H={hidden} threads={threads} {layout}";
                        if (!label.Contains(filter, StringComparison.Ordinal)) continue;
                        int width = name == "avx512" ? 512 : 256;
                        if (!peaks.TryGetValue((width, threads), out double peak))
                            peaks[(width, threads)] = peak = FmaPeak.MeasureGflops(width, threads);
                        using ITrainingBackend b = name == "avx512"
                            ? new Avx512Backend(hidden, threads, layout)
                            : new Avx2Backend(hidden, threads, layout);
                        b.Upload(data);
                        b.SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
                        int iterations = hidden == 10 ? 40 : 8;
                        for (int i = 0; i < 5; i++) b.Step(0.1, false);
                        var times = new double[5];
                        for (int r = 0; r < times.Length; r++)
                        {
                            var sw = Stopwatch.StartNew();
                            for (int i = 0; i < iterations; i++) b.Step(0.1, false);
                            times[r] = sw.Elapsed.TotalMilliseconds / iterations;
                        }
                        Array.Sort(times);
                        double ms = times[times.Length / 2];
                        // forward x w1^T and backward dz1^T x: 2 FMAs (4 flops) per sample, hidden unit and pixel
                        double gflops = 4.0 * data.Count * hidden * 784 / (ms * 1e6);
                        output.WriteLine($"{label}: {ms:F3} ms/iteration (min {times[0]:F3}, max {times[^1]:F3}), {gflops:F1} GFLOP/s, {100 * gflops / peak:F0}% of {peak:F0} GFLOP/s peak");
                    }
    }
}

/// <summary>Tests that measure time or process-wide allocation run alone.</summary>
[CollectionDefinition(nameof(SerialCollection), DisableParallelization = true)]
public sealed class SerialCollection;

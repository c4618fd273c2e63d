using System.Diagnostics;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.OpenCl;

/// <summary>
/// ms/iteration on the seed workload (n = 10,000) for docs/opencl-backend.md. Runs only with
/// MNISTNATIVE_BENCH=1 (set POCL_AFFINITY=1 too): median of several timed runs after a warm-up.
/// </summary>
[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClBenchmark(ITestOutputHelper output)
{
    [SkippableTheory]
    [Trait("Category", "Benchmark")]
    [InlineData("cpu", 10, 50)]
    [InlineData("cpu", 128, 20)]
    [InlineData("gpu", 10, 3)]
    public void MillisecondsPerIteration(string variant, int hidden, int iterationsPerRun)
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MNISTNATIVE_BENCH") == "1", "set MNISTNATIVE_BENCH=1 to run benchmarks");
        OpenClTestDevice.RequireOpenCl();
        LabeledImages train = TestPaths.Train.Take(10_000);
        MlpParameters init = MlpParameters.Initialize([784, hidden, 10], 0);
        using var backend = new OpenClBackend(hidden, new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = variant, Profiling = true, KernelsDirectory = Environment.GetEnvironmentVariable("MNISTNATIVE_KERNELS") is { Length: > 0 } k ? k : null });
        backend.Upload(train);
        backend.SetWeights(init);
        for (int i = 0; i < Math.Max(5, iterationsPerRun / 2); i++) backend.Step(0.1, measure: false);
        backend.Finish();
        var runs = new List<double>();
        for (int r = 0; r < 7; r++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < iterationsPerRun; i++) backend.Step(0.1, measure: i == 0);
            backend.Finish();
            runs.Add(clock.Elapsed.TotalMilliseconds / iterationsPerRun);
        }
        runs.Sort();
        output.WriteLine($"opencl {variant} H={hidden} n=10000 on {backend.Device.Name}: median {runs[runs.Count / 2]:F3} ms/iteration (min {runs[0]:F3}, max {runs[^1]:F3}); {backend.Groups} groups, tile {backend.Tile}");
        foreach (KernelTiming t in backend.GetKernelProfile())
            output.WriteLine($"  {t.Name,-24} {t.Calls,5} calls {t.TotalMilliseconds / t.Calls,9:F3} ms/call");
    }

    [SkippableTheory]
    [Trait("Category", "Benchmark")]
    [InlineData(10)]
    [InlineData(128)]
    public void ScalarReferenceMillisecondsPerIteration(int hidden)
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MNISTNATIVE_BENCH") == "1", "set MNISTNATIVE_BENCH=1 to run benchmarks");
        using var backend = new ReferenceBackend<float>(hidden);
        backend.Upload(TestPaths.Train.Take(10_000));
        backend.SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
        backend.Step(0.1, measure: false);
        var runs = new List<double>();
        for (int r = 0; r < 3; r++)
        {
            var clock = Stopwatch.StartNew();
            backend.Step(0.1, measure: true);
            runs.Add(clock.Elapsed.TotalMilliseconds);
        }
        runs.Sort();
        output.WriteLine($"scalar f32 H={hidden} n=10000: median {runs[1]:F1} ms/iteration");
    }
}

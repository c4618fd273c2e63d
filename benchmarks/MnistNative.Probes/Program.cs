using System.Diagnostics;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Data;

// Timing probes for development, moved out of tests/ (they time, they do not check). Each mode is described in
// benchmarks/README.md. Builds are compared with the CLI's `bench`, interleaved (docs/journal/one-engine-cpu.md).
const string Usage = "usage: MnistNative.Probes bench <mnist dir> <avx2|avx512> <hidden> <threads> [iterations] | "
    + "paths <mnist dir> <avx2|avx512> <hidden> <threads> [rounds] | kernels <avx2|avx512> <hidden> | "
    + "sparsekernels <mnist dir> <avx2|avx512> <hidden> | "
    + "kernelab <mnist dir> <avx2|avx512> <hidden> <threads> [rounds] [iterations]";
if (args.Length >= 3 && args[0] == "tilephases")
{
    TilePhaseBench.Run(args);
    return 0;
}
if (args.Length >= 4 && args[0] == "blockedkernels")
{
    BlockedKernelBench.Run(args);
    return 0;
}
if (args.Length >= 4 && args[0] == "sparsekernels")
{
    SparseKernelBench.Run(args);
    return 0;
}
if (args.Length >= 5 && args[0] == "kernelab")
{
    KernelAb.Run(args);
    return 0;
}
if (args.Length >= 3 && args[0] == "kernels")
{
    KernelBench.Run(args[1], int.Parse(args[2]));
    return 0;
}
if (args.Length >= 5 && args[0] == "paths")
{
    // `paths <mnist dir> <width> <hidden> <threads> [rounds]`: one SIMD backend, gd on the 10,000 seed images,
    // whole-set steps (the fused path) and steps over a batch of all 10,000 indices in order (the per-layer path),
    // interleaved in rounds of 10 steps; median ms per step of each.
    var (b, data, hidden, threads) = OpenSeedBackend(args);
    using ITrainingBackend backend = b;
    int rounds = args.Length > 5 ? int.Parse(args[5]) : 10;
    int[] all = Enumerable.Range(0, data.Count).ToArray();
    var fused = new List<double>();
    var layered = new List<double>();
    for (int r = 0; r <= rounds; r++)
        foreach (bool wholeSet in new[] { true, false })
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < 10; i++)
                b.Step(wholeSet ? TrainingBatch.WholeSet : TrainingBatch.Of(all), 0.1, measure: i == 9);
            if (r > 0) (wholeSet ? fused : layered).Add(sw.Elapsed.TotalMilliseconds / 10); // round 0 warms up
        }
    double Median(List<double> v) => v.Order().ElementAt(v.Count / 2);
    Console.WriteLine($"{args[2]} H={hidden} threads={threads}: whole set (fused) median {Median(fused):F3} ms/step, "
        + $"all indices (per-layer) median {Median(layered):F3} ms/step, ratio {Median(layered) / Median(fused):F2}");
    return 0;
}
if (args.Length >= 5 && args[0] == "bench")
{
    // `bench <mnist dir> <width> <hidden> <threads> [iterations]`: whole-set gd steps on the 10,000 seed images,
    // median ms/iteration of 5 runs after warm-up.
    var (b, data, hidden, threads) = OpenSeedBackend(args);
    using ITrainingBackend backend = b;
    int iterations = args.Length > 5 ? int.Parse(args[5]) : 20;
    for (int i = 0; i < 5; i++) b.Step(TrainingBatch.WholeSet, 0.1, false);
    var times = new double[5];
    for (int r = 0; r < times.Length; r++)
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++) b.Step(TrainingBatch.WholeSet, 0.1, false);
        times[r] = sw.Elapsed.TotalMilliseconds / iterations;
    }
    Array.Sort(times);
    double gflops = 4.0 * data.Count * hidden * 784 / (times[2] * 1e6);
    Console.WriteLine($"{args[2]} H={hidden} threads={threads}: median {times[2]:F3} ms/iteration "
        + $"(min {times[0]:F3}), {gflops:F1} GFLOP/s");
    return 0;
}
Console.Error.WriteLine(Usage);
return 2;

// `MODE <mnist dir> <width> <hidden> <threads> ...`: the SIMD backend of that width on the 10,000 seed images, for
// gd from the seed's initialisation.
static (ITrainingBackend Backend, LabeledImages Data, int Hidden, int Threads) OpenSeedBackend(string[] args)
{
    LabeledImages data = MnistFiles.Load(args[1]).Train.Take(10_000);
    int hidden = int.Parse(args[3]), threads = int.Parse(args[4]);
    ITrainingBackend b = SimdBackend.Create(args[2], [784, hidden, 10], OptimizerSettings.Gd, data.Count, threads,
        KernelMode.Auto);
    b.Upload(data);
    b.SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
    return (b, data, hidden, threads);
}

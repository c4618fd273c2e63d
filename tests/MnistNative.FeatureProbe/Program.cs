using System.Diagnostics;
using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Data;

// Prints the CPU features and one line per SIMD backend: "avx2: ok" or "avx2: unavailable: <message>",
// then "best: <name or none>: <reason>". With `bench <mnist dir> <backend> <hidden> <threads> [iterations]`
// it times the backend instead (median ms/iteration of 5 runs after warm-up), for quick measurements.
// Performance probes for development (see AbBench and KernelBench): `ab` (two builds of the seed backends,
// interleaved; AB_PREDICT=1 times Predict over the test set instead of a step), `abdeep` (the same for the
// deep mini-batch backend) and `kernels` (per-kernel ns per tile).
if (args.Length >= 7 && args[0] == "ab")
{
    AbBench.Run(args);
    return 0;
}
if (args.Length >= 8 && args[0] == "abdeep")
{
    AbBench.RunDeep(args);
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
if (args.Length >= 5 && args[0] == "bench")
{
    LabeledImages data = MnistFiles.Load(args[1]).Train.Take(10_000);
    int hidden = int.Parse(args[3]), threads = int.Parse(args[4]);
    int iterations = args.Length > 5 ? int.Parse(args[5]) : 20;
    using ITrainingBackend b = args[2] == "avx512" ? new Avx512Backend(hidden, threads) : new Avx2Backend(hidden, threads);
    b.Upload(data);
    b.SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
    for (int i = 0; i < 5; i++) b.Step(0.1, false);
    var times = new double[5];
    for (int r = 0; r < times.Length; r++)
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++) b.Step(0.1, false);
        times[r] = sw.Elapsed.TotalMilliseconds / iterations;
    }
    Array.Sort(times);
    double gflops = 4.0 * data.Count * hidden * 784 / (times[2] * 1e6);
    Console.WriteLine($"{args[2]} H={hidden} threads={threads}: median {times[2]:F3} ms/iteration (min {times[0]:F3}), {gflops:F1} GFLOP/s");
    return 0;
}

foreach (string line in CpuFeatures.Describe()) Console.WriteLine(line);
Probe("avx512", () => new Avx512Backend(10, 1));
Probe("avx2", () => new Avx2Backend(10, 1));
var (best, why) = CpuFeatures.BestSimdBackend();
Console.WriteLine($"best: {best ?? "none"}: {why}");
return 0;

static void Probe(string name, Func<ITrainingBackend> create)
{
    try
    {
        using ITrainingBackend b = create();
        Console.WriteLine($"{name}: ok");
    }
    catch (BackendUnavailableException e)
    {
        Console.WriteLine($"{name}: unavailable: {e.Message}");
    }
}

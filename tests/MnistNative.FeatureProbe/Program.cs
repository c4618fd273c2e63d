using System.Diagnostics;
using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Data;

// Prints the CPU features and one line per SIMD backend: "avx2: ok" or "avx2: unavailable: <message>",
// then "best: <name or none>: <reason>". With `bench <mnist dir> <backend> <hidden> <threads> [iterations]`
// it times the backend instead (median ms/iteration of 5 runs after warm-up), for quick measurements.
// Performance probes for development (see KernelBench): `kernels` (per-kernel ns per tile of the fused path).
// Builds are compared with the CLI's `bench`, interleaved (docs/journal/one-engine-cpu.md).
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
    LabeledImages data = MnistFiles.Load(args[1]).Train.Take(10_000);
    int hidden = int.Parse(args[3]), threads = int.Parse(args[4]), rounds = args.Length > 5 ? int.Parse(args[5]) : 10;
    using ITrainingBackend b = SimdBackend.Create(args[2], [784, hidden, 10], OptimizerSettings.Gd, data.Count,
        threads, KernelMode.Auto);
    b.Upload(data);
    b.SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
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
    Console.WriteLine($"{args[2]} H={hidden} threads={threads}: whole set (fused) median {Median(fused):F3} ms/step, " +
        $"all indices (per-layer) median {Median(layered):F3} ms/step, ratio {Median(layered) / Median(fused):F2}");
    return 0;
}
if (args.Length >= 5 && args[0] == "bench")
{
    LabeledImages data = MnistFiles.Load(args[1]).Train.Take(10_000);
    int hidden = int.Parse(args[3]), threads = int.Parse(args[4]);
    int iterations = args.Length > 5 ? int.Parse(args[5]) : 20;
    using ITrainingBackend b = SimdBackend.Create(args[2], [784, hidden, 10], OptimizerSettings.Gd, data.Count, threads,
        KernelMode.Auto);
    b.Upload(data);
    b.SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
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
    Console.WriteLine($"{args[2]} H={hidden} threads={threads}: median {times[2]:F3} ms/iteration (min {times[0]:F3}), {gflops:F1} GFLOP/s");
    return 0;
}

foreach (string line in CpuFeatures.Describe()) Console.WriteLine(line);
Probe("avx512");
Probe("avx2");
var (best, why) = CpuFeatures.BestSimdBackend();
Console.WriteLine($"best: {best ?? "none"}: {why}");
return 0;

// Prints "<name>: ok", then one step of each layer-1 kernel on a small MNIST-like problem: "<name> sparse: ok (...)".
static void Probe(string name)
{
    static ITrainingBackend Create(string name, KernelMode kernel) =>
        SimdBackend.Create(name, [784, 10, 10], OptimizerSettings.Gd, 100, 1, kernel);
    try
    {
        using (Create(name, KernelMode.Auto)) Console.WriteLine($"{name}: ok");
        var rng = new Random(3);
        var pixels = new byte[100 * 784];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = rng.NextDouble() < 0.8 ? (byte)0 : (byte)rng.Next(1, 256);
        var data = new LabeledImages(pixels, Enumerable.Range(0, 100).Select(i => (byte)(i % 10)).ToArray());
        foreach (KernelMode kernel in new[] { KernelMode.Dense, KernelMode.Sparse })
        {
            using ITrainingBackend b = Create(name, kernel);
            b.Upload(data);
            b.SetWeights(MlpParameters.Initialize([784, 10, 10], 0));
            StepMetrics m = b.Step(TrainingBatch.WholeSet, 0.1, measure: true);
            string ran = b.KernelChoice!.Name;
            Console.WriteLine(double.IsFinite(m.Loss) && m.Count == 100
                ? $"{name} {ran}: ok (loss {m.Loss:F4})" : $"{name} {ran}: failed (loss {m.Loss}, {m.Count} samples)");
        }
    }
    catch (BackendUnavailableException e)
    {
        Console.WriteLine($"{name}: unavailable: {e.Message}");
    }
}

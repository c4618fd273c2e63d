using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;

// Prints the CPU features and one line per SIMD backend: "avx2: ok" or "avx2: unavailable: <message>",
// then "best: <name or none>: <reason>". SimdBackendTests runs it as a child process under DOTNET_EnableAVX512=0 /
// DOTNET_EnableAVX2=0. The timing probes that used to live here are in benchmarks/MnistNative.Probes.
foreach (string line in CpuFeatures.Describe()) Console.WriteLine(line);
Probe("avx512");
Probe("avx2");
var (best, why) = CpuFeatures.BestSimdBackend();
Console.WriteLine($"best: {best ?? "none"}: {why}");
return 0;

// Prints "<name>: ok", then one step of each layer-1 kernel on a small MNIST-like problem:
// "<name> sparse: ok (...)".
static void Probe(string name)
{
    static ITrainingBackend Create(string name, KernelMode kernel) =>
        SimdBackend.Create(name, [784, 10, 10], OptimizerSettings.Gd, 100, 1, kernel);
    try
    {
        using (Create(name, KernelMode.Auto)) Console.WriteLine($"{name}: ok");
        var rng = new Random(3);
        var pixels = new byte[100 * 784];
        for (int i = 0; i < pixels.Length; i++)
            pixels[i] = rng.NextDouble() < 0.8 ? (byte)0 : (byte)rng.Next(1, 256);
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

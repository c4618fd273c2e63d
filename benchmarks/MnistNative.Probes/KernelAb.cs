using System.Diagnostics;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Data;

/// <summary>
/// `kernelab <mnist dir> <avx2|avx512> <H> <threads> [rounds] [iterations]`: the dense and the sparse layer-1
/// kernels of one build in one process, rounds interleaved (dense, sparse, dense, ...), on the seed's 10,000
/// images. Prints wall median/min per step and, for the caller's thread, CPU median/min (meaningful at 1 thread:
/// it leaves out the time other tenants hold the core).
/// </summary>
internal static class KernelAb
{
    public static void Run(string[] args)
    {
        LabeledImages data = MnistFiles.Load(args[1]).Train.Take(10_000);
        string width = args[2];
        int hidden = int.Parse(args[3]), threads = int.Parse(args[4]);
        int rounds = args.Length > 5 ? int.Parse(args[5]) : 20, iterations = args.Length > 6 ? int.Parse(args[6]) : 20;
        KernelMode[] modes = [KernelMode.Dense, KernelMode.Sparse];
        var backends = modes.Select(m => SimdBackend.Create(width, [784, hidden, 10], OptimizerSettings.Gd, data.Count,
            threads, m)).ToArray();
        var wall = modes.Select(_ => new List<double>()).ToArray();
        var cpu = modes.Select(_ => new List<double>()).ToArray();
        foreach (ITrainingBackend b in backends)
        {
            b.Upload(data);
            b.SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
            for (int i = 0; i < 5; i++) b.Step(TrainingBatch.WholeSet, 0.1, false);
        }
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < backends.Length; v++)
            {
                double c0 = ThreadClock.CpuMs();
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < iterations; i++) backends[v].Step(TrainingBatch.WholeSet, 0.1, false);
                wall[v].Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds / iterations);
                cpu[v].Add((ThreadClock.CpuMs() - c0) / iterations);
            }
        for (int v = 0; v < backends.Length; v++)
        {
            Console.WriteLine($"{width} H={hidden} threads={threads} {modes[v],-6}: "
                + $"wall median {Median(wall[v]):F3} min {wall[v].Min():F3} ms, "
                + $"caller CPU median {Median(cpu[v]):F3} min {cpu[v].Min():F3} ms");
            backends[v].Dispose();
        }
        Console.WriteLine($"sparse/dense wall median ratio {Median(wall[1]) / Median(wall[0]):F3}, "
            + $"CPU {Median(cpu[1]) / Median(cpu[0]):F3}");
    }

    private static double Median(List<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}

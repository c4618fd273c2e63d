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
            Console.WriteLine($"{width} H={hidden} threads={threads} {modes[v],-6}: wall median {Median(wall[v]):F3} min {wall[v].Min():F3} ms, " +
                $"caller CPU median {Median(cpu[v]):F3} min {cpu[v].Min():F3} ms");
            backends[v].Dispose();
        }
        Console.WriteLine($"sparse/dense wall median ratio {Median(wall[1]) / Median(wall[0]):F3}, CPU {Median(cpu[1]) / Median(cpu[0]):F3}");
    }

    private static double Median(List<double> values)
    {
        var s = values.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}

/// <summary>`sparsekernels <mnist dir> <avx2|avx512> <H>`: caller CPU ms per step of each sparse kernel over the 313
/// real tiles.</summary>
internal static unsafe class SparseKernelBench
{
    public static void Run(string[] args)
    {
        if (args[2] == "avx512") Run<Avx512Width, System.Runtime.Intrinsics.Vector512<float>>(args[1],
            int.Parse(args[3]));
        else Run<Avx2Width, System.Runtime.Intrinsics.Vector256<float>>(args[1], int.Parse(args[3]));
    }

    private static void Run<TW, TVec>(string mnist, int hidden)
        where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
    {
        const int T = FusedTilePath<TW, TVec>.Tile;
        LabeledImages data = MnistFiles.Load(mnist).Train.Take(10_000);
        int hp = (hidden + 1) & ~1, hv = FusedTilePath<TW, TVec>.SparseRowWidth(hp);
        int tiles = (data.Count + T - 1) / T;
        using SparseImages images = SparseImages.Build(data.Pixels, data.Count, tiles * T, hv, T);
        using var w1T = new NativeBuffer<float>(784 * hv);
        using var dw1T = new NativeBuffer<float>(784 * hv);
        using var b1 = new NativeBuffer<float>(hv);
        using var rows = new NativeBuffer<float>(T * hv);
        using var a1 = new NativeBuffer<float>(hp * T);
        using var dz1 = new NativeBuffer<float>(hp * T);
        using var values = new NativeBuffer<float>(256);
        for (int i = 0; i < 256; i++) values.Span[i] = i;
        var rng = new Random(1);
        for (int i = 0; i < w1T.Length; i++) w1T.Span[i] = (float)(rng.NextDouble() - 0.5);
        for (int i = 0; i < dz1.Length; i++) dz1.Span[i] = (float)(rng.NextDouble() - 0.5);
        (string, Action<int>)[] kernels =
        [
            ("SparseHiddenForward", t => FusedTilePath<TW, TVec>.SparseHiddenForward(a1.Pointer, rows.Pointer,
                images.Offsets.Pointer, images.Values.Pointer, images.RowStart.Pointer + t * T, w1T.Pointer, b1.Pointer,
                hp, hv)),
            ("SparseHiddenWeightGradient", t => FusedTilePath<TW, TVec>.SparseHiddenWeightGradient(dw1T.Pointer,
                rows.Pointer, dz1.Pointer, images.Offsets.Pointer, images.Values.Pointer, images.RowStart.Pointer + t * T,
                images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer, images.ColumnOffset.Pointer,
                images.TileColumnStart.Pointer[t], images.TileColumnStart.Pointer[t + 1], values.Pointer, hp, hv)),
        ];
        foreach (var (name, kernel) in kernels)
        {
            var times = new double[7];
            for (int r = 0; r < times.Length; r++)
            {
                double c0 = ThreadClock.CpuMs();
                int hot = int.Parse(Environment.GetEnvironmentVariable("SK_TILES") ?? "0");
                if (hot > 0)
                    for (int rep = 0; rep < 5 * tiles / hot; rep++)
                        for (int t = 0; t < hot; t++) kernel(t);
                else
                    for (int rep = 0; rep < 5; rep++)
                        for (int t = 0; t < tiles; t++) kernel(t);
                times[r] = (ThreadClock.CpuMs() - c0) / 5;
            }
            Array.Sort(times);
            Console.WriteLine($"{typeof(TW).Name} H={hidden} {name}: median {times[3]:F3} ms per step (min {times[0]:F3}), " +
                $"{times[3] * 1e6 / tiles / images.NonZeros * tiles:F2} ns per non-zero");
        }
    }
}

internal static class ThreadClock
{
    private struct Timespec { public long Seconds, Nanoseconds; }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out Timespec t);

    /// <summary>CPU time of the calling thread in ms (CLOCK_THREAD_CPUTIME_ID): excludes time descheduled by other
    /// load.</summary>
    public static double CpuMs()
    {
        ClockGetTime(3, out Timespec t);
        return t.Seconds * 1e3 + t.Nanoseconds / 1e6;
    }
}

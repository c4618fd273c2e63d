using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu;

/// <summary>
/// Measures the machine's float32 FMA peak, so benchmarks can report a kernel as a percentage of it: each
/// thread runs 12 independent FMA chains (enough to hide a 4-cycle latency on 2-3 FMA pipes) from registers.
/// </summary>
public static class FmaPeak
{
    private const int Chains = 12;

    /// <summary>
    /// GFLOP/s (an FMA counts 2 flops per lane) of <paramref name="threads"/> threads running FMAs on vectors of
    /// <paramref name="width"/> bits (256 or 512) for about <paramref name="milliseconds"/> ms, best of 3.
    /// </summary>
    /// <exception cref="BackendUnavailableException">The width is not supported here.</exception>
    public static double MeasureGflops(int width, int threads, int milliseconds = 50)
    {
        if (width == 256 && !CpuFeatures.CanRunAvx2)
            throw new BackendUnavailableException(CpuFeatures.Avx2UnavailableReason()!);
        if (width == 512 && !CpuFeatures.CanRunAvx512)
            throw new BackendUnavailableException(CpuFeatures.Avx512UnavailableReason()!);
        if (width != 256 && width != 512)
            throw new ArgumentOutOfRangeException(nameof(width), width, "width must be 256 or 512");
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);

        // Calibrate the inner repetitions on one thread so one run takes about the asked time.
        long reps = 1 << 16;
        Run(width, reps); // JIT warm-up
        var sw = Stopwatch.StartNew();
        Run(width, reps);
        double perRep = sw.Elapsed.TotalSeconds / reps;
        reps = Math.Max(1 << 16, (long)(milliseconds / 1000.0 / perRep));

        double best = 0;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            using var start = new Barrier(threads + 1);
            var workers = new Thread[threads];
            for (int t = 0; t < threads; t++)
            {
                workers[t] = new Thread(() => { start.SignalAndWait(); Run(width, reps); }) { IsBackground = true };
                workers[t].Start();
            }
            start.SignalAndWait();
            var clock = Stopwatch.StartNew();
            foreach (Thread t in workers) t.Join();
            double seconds = clock.Elapsed.TotalSeconds;
            double flops = (double)reps * Chains * (width / 32) * 2 * threads;
            best = Math.Max(best, flops / seconds / 1e9);
        }
        return best;
    }

    private static float Run(int width, long reps) => width == 512 ? Run512(reps) : Run256(reps);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Run256(long reps)
    {
        Vector256<float> m = Vector256.Create(0.999999f), a = Vector256.Create(1e-7f);
        Vector256<float> c0 = Vector256.Create(1f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
        Vector256<float> c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < reps; i++)
        {
            c0 = Fma.MultiplyAdd(c0, m, a); c1 = Fma.MultiplyAdd(c1, m, a); c2 = Fma.MultiplyAdd(c2, m, a);
            c3 = Fma.MultiplyAdd(c3, m, a); c4 = Fma.MultiplyAdd(c4, m, a); c5 = Fma.MultiplyAdd(c5, m, a);
            c6 = Fma.MultiplyAdd(c6, m, a); c7 = Fma.MultiplyAdd(c7, m, a); c8 = Fma.MultiplyAdd(c8, m, a);
            c9 = Fma.MultiplyAdd(c9, m, a); c10 = Fma.MultiplyAdd(c10, m, a); c11 = Fma.MultiplyAdd(c11, m, a);
        }
        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Run512(long reps)
    {
        Vector512<float> m = Vector512.Create(0.999999f), a = Vector512.Create(1e-7f);
        Vector512<float> c0 = Vector512.Create(1f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
        Vector512<float> c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < reps; i++)
        {
            c0 = Avx512F.FusedMultiplyAdd(c0, m, a); c1 = Avx512F.FusedMultiplyAdd(c1, m, a);
            c2 = Avx512F.FusedMultiplyAdd(c2, m, a); c3 = Avx512F.FusedMultiplyAdd(c3, m, a);
            c4 = Avx512F.FusedMultiplyAdd(c4, m, a); c5 = Avx512F.FusedMultiplyAdd(c5, m, a);
            c6 = Avx512F.FusedMultiplyAdd(c6, m, a); c7 = Avx512F.FusedMultiplyAdd(c7, m, a);
            c8 = Avx512F.FusedMultiplyAdd(c8, m, a); c9 = Avx512F.FusedMultiplyAdd(c9, m, a);
            c10 = Avx512F.FusedMultiplyAdd(c10, m, a); c11 = Avx512F.FusedMultiplyAdd(c11, m, a);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MnistNative.Backends.Cpu.Simd;

/// <summary>
/// `kernels <avx2|avx512> <hidden>`: ns per tile of each SIMD kernel on one tile kept hot in cache, single
/// thread, median of 7 rounds of thread CPU time (for seeing where a training step's time goes).
/// </summary>
internal static unsafe class KernelBench
{
    public static void Run(string width, int hidden)
    {
        if (width == "avx512") Run<Width512, Vector512<float>>(hidden);
        else Run<Width256, Vector256<float>>(hidden);
    }

    private static float* Alloc(int n, float fill = 0f)
    {
        float* p = (float*)NativeMemory.AlignedAlloc((nuint)(n * 4), 64);
        for (int i = 0; i < n; i++) p[i] = fill;
        return p;
    }

    private static void Run<TW, TVec>(int hidden) where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
    {
        const int T = FusedTilePath<TW, TVec>.Tile, P = FusedTilePath<TW, TVec>.Pitch;
        int hp = (hidden + 1) & ~1, w = TW.Count;
        var rnd = new Random(1);
        byte* pixels = (byte*)NativeMemory.AlignedAlloc(T * 784 + 64, 64);
        for (int i = 0; i < T * 784; i++) pixels[i] = (byte)(rnd.Next(4) == 0 ? rnd.Next(256) : 0);
        float* x = Alloc(T * P), w1 = Alloc(hp * P), b1 = Alloc(hp), w2 = Alloc(10 * hp), b2 = Alloc(16);
        float* a1 = Alloc(hp * T), dz1 = Alloc(hp * T), z2 = Alloc(10 * T), dw1 = Alloc(hp * P), db1 = Alloc(hp * w);
        float* dw2 = Alloc(10 * hp * w), db2 = Alloc(10 * w);
        float* labels = Alloc(T), valid = Alloc(T, 1f);
        for (int i = 0; i < hp * P; i++) w1[i] = (float)(rnd.NextDouble() - 0.5) * 0.01f;
        for (int i = 0; i < 10 * hp; i++) w2[i] = (float)(rnd.NextDouble() - 0.5);
        for (int i = 0; i < T; i++) labels[i] = rnd.Next(10);
        int correct = 0; double loss = 0;
        var phases = new (string Name, Action Body)[]
        {
            ("ConvertTile", () => FusedTilePath<TW, TVec>.ConvertTile(x, pixels, T)),
            ("HiddenForward", () => FusedTilePath<TW, TVec>.HiddenForward(a1, x, w1, b1, hp)),
            ("OutputForward", () => FusedTilePath<TW, TVec>.OutputForward(z2, a1, w2, b2, hp)),
            ("Softmax", () => FusedTilePath<TW, TVec>.Softmax(z2, z2, labels, valid, false, ref correct, ref loss)),
            ("OutputBackward",
                () => FusedTilePath<TW, TVec>.OutputBackward(z2, dw2, db2, z2, labels, valid, a1, hp)),
            ("HiddenBackward", () => FusedTilePath<TW, TVec>.HiddenBackward(dw1, db1, dz1, z2, w2, a1, x, hp)),
        };
        double total = 0;
        double flopsPerMatmul = 2.0 * T * hp * P;
        foreach (var (name, body) in phases)
        {
            int reps = 2000;
            for (int i = 0; i < 200; i++) body();
            var t = new double[7];
            for (int r = 0; r < t.Length; r++)
            {
                double t0 = ThreadClock.CpuMs();
                for (int i = 0; i < reps; i++) body();
                t[r] = (ThreadClock.CpuMs() - t0) * 1e6 / reps;
            }
            Array.Sort(t);
            total += t[3];
            string g = name is "HiddenForward" or "HiddenBackward" ? $"  {flopsPerMatmul / t[3]:F1} GFLOP/s" : "";
            Console.WriteLine($"{name,-15} median {t[3],9:F0} ns/tile  min {t[0],9:F0}{g}");
        }
        Console.WriteLine($"{"total",-15} median {total,9:F0} ns/tile -> {total * 313 / 1e6:F2} ms per 10,000 samples "
            + "on one thread");

        // The same kernels streaming over 313 different tiles (as a training step does): per phase, the
        // best of 15 passes of the mean ns/tile, so input bytes come from memory and dw1 stays as in a step.
        string? dir = Environment.GetEnvironmentVariable("KB_MNIST");
        if (dir == null) return;
        var data = MnistNative.Data.MnistFiles.Load(dir).Train.Take(10_000);
        int tiles = (data.Count + T - 1) / T;
        byte* all = (byte*)NativeMemory.AlignedAlloc((nuint)(tiles * T * 784), 64);
        new Span<byte>(all, tiles * T * 784).Clear();
        data.Pixels.CopyTo(new Span<byte>(all, data.Count * 784));
        var bests = new double[2][];
        for (int pass = 0; pass < 30; pass++)
        {
            bool prefetch = pass % 2 == 1;
            var best = bests[pass % 2] ??= Enumerable.Repeat(double.MaxValue, 6).ToArray();
            var acc = new long[6];
            for (int t = 0; t < tiles; t++)
            {
                long t0 = Stopwatch.GetTimestamp();
                FusedTilePath<TW, TVec>.ConvertTile(x, all + (long)t * T * 784, T);
                long t1 = Stopwatch.GetTimestamp();
                FusedTilePath<TW, TVec>.HiddenForward(a1, x, w1, b1, hp);
                long t2 = Stopwatch.GetTimestamp();
                FusedTilePath<TW, TVec>.OutputForward(z2, a1, w2, b2, hp);
                FusedTilePath<TW, TVec>.Softmax(z2, z2, labels, valid, false, ref correct, ref loss);
                FusedTilePath<TW, TVec>.OutputBackward(z2, dw2, db2, z2, labels, valid, a1, hp);
                long t3 = Stopwatch.GetTimestamp();
                byte* next = prefetch && t + 1 < tiles ? all + (long)(t + 1) * T * 784 : null;
                FusedTilePath<TW, TVec>.HiddenBackward(dw1, db1, dz1, z2, w2, a1, x, hp, next);
                long t4 = Stopwatch.GetTimestamp();
                acc[0] += t1 - t0; acc[1] += t2 - t1; acc[2] += t3 - t2; acc[3] += t4 - t3; acc[4] += t4 - t0;
            }
            for (int i = 0; i < 5; i++) best[i] = Math.Min(best[i], acc[i] * 1e9 / Stopwatch.Frequency / tiles);
        }
        string[] names = ["ConvertTile", "HiddenForward", "Out+Softmax+OB", "HiddenBackward", "all"];
        for (int i = 0; i < 5; i++)
            Console.WriteLine($"streaming {names[i],-15} best-pass mean {bests[0][i],8:F0} ns/tile, "
                + $"with next-tile prefetch {bests[1][i],8:F0}");
    }
}

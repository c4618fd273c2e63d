using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MnistNative.Backends.Cpu.Simd;

/// <summary>
/// `kernels <avx2|avx512> <hidden>`: ns per tile of each SIMD kernel on one tile kept hot in cache, single
/// thread, median of 7 rounds (for seeing where a training step's time goes).
/// </summary>
internal static unsafe class KernelBench
{
    public static void Run(string width, int hidden)
    {
        if (width == "avx512") Run<Avx512Width, Vector512<float>>(hidden);
        else Run<Avx2Width, Vector256<float>>(hidden);
    }

    private static float* Alloc(int n, float fill = 0f)
    {
        float* p = (float*)NativeMemory.AlignedAlloc((nuint)(n * 4), 64);
        for (int i = 0; i < n; i++) p[i] = fill;
        return p;
    }

    private static void Run<TW, TVec>(int hidden) where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
    {
        const int T = SimdBackend<TW, TVec>.Tile, P = SimdBackend<TW, TVec>.Pitch;
        int hp = (hidden + 1) & ~1, w = TW.Count;
        var rnd = new Random(1);
        byte* pixels = (byte*)NativeMemory.AlignedAlloc(T * 784 + 64, 64);
        for (int i = 0; i < T * 784; i++) pixels[i] = (byte)(rnd.Next(4) == 0 ? rnd.Next(256) : 0);
        float* x = Alloc(T * P), w1 = Alloc(hp * P), b1 = Alloc(hp), w2 = Alloc(10 * hp), b2 = Alloc(16);
        float* a1 = Alloc(hp * T), dz1 = Alloc(hp * T), z2 = Alloc(10 * T), dw1 = Alloc(hp * P), db1 = Alloc(hp * w), dw2 = Alloc(10 * hp * w), db2 = Alloc(10 * w);
        float* labels = Alloc(T), valid = Alloc(T, 1f);
        for (int i = 0; i < hp * P; i++) w1[i] = (float)(rnd.NextDouble() - 0.5) * 0.01f;
        for (int i = 0; i < 10 * hp; i++) w2[i] = (float)(rnd.NextDouble() - 0.5);
        for (int i = 0; i < T; i++) labels[i] = rnd.Next(10);
        int correct = 0; double loss = 0;
        var phases = new (string Name, Action Body)[]
        {
            ("ConvertTile", () => SimdBackend<TW, TVec>.ConvertTile(x, pixels, T)),
            ("HiddenForward", () => SimdBackend<TW, TVec>.HiddenForward(a1, x, w1, b1, hp)),
            ("OutputForward", () => SimdBackend<TW, TVec>.OutputForward(z2, a1, w2, b2, hp)),
            ("Softmax", () => SimdBackend<TW, TVec>.Softmax(z2, z2, labels, valid, false, ref correct, ref loss)),
            ("OutputBackward", () => SimdBackend<TW, TVec>.OutputBackward(z2, dw2, db2, z2, labels, valid, a1, hp)),
            ("HiddenBackward", () => SimdBackend<TW, TVec>.HiddenBackward(dw1, db1, dz1, z2, w2, a1, x, hp)),
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
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < reps; i++) body();
                t[r] = Stopwatch.GetElapsedTime(t0).TotalNanoseconds / reps;
            }
            Array.Sort(t);
            total += t[3];
            string g = name is "HiddenForward" or "HiddenBackward" ? $"  {flopsPerMatmul / t[3]:F1} GFLOP/s" : "";
            Console.WriteLine($"{name,-15} median {t[3],9:F0} ns/tile  min {t[0],9:F0}{g}");
        }
        Console.WriteLine($"{"total",-15} median {total,9:F0} ns/tile -> {total * 313 / 1e6:F2} ms per 10,000 samples on one thread");
    }
}

using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Data;

/// <summary>`sparsekernels <mnist dir> <avx2|avx512> <H>`: caller CPU ms per step of each sparse kernel over the 313
/// real tiles.</summary>
internal static unsafe class SparseKernelBench
{
    public static void Run(string[] args)
    {
        if (args[2] == "avx512") Run<Width512, System.Runtime.Intrinsics.Vector512<float>>(args[1],
            int.Parse(args[3]));
        else Run<Width256, System.Runtime.Intrinsics.Vector256<float>>(args[1], int.Parse(args[3]));
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
                rows.Pointer, dz1.Pointer, images.Offsets.Pointer, images.Values.Pointer,
                images.RowStart.Pointer + t * T, images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer,
                images.ColumnOffset.Pointer, images.TileColumnStart.Pointer[t], images.TileColumnStart.Pointer[t + 1],
                values.Pointer, hp, hv)),
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
            Console.WriteLine($"{typeof(TW).Name} H={hidden} {name}: median {times[3]:F3} ms per step "
                + $"(min {times[0]:F3}), {times[3] * 1e6 / tiles / images.NonZeros * tiles:F2} ns per non-zero");
        }
    }
}

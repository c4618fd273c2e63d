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

/// <summary>`blockedkernels <mnist dir> <avx2|avx512> <H>`: caller CPU ms per step of the sample-blocked forward over
/// every tile and of the weight gradient over every pixel, one thread.</summary>
internal static unsafe class BlockedKernelBench
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
        int tiles = (data.Count + T - 1) / T, blocksPerTile = T / TW.Count;
        using PixelBlocks blocks = PixelBlocks.Build(data.Pixels, data.Labels, tiles * T, TW.Count, pixelsPerColumn: 2);
        using var w1T = new NativeBuffer<float>(784 * hv);
        using var dw1T = new NativeBuffer<float>(784 * hv);
        using var b1 = new NativeBuffer<float>(hv);
        using var a1 = new NativeBuffer<float>(hp * T);
        using var dz1 = new NativeBuffer<float>(blocks.BlockCount * hp * TW.Count);
        var rng = new Random(1);
        for (int i = 0; i < w1T.Length; i++) w1T.Span[i] = (float)(rng.NextDouble() - 0.5);
        for (int i = 0; i < dz1.Length; i++) dz1.Span[i] = (float)(rng.NextDouble() - 0.5);
        Console.WriteLine($"{typeof(TW).Name} H={hidden}: {blocks.Entries} entries ({blocks.ColumnFraction:P1})");
        Measure("BlockedHiddenForward", () =>
        {
            for (int t = 0; t < tiles; t++)
                FusedTilePath<TW, TVec>.BlockedHiddenForward(a1.Pointer, blocks, t * blocksPerTile, w1T.Pointer,
                    b1.Pointer, hp, hv);
        }, blocks.Entries);
        for (int round = 0; round < 2; round++)
            foreach (int units in new[] { 5, 10 })
                Measure($"BlockedWeightGradient, {units} units per walk", () =>
                {
                    for (int c = 0; c < blocks.Columns; c++)
                    {
                        int s = blocks.ColumnStart.Pointer[c], n = blocks.ColumnStart.Pointer[c + 1] - s;
                        FusedTilePath<TW, TVec>.BlockedWeightGradient(dw1T.Pointer + 2 * c * hv, hv,
                            blocks.ColumnBlock.Pointer + s, blocks.ColumnBytes.Pointer + (long)s * 2 * TW.Count, n,
                            dz1.Pointer, hp, 1f, units);
                    }
                }, blocks.Entries);
    }

    private static void Measure(string name, Action step, long entries)
    {
        var times = new double[9];
        for (int r = 0; r < times.Length; r++)
        {
            double c0 = ThreadClock.CpuMs();
            for (int rep = 0; rep < 5; rep++) step();
            times[r] = (ThreadClock.CpuMs() - c0) / 5;
        }
        Array.Sort(times);
        Console.WriteLine($"  {name}: median {times[4]:F3} ms per step (min {times[0]:F3}), " +
            $"{times[4] * 1e6 / entries:F2} ns per entry");
    }
}

/// <summary>`tilephases <avx2|avx512> <H>`: caller CPU ms per 10,000 samples of the fused tile phases after layer 1's
/// forward (output layer, softmax with the loss, output backward, dz1), one thread.</summary>
internal static unsafe class TilePhaseBench
{
    public static void Run(string[] args)
    {
        if (args[1] == "avx512") Run<Width512, System.Runtime.Intrinsics.Vector512<float>>(int.Parse(args[2]));
        else Run<Width256, System.Runtime.Intrinsics.Vector256<float>>(int.Parse(args[2]));
    }

    private static void Run<TW, TVec>(int hidden) where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
    {
        const int T = FusedTilePath<TW, TVec>.Tile, Tiles = 313;
        int hp = (hidden + 1) & ~1, w = TW.Count;
        using var a1 = new NativeBuffer<float>(hp * T);
        using var z2 = new NativeBuffer<float>(10 * T);
        using var w2 = new NativeBuffer<float>(10 * hp);
        using var b2 = new NativeBuffer<float>(16);
        using var labels = new NativeBuffer<float>(T);
        using var valid = new NativeBuffer<float>(T);
        using var dw2 = new NativeBuffer<float>(10 * hp * w);
        using var db2 = new NativeBuffer<float>(10 * w);
        using var db1 = new NativeBuffer<float>(hp * w);
        using var dz1 = new NativeBuffer<float>(hp * T);
        var rng = new Random(1);
        for (int i = 0; i < a1.Length; i++) a1.Span[i] = (float)rng.NextDouble();
        for (int i = 0; i < w2.Length; i++) w2.Span[i] = (float)(rng.NextDouble() - 0.5);
        for (int i = 0; i < T; i++) { labels.Span[i] = rng.Next(10); valid.Span[i] = 1; }
        int correct = 0;
        double loss = 0;
        void Measure(string name, Action tile)
        {
            var times = new double[9];
            for (int r = 0; r < times.Length; r++)
            {
                double c0 = ThreadClock.CpuMs();
                for (int rep = 0; rep < 5; rep++)
                    for (int t = 0; t < Tiles; t++) tile();
                times[r] = (ThreadClock.CpuMs() - c0) / 5;
            }
            Array.Sort(times);
            Console.WriteLine($"  {name}: median {times[4]:F3} ms per 10,000 samples (min {times[0]:F3})");
        }
        Console.WriteLine($"{typeof(TW).Name} H={hidden}");
        Measure("OutputForward", () => FusedTilePath<TW, TVec>.OutputForward(z2.Pointer, a1.Pointer, w2.Pointer,
            b2.Pointer, hp));
        Measure("Softmax, measuring", () =>
        {
            FusedTilePath<TW, TVec>.OutputForward(z2.Pointer, a1.Pointer, w2.Pointer, b2.Pointer, hp);
            FusedTilePath<TW, TVec>.Softmax(z2.Pointer, z2.Pointer, labels.Pointer, valid.Pointer, true, ref correct,
                ref loss);
        });
        Measure("Softmax, not measuring", () =>
        {
            FusedTilePath<TW, TVec>.OutputForward(z2.Pointer, a1.Pointer, w2.Pointer, b2.Pointer, hp);
            FusedTilePath<TW, TVec>.Softmax(z2.Pointer, z2.Pointer, labels.Pointer, valid.Pointer, false, ref correct,
                ref loss);
        });
        Measure("OutputBackward", () => FusedTilePath<TW, TVec>.OutputBackward(z2.Pointer, dw2.Pointer, db2.Pointer,
            z2.Pointer, labels.Pointer, valid.Pointer, a1.Pointer, hp));
        Measure("HiddenDelta", () => FusedTilePath<TW, TVec>.HiddenDelta(dz1.Pointer, db1.Pointer, z2.Pointer,
            w2.Pointer, a1.Pointer, hp));
    }
}

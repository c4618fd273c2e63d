using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using MnistNative.Data;

/// <summary>`sparsekernels <mnist dir> <avx2|avx512> <H>`: caller CPU ms per step of each sparse kernel over the 313
/// real tiles, the images in the given order and in the sample blocks' order (the order the wide-layer step runs the
/// rows' gradient in), interleaved: the forward, the weight gradient over columns of pixel pairs, the same with every
/// column's gradient rows at one L1-hot place (what the read-modify-write of dw1T costs), and the single-pixel
/// column gradient this replaced (<see cref="SinglePixelColumns"/>).</summary>
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
        int tiles = (data.Count + T - 1) / T;
        using PixelBlocks blocks = PixelBlocks.Build(data.Pixels, data.Labels, tiles * T, TW.Count,
            pixelsPerColumn: 2);
        var ordered = new byte[(long)data.Count * 784];
        for (int i = 0; i < data.Count; i++)
            data.Pixels.AsSpan(blocks.Order.Pointer[i] * 784, 784).CopyTo(ordered.AsSpan(i * 784, 784));
        Run<TW, TVec>("given order", data.Pixels, data.Count, hidden);
        Run<TW, TVec>("block order", ordered, data.Count, hidden);
    }

    private static void Run<TW, TVec>(string order, ReadOnlySpan<byte> pixels, int count, int hidden)
        where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
    {
        const int T = FusedTilePath<TW, TVec>.Tile;
        int hp = (hidden + 1) & ~1, hv = FusedTilePath<TW, TVec>.SparseRowWidth(hp);
        int tiles = (count + T - 1) / T;
        using SparseImages images = SparseImages.Build(pixels, count, tiles * T, hv, T);
        using var singles = new SinglePixelColumns<TW, TVec>(pixels, count, tiles, hv);
        int pairColumns = images.TileColumnStart.Pointer[tiles];
        using var hotOffsets = new NativeBuffer<int>(Math.Max(1, pairColumns)); // all zero: one place for every column
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
        Console.WriteLine($"{typeof(TW).Name} H={hidden}, {order}: {images.NonZeros} non-zeros; per tile " +
            $"{(double)singles.Columns / tiles:F0} pixel columns ({(double)images.NonZeros / singles.Columns:F1} " +
            $"entries each), {(double)pairColumns / tiles:F0} pair columns " +
            $"({(double)images.ColumnEntryCount / pairColumns:F1} entries each, " +
            $"{(double)images.ColumnEntryCount / images.NonZeros:F2} per non-zero)");
        void Gradient(int t, int* columnOffset) => FusedTilePath<TW, TVec>.SparseHiddenWeightGradient(dw1T.Pointer,
            rows.Pointer, dz1.Pointer, images.Offsets.Pointer, images.Values.Pointer, images.RowStart.Pointer + t * T,
            images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer, columnOffset,
            images.TileColumnStart.Pointer[t], images.TileColumnStart.Pointer[t + 1], values.Pointer, hp, hv);
        (string, Action<int>)[] kernels =
        [
            ("SparseHiddenForward", t => FusedTilePath<TW, TVec>.SparseHiddenForward(a1.Pointer, rows.Pointer,
                images.Offsets.Pointer, images.Values.Pointer, images.RowStart.Pointer + t * T, w1T.Pointer, b1.Pointer,
                hp, hv)),
            ("SparseHiddenWeightGradient, pixel pairs", t => Gradient(t, images.ColumnOffset.Pointer)),
            ("  the same, gradient rows L1-hot", t => Gradient(t, hotOffsets.Pointer)),
            ("  the same, only the transpose of dz1", t => FusedTilePath<TW, TVec>.SparseHiddenWeightGradient(
                dw1T.Pointer, rows.Pointer, dz1.Pointer, images.Offsets.Pointer, images.Values.Pointer,
                images.RowStart.Pointer + t * T, images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer,
                images.ColumnOffset.Pointer, 0, 0, values.Pointer, hp, hv)),
            ("  single-pixel columns (before)", t => singles.Gradient(dw1T.Pointer, rows.Pointer, dz1.Pointer, t,
                values.Pointer, hp, hv)),
        ];
        if (hv / TW.Count <= 2) kernels = kernels[..2]; // the gradient scatters the rows; no columns to compare
        const int Rounds = 9;
        var times = new double[kernels.Length, Rounds];
        int hot = int.Parse(Environment.GetEnvironmentVariable("SK_TILES") ?? "0");
        for (int r = 0; r < Rounds; r++)
            for (int k = 0; k < kernels.Length; k++)
            {
                Action<int> kernel = kernels[k].Item2;
                double c0 = ThreadClock.CpuMs();
                if (hot > 0)
                    for (int rep = 0; rep < 5 * tiles / hot; rep++)
                        for (int t = 0; t < hot; t++) kernel(t);
                else
                    for (int rep = 0; rep < 5; rep++)
                        for (int t = 0; t < tiles; t++) kernel(t);
                times[k, r] = (ThreadClock.CpuMs() - c0) / 5;
            }
        for (int k = 0; k < kernels.Length; k++)
        {
            double[] sorted = Enumerable.Range(0, Rounds).Select(r => times[k, r]).Order().ToArray();
            Console.WriteLine($"  {kernels[k].Item1}: median {sorted[Rounds / 2]:F3} ms per step " +
                $"(min {sorted[0]:F3}), {sorted[Rounds / 2] * 1e6 / images.NonZeros:F2} ns per non-zero");
        }
    }
}

/// <summary>The weight gradient's layout and kernel before pixel pairs, kept here for the A/B: per tile the pixel
/// columns with a non-zero, 16-bit entries <c>sample &lt;&lt; 8 | byte</c>, 4 or 8 accumulators per walk.</summary>
internal sealed unsafe class SinglePixelColumns<TW, TVec> : IDisposable
    where TW : struct, IVectorWidth<TVec> where TVec : unmanaged
{
    private const int T = FusedTilePath<TW, TVec>.Tile;
    private readonly NativeBuffer<int> _tileStart, _offset, _entryStart;
    private readonly NativeBuffer<ushort> _entries;

    // rows of 4 vectors walk 2 entries at a time (4 x 2 chains), wider ones 8 vectors per walk

    public SinglePixelColumns(ReadOnlySpan<byte> pixels, int count, int tiles, int rowWidth)
    {
        var tileStart = new List<int>();
        var offset = new List<int>();
        var entryStart = new List<int>();
        var entries = new List<ushort>();
        for (int t = 0; t < tiles; t++)
        {
            tileStart.Add(offset.Count);
            int samples = Math.Clamp(count - t * T, 0, T);
            for (int k = 0; k < 784; k++)
            {
                int first = entries.Count;
                for (int s = 0; s < samples; s++)
                    if (pixels[(t * T + s) * 784 + k] is var v and not 0) entries.Add((ushort)(s << 8 | v));
                if (entries.Count == first) continue;
                offset.Add(k * rowWidth);
                entryStart.Add(first);
            }
        }
        tileStart.Add(offset.Count);
        entryStart.Add(entries.Count);
        Columns = offset.Count;
        _tileStart = Copy(tileStart);
        _offset = Copy(offset);
        _entryStart = Copy(entryStart);
        _entries = Copy(entries);
    }

    public int Columns { get; }

    private static NativeBuffer<TItem> Copy<TItem>(List<TItem> items) where TItem : unmanaged
    {
        var buffer = new NativeBuffer<TItem>(Math.Max(1, items.Count));
        items.ToArray().CopyTo(buffer.Span);
        return buffer;
    }

    public void Gradient(float* dw1T, float* rows, float* dz1T, int tile, float* valueTable, int hp, int hv)
    {
        int w = TW.Count, vectors = hv / w;
        for (int s = 0; s < T; s++)
        {
            float* g = rows + s * hv;
            for (int j = 0; j < hp; j++) g[j] = dz1T[j * T + s];
            for (int j = hp; j < hv; j++) g[j] = 0;
        }
        for (int c = _tileStart.Pointer[tile]; c < _tileStart.Pointer[tile + 1]; c++)
        {
            ushort* e = _entries.Pointer + _entryStart.Pointer[c];
            int count = _entryStart.Pointer[c + 1] - _entryStart.Pointer[c];
            float* d = dw1T + _offset.Pointer[c];
            if (vectors == 4) ColumnSum4(d, rows, e, count, valueTable, hv);
            else
                for (int v = 0; v < vectors; v += 8) ColumnSum8(d + v * w, rows + v * w, e, count, valueTable, hv);
        }
    }

    private static void ColumnSum4(float* d, float* rows, ushort* e, int count, float* valueTable, int hv)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, b0 = TW.Zero, b1 = TW.Zero, b2 = TW.Zero,
            b3 = TW.Zero;
        int i = 0;
        for (; i + 2 <= count; i += 2)
        {
            int e0 = e[i], e1 = e[i + 1];
            TVec v0 = TW.Create(valueTable[e0 & 0xFF]), v1 = TW.Create(valueTable[e1 & 0xFF]);
            float* r0 = rows + (e0 >> 8) * hv, r1 = rows + (e1 >> 8) * hv;
            a0 = TW.MultiplyAdd(TW.Load(r0), v0, a0); a1 = TW.MultiplyAdd(TW.Load(r0 + w), v0, a1);
            a2 = TW.MultiplyAdd(TW.Load(r0 + 2 * w), v0, a2); a3 = TW.MultiplyAdd(TW.Load(r0 + 3 * w), v0, a3);
            b0 = TW.MultiplyAdd(TW.Load(r1), v1, b0); b1 = TW.MultiplyAdd(TW.Load(r1 + w), v1, b1);
            b2 = TW.MultiplyAdd(TW.Load(r1 + 2 * w), v1, b2); b3 = TW.MultiplyAdd(TW.Load(r1 + 3 * w), v1, b3);
        }
        if (i < count)
        {
            TVec v0 = TW.Create(valueTable[e[i] & 0xFF]);
            float* r0 = rows + (e[i] >> 8) * hv;
            a0 = TW.MultiplyAdd(TW.Load(r0), v0, a0); a1 = TW.MultiplyAdd(TW.Load(r0 + w), v0, a1);
            a2 = TW.MultiplyAdd(TW.Load(r0 + 2 * w), v0, a2); a3 = TW.MultiplyAdd(TW.Load(r0 + 3 * w), v0, a3);
        }
        TW.Store(d, TW.Add(TW.Load(d), TW.Add(a0, b0))); TW.Store(d + w, TW.Add(TW.Load(d + w), TW.Add(a1, b1)));
        TW.Store(d + 2 * w, TW.Add(TW.Load(d + 2 * w), TW.Add(a2, b2)));
        TW.Store(d + 3 * w, TW.Add(TW.Load(d + 3 * w), TW.Add(a3, b3)));
    }

    private static void ColumnSum8(float* d, float* rows, ushort* e, int count, float* valueTable, int hv)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, a4 = TW.Zero, a5 = TW.Zero, a6 = TW.Zero,
            a7 = TW.Zero;
        for (int i = 0; i < count; i++)
        {
            int e0 = e[i];
            TVec v = TW.Create(valueTable[e0 & 0xFF]);
            float* r = rows + (e0 >> 8) * hv;
            a0 = TW.MultiplyAdd(TW.Load(r), v, a0); a1 = TW.MultiplyAdd(TW.Load(r + w), v, a1);
            a2 = TW.MultiplyAdd(TW.Load(r + 2 * w), v, a2); a3 = TW.MultiplyAdd(TW.Load(r + 3 * w), v, a3);
            a4 = TW.MultiplyAdd(TW.Load(r + 4 * w), v, a4); a5 = TW.MultiplyAdd(TW.Load(r + 5 * w), v, a5);
            a6 = TW.MultiplyAdd(TW.Load(r + 6 * w), v, a6); a7 = TW.MultiplyAdd(TW.Load(r + 7 * w), v, a7);
        }
        TW.Store(d, TW.Add(TW.Load(d), a0)); TW.Store(d + w, TW.Add(TW.Load(d + w), a1));
        TW.Store(d + 2 * w, TW.Add(TW.Load(d + 2 * w), a2)); TW.Store(d + 3 * w, TW.Add(TW.Load(d + 3 * w), a3));
        TW.Store(d + 4 * w, TW.Add(TW.Load(d + 4 * w), a4)); TW.Store(d + 5 * w, TW.Add(TW.Load(d + 5 * w), a5));
        TW.Store(d + 6 * w, TW.Add(TW.Load(d + 6 * w), a6)); TW.Store(d + 7 * w, TW.Add(TW.Load(d + 7 * w), a7));
    }

    public void Dispose()
    {
        _tileStart.Dispose(); _offset.Dispose(); _entryStart.Dispose(); _entries.Dispose();
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

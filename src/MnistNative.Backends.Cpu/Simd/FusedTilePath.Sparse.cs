using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The sparse layer-1 kernels: the same fused tile pipeline, but HiddenForward and the weight gradient of
/// HiddenBackward visit only the non-zero pixels of each sample (<see cref="SparseImages"/>), and layer 1's
/// weights are kept pixel-major, w1T (784, Hv), so one non-zero pixel is one broadcast times Hv/W vectors.
/// Hv is Hp rounded up to 1, 2 or 4 vectors or a multiple of 8 (<see cref="SparseRowWidth"/>); the padding columns
/// stay zero. See docs/cpu-backends.md ("Sparse layer 1").
/// </summary>
internal sealed unsafe partial class FusedTilePath<TW, TVec>
{
    /// <summary>
    /// How much more a sparse lane costs than a dense one (index decode, the broadcast, the read-modify-write of
    /// the gradient rows, the transposes around the kernels). Auto picks sparse when density x Hv / Hp x this is
    /// below 1. See docs/journal/sparse-training.md for the measurement.
    /// </summary>
    internal const double SparseLaneCost = 3.0;

    private readonly int _hv;                  // floats per pixel row of w1T, dw1T and the (Tile, Hv) row buffers
    private readonly NativeBuffer<float> _w1T, _dw1T; // (784, Hv): layer 1 pixel-major, for the sparse kernels
    private readonly NativeBuffer<float> _pixelValues = PixelValueTable();
    private SparseImages? _sparseImages;
    private bool _sparse;        // the sparse kernels run, and _w1T holds the current weights
    private bool _denseW1Stale;  // _w1 lags behind _w1T (sparse steps since the last sync)

    public KernelChoice? KernelChoice { get; private set; }

    /// <summary>The floats 0..255: the column entries carry the byte, and a broadcast from this table costs no
    /// conversion.</summary>
    private static NativeBuffer<float> PixelValueTable()
    {
        var table = new NativeBuffer<float>(256);
        for (int v = 0; v < 256; v++) table.Span[v] = v;
        return table;
    }

    /// <summary>Hp rounded up to 1, 2 or 4 vectors, or to a multiple of 8 (the register blocks of the row
    /// kernels).</summary>
    internal static int SparseRowWidth(int hp)
    {
        int w = TW.Count, vectors = (hp + w - 1) / w;
        vectors = vectors <= 2 ? vectors : vectors <= 4 ? 4 : (vectors + 7) & ~7;
        return vectors * w;
    }

    /// <summary>
    /// Dense, sparse rows or sparse sample blocks, and why: the kernels with the least estimated work, dense counting
    /// 1; the blocks are estimated only when <paramref name="columnFraction"/> (the columns they keep) is known. The
    /// blocks' weight gradient serves only narrow hidden layers (<see cref="BlockedShape"/>); for wider ones the
    /// blocks can still run the forward, with the rows' gradient.
    /// </summary>
    internal static (Layer1Kernel Kernel, string Reason) DecideKernel(KernelMode mode, double density, int hp, int hv,
        double? columnFraction)
    {
        double rows = density * hv / hp * SparseLaneCost;
        double blocks = columnFraction is double f ? f * BlockedLaneCost : double.PositiveInfinity;
        string measured = $"{density:P1} of the training pixels are non-zero; sparse rows estimated at {rows:F2}x " +
            $"dense ({hv} lanes per non-zero pixel against {hp} per pixel, x{SparseLaneCost} per sparse lane)";
        if (columnFraction is double kept)
            measured += $"; sample blocks of {TW.Count} keep {kept:P1} of the pixel columns, estimated at " +
                $"{blocks:F2}x dense (x{BlockedLaneCost} per kept column)";
        (Layer1Kernel sparse, string name) = blocks >= rows ? (Layer1Kernel.Rows, "sparse rows")
            : BlockedShape(hp) ? (Layer1Kernel.SampleBlocks, "sparse sample blocks")
            : (Layer1Kernel.SampleBlocksForward, "sparse sample blocks forward, rows gradient");
        return mode switch
        {
            KernelMode.Dense => (Layer1Kernel.Dense, $"forced by --kernel dense ({measured})"),
            KernelMode.Sparse => (sparse, $"forced by --kernel sparse: {name} ({measured})"),
            _ => Math.Min(rows, blocks) < 1 ? (sparse, $"auto: {name} ({measured})") :
                (Layer1Kernel.Dense, $"auto: dense ({measured})"),
        };
    }

    /// <summary>With <see cref="KernelMode.Sparse"/>, this sparse family whatever the estimates say (Rows, or
    /// SampleBlocks: their forward and gradient at narrow hidden layers, their forward at wide ones); the tests run
    /// every kernel on data of every kind. Null: the cheaper family.</summary>
    internal Layer1Kernel? SparseFamily { get; set; }

    private void ChooseKernel(LabeledImages train)
    {
        double density = KernelChoice.MeasureDensity(train.Pixels);
        Layer1Kernel? forced = _kernelMode == KernelMode.Sparse ? SparseFamily : null;
        bool forceBlocks = forced is Layer1Kernel.SampleBlocks or Layer1Kernel.SampleBlocksForward;
        PixelBlocks? blocks = forceBlocks || WorthBlocking(_kernelMode, density)
            ? PixelBlocks.Build(train.Pixels, train.Labels, _tiles * Tile, TW.Count, pixelsPerColumn: 2)
            : null;
        (Layer1Kernel kernel, string reason) = DecideKernel(_kernelMode, density, _hp, _hv, blocks?.ColumnFraction);
        if (forceBlocks)
            (kernel, reason) = BlockedShape(_hp)
                ? (Layer1Kernel.SampleBlocks, $"forced: sparse sample blocks ({reason})")
                : (Layer1Kernel.SampleBlocksForward, $"forced: sparse sample blocks forward, rows gradient ({reason})");
        else if (forced == Layer1Kernel.Rows) (kernel, reason) = (Layer1Kernel.Rows, $"forced: sparse rows ({reason})");
        switch (kernel)
        {
            case Layer1Kernel.SampleBlocks:
                UploadBlocks(train, blocks!, gradientByBlocks: true);
                break;
            case Layer1Kernel.SampleBlocksForward:
                UploadBlocks(train, blocks!, gradientByBlocks: false);
                _sparseImages = SparseImages.Build(InBlockOrder(train.Pixels, blocks!), _n, _tiles * Tile, _hv, Tile);
                break;
            case Layer1Kernel.Rows:
                blocks?.Dispose();
                _sparseImages = SparseImages.Build(train.Pixels, _n, _tiles * Tile, _hv, Tile);
                break;
            default:
                blocks?.Dispose();
                break;
        }
        _sparse = kernel != Layer1Kernel.Dense;
        if (_sparse) TransposeW1ToPixelMajor();
        KernelChoice = new KernelChoice(_sparse ? KernelMode.Sparse : KernelMode.Dense, reason, density,
            Core.KernelChoice.UsefulFlops(_n, _h, density));
    }

    // the images in the blocks' sample order (the rows' layout for the same tiles as the blocks')
    private static byte[] InBlockOrder(ReadOnlySpan<byte> pixels, PixelBlocks blocks)
    {
        var ordered = new byte[(long)blocks.Count * In];
        for (int i = 0; i < blocks.Count; i++)
            pixels.Slice(blocks.Order.Pointer[i] * In, In).CopyTo(ordered.AsSpan(i * In, In));
        return ordered;
    }

    // w1 (Hp, Pitch) -> w1T (784, Hv), padding columns zero
    private void TransposeW1ToPixelMajor()
    {
        float* src = _w1.Pointer, dst = _w1T.Pointer;
        _w1T.Clear();
        for (int j = 0; j < _hp; j++)
            for (int k = 0; k < In; k++) dst[k * _hv + j] = src[j * Pitch + k];
        _denseW1Stale = false;
    }

    /// <summary>Brings _w1 up to date with _w1T after sparse steps (Predict, GetWeights and a new Upload read
    /// _w1).</summary>
    private void SyncDenseW1()
    {
        if (!_denseW1Stale) return;
        TransposeToRowMajor(_w1.Pointer, _w1T.Pointer);
        _denseW1Stale = false;
    }

    // (784, Hv) -> (Hp, Pitch)
    private void TransposeToRowMajor(float* dst, float* src)
    {
        for (int j = 0; j < _hp; j++)
            for (int k = 0; k < In; k++) dst[j * Pitch + k] = src[k * _hv + j];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void SparseTrainTile(WorkerScratch s, int tile)
    {
        float* labels = _labels!.Pointer + tile * Tile;
        float* valid = _valid!.Pointer + tile * Tile;
        int* rowStart = _sparseImages!.RowStart.Pointer + tile * Tile;
        int* offsets = _sparseImages.Offsets.Pointer;
        float* values = _sparseImages.Values.Pointer;
        SparseHiddenForward(s.A1, s.Rows, offsets, values, rowStart, _w1T.Pointer, _b1.Pointer, _hp, _hv);
        OutputForward(s.Z2, s.A1, _w2.Pointer, _b2.Pointer, _hp);
        Softmax(s.Z2, s.Z2, labels, valid, _measure, ref s.Correct, ref s.LossSum);
        OutputBackward(s.Z2, s.Dw2, s.Db2, s.Z2, labels, valid, s.A1, _hp);
        HiddenDelta(s.Dz1, s.Db1, s.Z2, _w2.Pointer, s.A1, _hp);
        SparseImages images = _sparseImages;
        SparseHiddenWeightGradient(s.Dw1, s.Rows, s.Dz1, offsets, values, rowStart,
            images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer, images.ColumnOffset.Pointer,
            images.TileColumnStart.Pointer[tile], images.TileColumnStart.Pointer[tile + 1], _pixelValues.Pointer,
            _hp, _hv);
    }

    // z1 = x w1^T / 255 + b1; a1 = relu(z1), over the non-zero pixels only
    //      entries (rows of the tile's Tile samples), w1T (784, Hv), b1 (Hv) -> rows (Tile, Hv) scratch, a1T (Hp, Tile)
    // Each sample's z1 row is accumulated in registers, one broadcast pixel value times the pixel's weight row per
    // entry, then biased and ReLU'd as vectors and transposed into the hidden-major a1T the output layer reads.
    // mirrors Reference.LinearForward + Reference.ReluForward (layer 1, non-zero pixels)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SparseHiddenForward(float* a1T, float* rows, int* offsets, float* values, int* rowStart,
        float* w1T, float* b1, int hp, int hv)
    {
        int w = TW.Count, vectors = hv / w;
        TVec scale = TW.Create(PixelScale);
        for (int s = 0; s < Tile; s++)
        {
            int* o = offsets + rowStart[s];
            float* x = values + rowStart[s];
            int count = rowStart[s + 1] - rowStart[s];
            float* z = rows + s * hv;
            if (vectors == 1) GatherRow1(z, o, x, count, w1T);
            else if (vectors == 2) GatherRow2(z, o, x, count, w1T);
            else if (vectors == 4) GatherRow4(z, o, x, count, w1T);
            else
                for (int v = 0; v < vectors; v += 8) GatherRow8(z + v * w, o, x, count, w1T + v * w);
            for (int v = 0; v < hv; v += w)
                TW.Store(z + v, TW.Max(TW.MultiplyAdd(TW.Load(z + v), scale, TW.Load(b1 + v)), TW.Zero));
        }
        for (int j = 0; j < hp; j++)
            for (int s = 0; s < Tile; s++) a1T[j * Tile + s] = rows[s * hv + j];
    }

    // z (W) = sum over the non-zeros of value * w1T row; 4 accumulators so the FMA chain does not wait on its latency
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow1(float* z, int* o, float* x, int count, float* w1T)
    {
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero;
        int i = 0;
        for (; i + 4 <= count; i += 4)
        {
            a0 = TW.MultiplyAdd(TW.Load(w1T + o[i]), TW.Create(x[i]), a0);
            a1 = TW.MultiplyAdd(TW.Load(w1T + o[i + 1]), TW.Create(x[i + 1]), a1);
            a2 = TW.MultiplyAdd(TW.Load(w1T + o[i + 2]), TW.Create(x[i + 2]), a2);
            a3 = TW.MultiplyAdd(TW.Load(w1T + o[i + 3]), TW.Create(x[i + 3]), a3);
        }
        for (; i < count; i++) a0 = TW.MultiplyAdd(TW.Load(w1T + o[i]), TW.Create(x[i]), a0);
        TW.Store(z, TW.Add(TW.Add(a0, a1), TW.Add(a2, a3)));
    }

    // z (2W): 2 vectors x 2 non-zeros in flight
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow2(float* z, int* o, float* x, int count, float* w1T)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, b0 = TW.Zero, b1 = TW.Zero;
        int i = 0;
        for (; i + 2 <= count; i += 2)
        {
            TVec v0 = TW.Create(x[i]), v1 = TW.Create(x[i + 1]);
            float* r0 = w1T + o[i], r1 = w1T + o[i + 1];
            a0 = TW.MultiplyAdd(TW.Load(r0), v0, a0); a1 = TW.MultiplyAdd(TW.Load(r0 + w), v0, a1);
            b0 = TW.MultiplyAdd(TW.Load(r1), v1, b0); b1 = TW.MultiplyAdd(TW.Load(r1 + w), v1, b1);
        }
        if (i < count)
        {
            TVec v0 = TW.Create(x[i]);
            float* r0 = w1T + o[i];
            a0 = TW.MultiplyAdd(TW.Load(r0), v0, a0); a1 = TW.MultiplyAdd(TW.Load(r0 + w), v0, a1);
        }
        TW.Store(z, TW.Add(a0, b0));
        TW.Store(z + w, TW.Add(a1, b1));
    }

    // z (4W): 4 vectors x 2 non-zeros in flight
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow4(float* z, int* o, float* x, int count, float* w1T)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, b0 = TW.Zero, b1 = TW.Zero, b2 = TW.Zero,
            b3 = TW.Zero;
        int i = 0;
        for (; i + 2 <= count; i += 2)
        {
            TVec v0 = TW.Create(x[i]), v1 = TW.Create(x[i + 1]);
            float* r0 = w1T + o[i], r1 = w1T + o[i + 1];
            a0 = TW.MultiplyAdd(TW.Load(r0), v0, a0); a1 = TW.MultiplyAdd(TW.Load(r0 + w), v0, a1);
            a2 = TW.MultiplyAdd(TW.Load(r0 + 2 * w), v0, a2); a3 = TW.MultiplyAdd(TW.Load(r0 + 3 * w), v0, a3);
            b0 = TW.MultiplyAdd(TW.Load(r1), v1, b0); b1 = TW.MultiplyAdd(TW.Load(r1 + w), v1, b1);
            b2 = TW.MultiplyAdd(TW.Load(r1 + 2 * w), v1, b2); b3 = TW.MultiplyAdd(TW.Load(r1 + 3 * w), v1, b3);
        }
        if (i < count)
        {
            TVec v0 = TW.Create(x[i]);
            float* r0 = w1T + o[i];
            a0 = TW.MultiplyAdd(TW.Load(r0), v0, a0); a1 = TW.MultiplyAdd(TW.Load(r0 + w), v0, a1);
            a2 = TW.MultiplyAdd(TW.Load(r0 + 2 * w), v0, a2); a3 = TW.MultiplyAdd(TW.Load(r0 + 3 * w), v0, a3);
        }
        TW.Store(z, TW.Add(a0, b0)); TW.Store(z + w, TW.Add(a1, b1));
        TW.Store(z + 2 * w, TW.Add(a2, b2)); TW.Store(z + 3 * w, TW.Add(a3, b3));
    }

    // z (8W) of a wider row: 8 independent accumulators are enough to cover the FMA latency
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow8(float* z, int* o, float* x, int count, float* w1T)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, a4 = TW.Zero, a5 = TW.Zero, a6 = TW.Zero,
            a7 = TW.Zero;
        for (int i = 0; i < count; i++)
        {
            TVec v = TW.Create(x[i]);
            float* r = w1T + o[i];
            a0 = TW.MultiplyAdd(TW.Load(r), v, a0); a1 = TW.MultiplyAdd(TW.Load(r + w), v, a1);
            a2 = TW.MultiplyAdd(TW.Load(r + 2 * w), v, a2); a3 = TW.MultiplyAdd(TW.Load(r + 3 * w), v, a3);
            a4 = TW.MultiplyAdd(TW.Load(r + 4 * w), v, a4); a5 = TW.MultiplyAdd(TW.Load(r + 5 * w), v, a5);
            a6 = TW.MultiplyAdd(TW.Load(r + 6 * w), v, a6); a7 = TW.MultiplyAdd(TW.Load(r + 7 * w), v, a7);
        }
        TW.Store(z, a0); TW.Store(z + w, a1); TW.Store(z + 2 * w, a2); TW.Store(z + 3 * w, a3);
        TW.Store(z + 4 * w, a4); TW.Store(z + 5 * w, a5); TW.Store(z + 6 * w, a6); TW.Store(z + 7 * w, a7);
    }

    // dw1 += dz1^T x over the non-zero pixels only
    //      dz1T (Hp, Tile), the tile's non-zeros -> rows (Tile, Hv) scratch, dw1T (784, Hv) partial
    // dz1 is transposed to sample-major rows first (Tile x Hv floats: 2 KB at H=10, 16 KB at H=128, in L1).
    // Rows of 4 or more vectors (CSC of pixel pairs): for each column of two adjacent pixels the tile's samples
    // that light either add value * dz1[s] for both pixels in registers, each dz1 vector loaded once for two FMAs,
    // and the two gradient rows are read and written once per tile. Rows of 1 or 2 vectors (H=10): each non-zero
    // of the CSR adds value * dz1[s] straight into its pixel's gradient row (a read-modify-write of one or two
    // vectors); the column walk's per-column overhead and index multiply cost more there than they save.
    // Both in a fixed order: deterministic. See docs/journal/sparse-training.md for the A/B.
    // mirrors Reference.LinearBackward (dw of layer 1, non-zero pixels)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SparseHiddenWeightGradient(float* dw1T, float* rows, float* dz1T, int* offsets, float* pixels,
        int* rowStart, uint* entries, int* entryStart, int* columnOffset, int firstColumn, int endColumn,
        float* valueTable, int hp, int hv)
    {
        int w = TW.Count, vectors = hv / w;
        ToSampleRows(rows, dz1T, hp, hv);
        if (vectors <= 2)
        {
            for (int s = 0; s < Tile; s++)
            {
                int* o = offsets + rowStart[s];
                float* x = pixels + rowStart[s];
                int count = rowStart[s + 1] - rowStart[s];
                if (vectors == 1) ScatterRow1(dw1T, rows + s * hv, o, x, count);
                else ScatterRow2(dw1T, rows + s * hv, o, x, count);
            }
            return;
        }
        for (int c = firstColumn; c < endColumn; c++)
        {
            uint* e = entries + entryStart[c];
            int count = entryStart[c + 1] - entryStart[c];
            float* d = dw1T + columnOffset[c];
            // 2 x 8 accumulators only with 32 vector registers; with 16, walks of 2 x 4 so nothing spills
            if (vectors == 4 || !ThirtyTwoVectorRegisters)
                for (int v = 0; v < vectors; v += 4)
                    PairColumnSum4(d + v * w, rows + v * w, e, count, valueTable, hv);
            else
                for (int v = 0; v < vectors; v += 8)
                    PairColumnSum8(d + v * w, rows + v * w, e, count, valueTable, hv);
        }
    }

    // dz1T (Hp, Tile) -> rows (Tile, Hv), the padding columns zero. 4 x 4 blocks transposed in registers: element
    // by element it took a seventh of the wide gradient's time (docs/journal/sparse-training.md).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ToSampleRows(float* rows, float* dz1T, int hp, int hv)
    {
        int j = 0;
        if (Sse.IsSupported)
            for (; j + 4 <= hp; j += 4)
                for (int s = 0; s < Tile; s += 4)
                {
                    float* src = dz1T + j * Tile + s, dst = rows + s * hv + j;
                    Vector128<float> r0 = Sse.LoadVector128(src), r1 = Sse.LoadVector128(src + Tile);
                    Vector128<float> r2 = Sse.LoadVector128(src + 2 * Tile), r3 = Sse.LoadVector128(src + 3 * Tile);
                    Vector128<float> t0 = Sse.UnpackLow(r0, r1), t1 = Sse.UnpackLow(r2, r3);   // samples s, s + 1
                    Vector128<float> t2 = Sse.UnpackHigh(r0, r1), t3 = Sse.UnpackHigh(r2, r3); // samples s + 2, s + 3
                    Sse.Store(dst, Sse.MoveLowToHigh(t0, t1));
                    Sse.Store(dst + hv, Sse.MoveHighToLow(t1, t0));
                    Sse.Store(dst + 2 * hv, Sse.MoveLowToHigh(t2, t3));
                    Sse.Store(dst + 3 * hv, Sse.MoveHighToLow(t3, t2));
                }
        for (; j < hp; j++)
            for (int s = 0; s < Tile; s++) rows[s * hv + j] = dz1T[j * Tile + s];
        for (int s = 0; s < Tile; s++)
            for (int k = hp; k < hv; k++) rows[s * hv + k] = 0;
    }

    // dw1T rows += value * g (W) for each of one sample's non-zeros
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScatterRow1(float* dw1T, float* g, int* o, float* x, int count)
    {
        TVec g0 = TW.Load(g);
        for (int i = 0; i < count; i++)
        {
            float* r = dw1T + o[i];
            TW.Store(r, TW.MultiplyAdd(g0, TW.Create(x[i]), TW.Load(r)));
        }
    }

    // dw1T rows += value * g (2W) for each of one sample's non-zeros
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScatterRow2(float* dw1T, float* g, int* o, float* x, int count)
    {
        int w = TW.Count;
        TVec g0 = TW.Load(g), g1 = TW.Load(g + w);
        for (int i = 0; i < count; i++)
        {
            float* r = dw1T + o[i];
            TVec v = TW.Create(x[i]);
            TW.Store(r, TW.MultiplyAdd(v, g0, TW.Load(r)));
            TW.Store(r + w, TW.MultiplyAdd(v, g1, TW.Load(r + w)));
        }
    }

    // d and d + hv (4W each), one column of two pixels: 4 dz1 vectors per entry, each feeding 2 FMAs (8 chains)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairColumnSum4(float* d, float* rows, uint* e, int count, float* valueTable, int hv)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero; // first pixel
        TVec b0 = TW.Zero, b1 = TW.Zero, b2 = TW.Zero, b3 = TW.Zero; // second pixel
        for (int i = 0; i < count; i++)
        {
            uint x = e[i];
            TVec va = TW.Create(valueTable[x & 0xFF]), vb = TW.Create(valueTable[(x >> 8) & 0xFF]);
            float* r = rows + (nint)(x >> 16) * hv;
            TVec g = TW.Load(r);
            a0 = TW.MultiplyAdd(g, va, a0); b0 = TW.MultiplyAdd(g, vb, b0);
            g = TW.Load(r + w);
            a1 = TW.MultiplyAdd(g, va, a1); b1 = TW.MultiplyAdd(g, vb, b1);
            g = TW.Load(r + 2 * w);
            a2 = TW.MultiplyAdd(g, va, a2); b2 = TW.MultiplyAdd(g, vb, b2);
            g = TW.Load(r + 3 * w);
            a3 = TW.MultiplyAdd(g, va, a3); b3 = TW.MultiplyAdd(g, vb, b3);
        }
        AddTo(d, a0, a1, a2, a3);
        AddTo(d + hv, b0, b1, b2, b3);
    }

    // d and d + hv (8W each), one column of two pixels: 8 dz1 vectors per entry, each feeding 2 FMAs (16 chains,
    // with the loaded vector and the two broadcasts 19 registers: EVEX only)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairColumnSum8(float* d, float* rows, uint* e, int count, float* valueTable, int hv)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, a4 = TW.Zero, a5 = TW.Zero, a6 = TW.Zero,
            a7 = TW.Zero; // first pixel
        TVec b0 = TW.Zero, b1 = TW.Zero, b2 = TW.Zero, b3 = TW.Zero, b4 = TW.Zero, b5 = TW.Zero, b6 = TW.Zero,
            b7 = TW.Zero; // second pixel
        for (int i = 0; i < count; i++)
        {
            uint x = e[i];
            TVec va = TW.Create(valueTable[x & 0xFF]), vb = TW.Create(valueTable[(x >> 8) & 0xFF]);
            float* r = rows + (nint)(x >> 16) * hv;
            TVec g = TW.Load(r);
            a0 = TW.MultiplyAdd(g, va, a0); b0 = TW.MultiplyAdd(g, vb, b0);
            g = TW.Load(r + w);
            a1 = TW.MultiplyAdd(g, va, a1); b1 = TW.MultiplyAdd(g, vb, b1);
            g = TW.Load(r + 2 * w);
            a2 = TW.MultiplyAdd(g, va, a2); b2 = TW.MultiplyAdd(g, vb, b2);
            g = TW.Load(r + 3 * w);
            a3 = TW.MultiplyAdd(g, va, a3); b3 = TW.MultiplyAdd(g, vb, b3);
            g = TW.Load(r + 4 * w);
            a4 = TW.MultiplyAdd(g, va, a4); b4 = TW.MultiplyAdd(g, vb, b4);
            g = TW.Load(r + 5 * w);
            a5 = TW.MultiplyAdd(g, va, a5); b5 = TW.MultiplyAdd(g, vb, b5);
            g = TW.Load(r + 6 * w);
            a6 = TW.MultiplyAdd(g, va, a6); b6 = TW.MultiplyAdd(g, vb, b6);
            g = TW.Load(r + 7 * w);
            a7 = TW.MultiplyAdd(g, va, a7); b7 = TW.MultiplyAdd(g, vb, b7);
        }
        AddTo(d, a0, a1, a2, a3);
        AddTo(d + 4 * w, a4, a5, a6, a7);
        AddTo(d + hv, b0, b1, b2, b3);
        AddTo(d + hv + 4 * w, b4, b5, b6, b7);
    }

    // d (4W) += s0..s3
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo(float* d, TVec s0, TVec s1, TVec s2, TVec s3)
    {
        int w = TW.Count;
        TW.Store(d, TW.Add(TW.Load(d), s0)); TW.Store(d + w, TW.Add(TW.Load(d + w), s1));
        TW.Store(d + 2 * w, TW.Add(TW.Load(d + 2 * w), s2)); TW.Store(d + 3 * w, TW.Add(TW.Load(d + 3 * w), s3));
    }
}

/// <summary>The layer-1 kernels of the fused path.</summary>
internal enum Layer1Kernel
{
    Dense,

    /// <summary>Each sample's non-zero pixels (<see cref="SparseImages"/>), hidden units across the lanes.</summary>
    Rows,

    /// <summary>Blocks of samples across the lanes, each keeping its non-zero pixel columns
    /// (<see cref="PixelBlocks"/>).</summary>
    SampleBlocks,

    /// <summary>For wider hidden layers: the sample blocks' forward, the rows' weight gradient (in the blocks'
    /// sample order).</summary>
    SampleBlocksForward,
}

using System.Runtime.CompilerServices;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The sparse layer-1 kernels: the same fused tile pipeline, but HiddenForward and the weight gradient of
/// HiddenBackward visit only the non-zero pixels of each sample (<see cref="SparseImages"/>), and layer 1's
/// weights are kept pixel-major, w1T (784, Hv), so one non-zero pixel is one broadcast times Hv/W vectors.
/// Hv is Hp rounded up to 1, 2 or 4 vectors or a multiple of 8 (<see cref="SparseRowWidth"/>); the padding columns
/// stay zero. See docs/cpu-backends.md ("Sparse layer 1").
/// </summary>
internal sealed unsafe partial class SimdBackend<TW, TVec>
{
    /// <summary>
    /// How much more a sparse lane costs than a dense one (index decode, the broadcast, the read-modify-write of
    /// the gradient rows, the transposes around the kernels). Auto picks sparse when density x Hv / Hp x this is
    /// below 1. See docs/journal/sparse-training.md for the measurement.
    /// </summary>
    internal const double SparseLaneCost = 2.0;

    private readonly int _hv;                  // floats per pixel row of w1T, dw1T and the (Tile, Hv) row buffers
    private readonly NativeBuffer<float> _w1T, _dw1T; // (784, Hv): layer 1 pixel-major, for the sparse kernels
    private readonly NativeBuffer<float> _pixelValues = PixelValueTable();
    private SparseImages? _sparseImages;
    private bool _sparse;        // the sparse kernels run, and _w1T holds the current weights
    private bool _denseW1Stale;  // _w1 lags behind _w1T (sparse steps since the last sync)

    public KernelChoice? KernelChoice { get; private set; }

    /// <summary>The floats 0..255, so that a pixel byte becomes a broadcast from memory (no conversion on the FP ports).</summary>
    private static NativeBuffer<float> PixelValueTable()
    {
        var table = new NativeBuffer<float>(256);
        for (int v = 0; v < 256; v++) table.Span[v] = v;
        return table;
    }

    /// <summary>Hp rounded up to 1, 2 or 4 vectors, or to a multiple of 8 (the register blocks of the row kernels).</summary>
    internal static int SparseRowWidth(int hp)
    {
        int w = TW.Count, vectors = (hp + w - 1) / w;
        vectors = vectors <= 2 ? vectors : vectors <= 4 ? 4 : (vectors + 7) & ~7;
        return vectors * w;
    }

    /// <summary>Dense or sparse, and why: sparse when its estimated lane work is below the dense kernels'.</summary>
    internal static (bool Sparse, string Reason) DecideKernel(KernelMode mode, double density, int hp, int hv)
    {
        double ratio = density * hv / hp * SparseLaneCost;
        string measured = $"{density:P1} of the training pixels are non-zero; sparse work estimated at {ratio:F2}x dense " +
            $"({hv} lanes per non-zero pixel against {hp} per pixel, x{SparseLaneCost} per sparse lane)";
        return mode switch
        {
            KernelMode.Dense => (false, $"forced by --kernel dense ({measured})"),
            KernelMode.Sparse => (true, $"forced by --kernel sparse ({measured})"),
            _ => ratio < 1 ? (true, $"auto: {measured}") : (false, $"auto: {measured}"),
        };
    }

    private void ChooseKernel(LabeledImages train)
    {
        double density = KernelChoice.MeasureDensity(train.Pixels);
        (bool sparse, string reason) = DecideKernel(_kernelMode, density, _hp, _hv);
        if (sparse)
        {
            _sparseImages = SparseImages.Build(train.Pixels, _n, _tiles * Tile, _hv);
            TransposeW1ToPixelMajor();
        }
        _sparse = sparse;
        KernelChoice = new KernelChoice(sparse ? KernelMode.Sparse : KernelMode.Dense, reason, density,
            Core.KernelChoice.UsefulFlops(_n, _h, density));
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

    /// <summary>Brings _w1 up to date with _w1T after sparse steps (Predict, GetWeights and a new Upload read _w1).</summary>
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
        uint* entries = _sparseImages.Entries.Pointer;
        SparseHiddenForward(s.A1, s.Rows, entries, rowStart, _w1T.Pointer, _b1.Pointer, _pixelValues.Pointer, _hp, _hv);
        OutputForward(s.Z2, s.A1, _w2.Pointer, _b2.Pointer, _hp);
        Softmax(s.Z2, s.Z2, labels, valid, _measure, ref s.Correct, ref s.LossSum);
        OutputBackward(s.Z2, s.Dw2, s.Db2, s.Z2, labels, valid, s.A1, _hp);
        HiddenDelta(s.Dz1, s.Db1, s.Z2, _w2.Pointer, s.A1, _hp);
        SparseHiddenWeightGradient(s.Dw1, s.Rows, s.Dz1, entries, rowStart, _pixelValues.Pointer, _hp, _hv);
    }

    // z1 = x w1^T / 255 + b1; a1 = relu(z1), over the non-zero pixels only
    //      entries (rows of the tile's Tile samples), w1T (784, Hv), b1 (Hv) -> rows (Tile, Hv) scratch, a1T (Hp, Tile)
    // Each sample's z1 row is accumulated in registers, one broadcast pixel value times the pixel's weight row per
    // entry, then biased and ReLU'd as vectors and transposed into the hidden-major a1T the output layer reads.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SparseHiddenForward(float* a1T, float* rows, uint* entries, int* rowStart, float* w1T, float* b1,
        float* values, int hp, int hv)
    {
        int w = TW.Count, vectors = hv / w;
        TVec scale = TW.Create(PixelScale);
        for (int s = 0; s < Tile; s++)
        {
            uint* e = entries + rowStart[s];
            int count = rowStart[s + 1] - rowStart[s];
            float* z = rows + s * hv;
            if (vectors == 1) GatherRow1(z, e, count, w1T, values);
            else if (vectors == 2) GatherRow2(z, e, count, w1T, values);
            else if (vectors == 4) GatherRow4(z, e, count, w1T, values);
            else
                for (int v = 0; v < vectors; v += 8) GatherRow8(z + v * w, e, count, w1T + v * w, values);
            for (int v = 0; v < hv; v += w)
                TW.Store(z + v, TW.Max(TW.MultiplyAdd(TW.Load(z + v), scale, TW.Load(b1 + v)), TW.Zero));
        }
        for (int j = 0; j < hp; j++)
            for (int s = 0; s < Tile; s++) a1T[j * Tile + s] = rows[s * hv + j];
    }

    // z (W) = sum over entries of value * w1T row; 4 accumulators so the FMA chain does not wait on its latency
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow1(float* z, uint* e, int count, float* w1T, float* values)
    {
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero;
        int i = 0;
        for (; i + 4 <= count; i += 4)
        {
            uint e0 = e[i], e1 = e[i + 1], e2 = e[i + 2], e3 = e[i + 3];
            a0 = TW.MultiplyAdd(TW.Load(w1T + (e0 >> 8)), TW.Create(values[e0 & 0xFF]), a0);
            a1 = TW.MultiplyAdd(TW.Load(w1T + (e1 >> 8)), TW.Create(values[e1 & 0xFF]), a1);
            a2 = TW.MultiplyAdd(TW.Load(w1T + (e2 >> 8)), TW.Create(values[e2 & 0xFF]), a2);
            a3 = TW.MultiplyAdd(TW.Load(w1T + (e3 >> 8)), TW.Create(values[e3 & 0xFF]), a3);
        }
        for (; i < count; i++) a0 = TW.MultiplyAdd(TW.Create(values[e[i] & 0xFF]), TW.Load(w1T + (e[i] >> 8)), a0);
        TW.Store(z, TW.Add(TW.Add(a0, a1), TW.Add(a2, a3)));
    }

    // z (2W): 2 vectors x 2 entries in flight
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow2(float* z, uint* e, int count, float* w1T, float* values)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, b0 = TW.Zero, b1 = TW.Zero;
        int i = 0;
        for (; i + 2 <= count; i += 2)
        {
            uint e0 = e[i], e1 = e[i + 1];
            TVec v0 = TW.Create(values[e0 & 0xFF]), v1 = TW.Create(values[e1 & 0xFF]);
            float* r0 = w1T + (e0 >> 8), r1 = w1T + (e1 >> 8);
            a0 = TW.MultiplyAdd(v0, TW.Load(r0), a0); a1 = TW.MultiplyAdd(v0, TW.Load(r0 + w), a1);
            b0 = TW.MultiplyAdd(v1, TW.Load(r1), b0); b1 = TW.MultiplyAdd(v1, TW.Load(r1 + w), b1);
        }
        if (i < count)
        {
            TVec v0 = TW.Create(values[e[i] & 0xFF]);
            float* r0 = w1T + (e[i] >> 8);
            a0 = TW.MultiplyAdd(v0, TW.Load(r0), a0); a1 = TW.MultiplyAdd(v0, TW.Load(r0 + w), a1);
        }
        TW.Store(z, TW.Add(a0, b0));
        TW.Store(z + w, TW.Add(a1, b1));
    }

    // z (4W): 4 vectors x 2 entries in flight
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow4(float* z, uint* e, int count, float* w1T, float* values)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, b0 = TW.Zero, b1 = TW.Zero, b2 = TW.Zero, b3 = TW.Zero;
        int i = 0;
        for (; i + 2 <= count; i += 2)
        {
            uint e0 = e[i], e1 = e[i + 1];
            TVec v0 = TW.Create(values[e0 & 0xFF]), v1 = TW.Create(values[e1 & 0xFF]);
            float* r0 = w1T + (e0 >> 8), r1 = w1T + (e1 >> 8);
            a0 = TW.MultiplyAdd(v0, TW.Load(r0), a0); a1 = TW.MultiplyAdd(v0, TW.Load(r0 + w), a1);
            a2 = TW.MultiplyAdd(v0, TW.Load(r0 + 2 * w), a2); a3 = TW.MultiplyAdd(v0, TW.Load(r0 + 3 * w), a3);
            b0 = TW.MultiplyAdd(v1, TW.Load(r1), b0); b1 = TW.MultiplyAdd(v1, TW.Load(r1 + w), b1);
            b2 = TW.MultiplyAdd(v1, TW.Load(r1 + 2 * w), b2); b3 = TW.MultiplyAdd(v1, TW.Load(r1 + 3 * w), b3);
        }
        if (i < count)
        {
            TVec v0 = TW.Create(values[e[i] & 0xFF]);
            float* r0 = w1T + (e[i] >> 8);
            a0 = TW.MultiplyAdd(v0, TW.Load(r0), a0); a1 = TW.MultiplyAdd(v0, TW.Load(r0 + w), a1);
            a2 = TW.MultiplyAdd(v0, TW.Load(r0 + 2 * w), a2); a3 = TW.MultiplyAdd(v0, TW.Load(r0 + 3 * w), a3);
        }
        TW.Store(z, TW.Add(a0, b0)); TW.Store(z + w, TW.Add(a1, b1));
        TW.Store(z + 2 * w, TW.Add(a2, b2)); TW.Store(z + 3 * w, TW.Add(a3, b3));
    }

    // z (8W) of a wider row: 8 independent accumulators are enough to cover the FMA latency
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatherRow8(float* z, uint* e, int count, float* w1T, float* values)
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, a4 = TW.Zero, a5 = TW.Zero, a6 = TW.Zero, a7 = TW.Zero;
        for (int i = 0; i < count; i++)
        {
            uint e0 = e[i];
            TVec v = TW.Create(values[e0 & 0xFF]);
            float* r = w1T + (e0 >> 8);
            a0 = TW.MultiplyAdd(v, TW.Load(r), a0); a1 = TW.MultiplyAdd(v, TW.Load(r + w), a1);
            a2 = TW.MultiplyAdd(v, TW.Load(r + 2 * w), a2); a3 = TW.MultiplyAdd(v, TW.Load(r + 3 * w), a3);
            a4 = TW.MultiplyAdd(v, TW.Load(r + 4 * w), a4); a5 = TW.MultiplyAdd(v, TW.Load(r + 5 * w), a5);
            a6 = TW.MultiplyAdd(v, TW.Load(r + 6 * w), a6); a7 = TW.MultiplyAdd(v, TW.Load(r + 7 * w), a7);
        }
        TW.Store(z, a0); TW.Store(z + w, a1); TW.Store(z + 2 * w, a2); TW.Store(z + 3 * w, a3);
        TW.Store(z + 4 * w, a4); TW.Store(z + 5 * w, a5); TW.Store(z + 6 * w, a6); TW.Store(z + 7 * w, a7);
    }

    // dw1 += dz1^T x over the non-zero pixels only
    //      dz1T (Hp, Tile), entries (rows of the tile's samples) -> rows (Tile, Hv) scratch, dw1T (784, Hv) partial
    // dz1 is transposed to sample-major rows first; then each entry of sample s adds value * dz1[s] to its pixel's
    // gradient row, with dz1[s] held in registers. The rows a sample touches are distinct, so the read-modify-writes
    // of one sample do not wait on each other; samples are added in order, so the sums are deterministic.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SparseHiddenWeightGradient(float* dw1T, float* rows, float* dz1T, uint* entries, int* rowStart,
        float* values, int hp, int hv)
    {
        int w = TW.Count, vectors = hv / w;
        for (int s = 0; s < Tile; s++)
        {
            float* g = rows + s * hv;
            for (int j = 0; j < hp; j++) g[j] = dz1T[j * Tile + s];
            for (int j = hp; j < hv; j++) g[j] = 0;
        }
        for (int s = 0; s < Tile; s++)
        {
            uint* e = entries + rowStart[s];
            int count = rowStart[s + 1] - rowStart[s];
            float* g = rows + s * hv;
            if (vectors == 1) ScatterRow1(dw1T, g, e, count, values);
            else if (vectors == 2) ScatterRow2(dw1T, g, e, count, values);
            else if (vectors == 4) ScatterRow4(dw1T, g, e, count, values);
            else
                for (int v = 0; v < vectors; v += 8) ScatterRow8(dw1T + v * w, g + v * w, e, count, values);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScatterRow1(float* dw1T, float* g, uint* e, int count, float* values)
    {
        TVec g0 = TW.Load(g);
        for (int i = 0; i < count; i++)
        {
            uint e0 = e[i];
            float* r = dw1T + (e0 >> 8);
            TW.Store(r, TW.MultiplyAdd(TW.Create(values[e0 & 0xFF]), g0, TW.Load(r)));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScatterRow2(float* dw1T, float* g, uint* e, int count, float* values)
    {
        int w = TW.Count;
        TVec g0 = TW.Load(g), g1 = TW.Load(g + w);
        for (int i = 0; i < count; i++)
        {
            uint e0 = e[i];
            float* r = dw1T + (e0 >> 8);
            TVec v = TW.Create(values[e0 & 0xFF]);
            TW.Store(r, TW.MultiplyAdd(v, g0, TW.Load(r)));
            TW.Store(r + w, TW.MultiplyAdd(v, g1, TW.Load(r + w)));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScatterRow4(float* dw1T, float* g, uint* e, int count, float* values)
    {
        int w = TW.Count;
        TVec g0 = TW.Load(g), g1 = TW.Load(g + w), g2 = TW.Load(g + 2 * w), g3 = TW.Load(g + 3 * w);
        for (int i = 0; i < count; i++)
        {
            uint e0 = e[i];
            float* r = dw1T + (e0 >> 8);
            TVec v = TW.Create(values[e0 & 0xFF]);
            TW.Store(r, TW.MultiplyAdd(v, g0, TW.Load(r)));
            TW.Store(r + w, TW.MultiplyAdd(v, g1, TW.Load(r + w)));
            TW.Store(r + 2 * w, TW.MultiplyAdd(v, g2, TW.Load(r + 2 * w)));
            TW.Store(r + 3 * w, TW.MultiplyAdd(v, g3, TW.Load(r + 3 * w)));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScatterRow8(float* dw1T, float* g, uint* e, int count, float* values)
    {
        int w = TW.Count;
        TVec g0 = TW.Load(g), g1 = TW.Load(g + w), g2 = TW.Load(g + 2 * w), g3 = TW.Load(g + 3 * w);
        TVec g4 = TW.Load(g + 4 * w), g5 = TW.Load(g + 5 * w), g6 = TW.Load(g + 6 * w), g7 = TW.Load(g + 7 * w);
        for (int i = 0; i < count; i++)
        {
            uint e0 = e[i];
            float* r = dw1T + (e0 >> 8);
            TVec v = TW.Create(values[e0 & 0xFF]);
            TW.Store(r, TW.MultiplyAdd(v, g0, TW.Load(r)));
            TW.Store(r + w, TW.MultiplyAdd(v, g1, TW.Load(r + w)));
            TW.Store(r + 2 * w, TW.MultiplyAdd(v, g2, TW.Load(r + 2 * w)));
            TW.Store(r + 3 * w, TW.MultiplyAdd(v, g3, TW.Load(r + 3 * w)));
            TW.Store(r + 4 * w, TW.MultiplyAdd(v, g4, TW.Load(r + 4 * w)));
            TW.Store(r + 5 * w, TW.MultiplyAdd(v, g5, TW.Load(r + 5 * w)));
            TW.Store(r + 6 * w, TW.MultiplyAdd(v, g6, TW.Load(r + 6 * w)));
            TW.Store(r + 7 * w, TW.MultiplyAdd(v, g7, TW.Load(r + 7 * w)));
        }
    }
}

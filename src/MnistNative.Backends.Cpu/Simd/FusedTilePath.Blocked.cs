using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The sample-blocked sparse layer-1 kernels (<see cref="PixelBlocks"/>): the samples are reordered at upload so that
/// blocks of one vector's width (8 or 16) share non-zero pixels, and a block keeps only the pixel columns that are
/// non-zero in one of its samples. The block's samples lie across the lanes: a kept pixel column is one widened vector
/// of bytes, and each hidden unit's weight an FMA's broadcast memory operand (at 256 bits a pair of units per FMA,
/// <see cref="UnitPairForward"/>), so every FMA does whole-vector work, where the row kernels
/// (<see cref="SparseHiddenForward"/>) use Hp of Hv lanes and need three loads per non-zero.
///
/// For narrow hidden layers a step is two passes over the workers. Pass one runs the tile pipeline with
/// <see cref="BlockedHiddenForward"/> as layer 1's forward and, instead of the weight gradient, writes each block's
/// dz1 (<see cref="_blockDz1"/>). Pass two computes dw1 per column of two adjacent pixels
/// (<see cref="BlockedWeightGradient"/>), the column's blocks in order with the sums in registers, so each gradient
/// row is written once, complete, by one worker: no partials to reduce, and the result is bitwise the same for every
/// thread count. Wider layers take the blocks' forward and the rows' gradient in one pass
/// (<see cref="BlockedTrainTile"/>).
/// </summary>
internal sealed unsafe partial class FusedTilePath<TW, TVec>
{
    private static int BlockSize => TW.Count;
    private static int BlocksPerTile => Tile / TW.Count;

    /// <summary>
    /// Whether the register-blocked walks may keep more accumulators: EVEX (AVX-512VL) gives 32 vector registers at
    /// both widths, where a plain AVX2 CPU has 16. Every walk sizes its register block from this one answer.
    /// </summary>
    internal static bool ThirtyTwoVectorRegisters => Avx512F.VL.IsSupported;

    /// <summary>Accumulators per walk over a block's entries: 16 with 32 vector registers, else 10 (with the widened
    /// pixels and a broadcast, the 16 registers of an AVX2 CPU).</summary>
    internal static int UnitsPerForwardWalk => ThirtyTwoVectorRegisters ? 16 : 10;

    /// <summary>
    /// Units per walk over a column's entries, each with an accumulator for both pixels: 10 (20 accumulators) where
    /// there are 32 vector registers, else 5. More units per walk widen each entry's pixels fewer times.
    /// </summary>
    internal static int UnitsPerGradientWalk => ThirtyTwoVectorRegisters ? 10 : 5;

    /// <summary>
    /// The blocks' weight gradient serves hidden layers up to this many units: its dz1 (Hp vectors per block) must
    /// stay in L2; wider layers take the rows' gradient (docs/journal/sparse-training.md).
    /// </summary>
    internal const int BlockedMaxHidden = 32;

    /// <summary>
    /// How much a blocked FMA costs against a dense one (the widening of each block's bytes, the index loads, the
    /// second pass). Auto picks the blocked kernels when the blocks' kept column fraction times this is below 1.
    /// </summary>
    internal const double BlockedLaneCost = 1.5;

    private PixelBlocks? _blocks;
    private bool _gradientByBlocks; // pass two computes dw1 from the blocks; else the rows, per tile
    private NativeBuffer<float>? _blockLabels, _blockValid; // (nPad), in the blocks' sample order
    private NativeBuffer<float>? _blockDz1;                 // (blocks, Hp, Count): each block's dz1
    private int[] _columnShare = [];                         // worker w computes columns [share[w], share[w + 1])
    private int[] _tileShare = [];                           // worker w runs tiles [share[w], share[w + 1])
    private readonly Action<int> _gradientWork;

    /// <summary>Whether the blocked kernels would serve this shape (see <see cref="BlockedMaxHidden"/>).</summary>
    internal static bool BlockedShape(int hp) => hp <= BlockedMaxHidden;

    /// <summary>
    /// Whether building the blocks can pay: not when dense is forced, nor (auto) when most pixels are non-zero, since a
    /// block keeps a column whenever one of its samples has it (the ordering takes ~1 ms per 200 images).
    /// </summary>
    private static bool WorthBlocking(KernelMode mode, double density) =>
        mode == KernelMode.Sparse || (mode == KernelMode.Auto && density < 0.5);

    /// <summary>Keeps the blocks, with the reordered labels and the workers' shares of tiles (and columns).</summary>
    /// <param name="gradientByBlocks">Whether the weight gradient also runs on the blocks (pass two); else the rows
    /// kernel computes it per tile (<see cref="BlockedTrainTile"/>), in the blocks' sample order.</param>
    private void UploadBlocks(LabeledImages train, PixelBlocks blocks, bool gradientByBlocks)
    {
        _blocks = blocks;
        _gradientByBlocks = gradientByBlocks;
        int rows = blocks.Rows;
        _blockLabels = new NativeBuffer<float>(rows);
        _blockValid = new NativeBuffer<float>(rows);
        for (int i = 0; i < rows; i++)
        {
            int image = blocks.Order.Pointer[i];
            _blockLabels.Span[i] = image < 0 ? 0 : train.Labels[image];
            _blockValid.Span[i] = image < 0 ? 0 : 1;
        }
        if (gradientByBlocks) _blockDz1 = new NativeBuffer<float>(blocks.BlockCount * _hp * TW.Count);
        // equal shares of the entries (the work of a tile or a pixel is about its entry count; the samples are in
        // label order, and a block of ones keeps half the columns of a block of zeros), fixed for a thread count
        int* columnStart = blocks.ColumnStart.Pointer, blockStart = blocks.BlockStart.Pointer;
        _tileShare = EqualShares(_tiles, t => blockStart[t * BlocksPerTile], blocks.Entries);
        if (gradientByBlocks)
            _columnShare = EqualShares(blocks.Columns, c => columnStart[c], columnStart[blocks.Columns]);
        _dw1T.Clear(); // the blocked gradient writes the Hp units of each row; the padding stays zero
    }

    // share[w] = the first item whose cumulative work reaches w / workers of the total
    private int[] EqualShares(int items, Func<int, long> workBefore, long total)
    {
        int workers = _scratch.Length;
        var share = new int[workers + 1];
        for (int w = 1; w < workers; w++)
        {
            int i = share[w - 1];
            while (i < items && workBefore(i) < total * w / workers) i++;
            share[w] = i;
        }
        share[workers] = items;
        return share;
    }

    private void DisposeBlocks()
    {
        _blocks?.Dispose(); _blockLabels?.Dispose(); _blockValid?.Dispose(); _blockDz1?.Dispose();
        _blocks = null; _blockLabels = null; _blockValid = null; _blockDz1 = null;
        _gradientByBlocks = false;
    }

    /// <summary>
    /// One tile of the blocks' order: every phase, layer 1's forward on the blocks. Its weight gradient: for narrow
    /// hidden layers dz1 goes to <see cref="_blockDz1"/> for pass two; for wider ones the rows' kernel runs here, on
    /// <see cref="SparseImages"/> built in the blocks' order (the blocks' forward broadcasts the weights from L1,
    /// where the rows' forward reads a w1T row of Hv floats per non-zero pixel from L2).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BlockedTrainTile(WorkerScratch s, int tile, bool timed)
    {
        float* labels = _blockLabels!.Pointer + tile * Tile;
        float* valid = _blockValid!.Pointer + tile * Tile;
        long[] ticks = s.PhaseTicks;
        long t0 = timed ? Profiler.Now() : 0;
        BlockedHiddenForward(s.A1, _blocks!, tile * BlocksPerTile, _w1T.Pointer, _b1.Pointer, _hp, _hv);
        long t1 = timed ? Profiler.Now() : 0;
        OutputForward(s.Z2, s.A1, _w2.Pointer, _b2.Pointer, _hp);
        long t2 = timed ? Profiler.Now() : 0;
        Softmax(s.Z2, s.Z2, labels, valid, _measure, ref s.Correct, ref s.LossSum);
        long t3 = timed ? Profiler.Now() : 0;
        OutputBackward(s.Z2, s.Dw2, s.Db2, s.Z2, labels, valid, s.A1, _hp);
        long t4 = timed ? Profiler.Now() : 0;
        HiddenDelta(s.Dz1, s.Db1, s.Z2, _w2.Pointer, s.A1, _hp);
        if (_gradientByBlocks)
            ToBlocks(_blockDz1!.Pointer + (long)tile * BlocksPerTile * _hp * TW.Count, s.Dz1, _hp);
        else
        {
            SparseImages images = _sparseImages!;
            SparseHiddenWeightGradient(s.Dw1, s.Rows, s.Dz1, images.Offsets.Pointer, images.Values.Pointer,
                images.RowStart.Pointer + tile * Tile, images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer,
                images.ColumnOffset.Pointer, images.TileColumnStart.Pointer[tile],
                images.TileColumnStart.Pointer[tile + 1], _pixelValues.Pointer, _hp, _hv);
        }
        if (!timed) return;
        long t5 = Profiler.Now();
        ticks[0] += t1 - t0; ticks[1] += t2 - t1; ticks[2] += t3 - t2; ticks[3] += t4 - t3; ticks[4] += t5 - t4;
    }

    /// <summary>Pass two: one worker's columns (pixel pairs) of dw1 = dz1 xᵀ / (255 n), each column's blocks in
    /// order.</summary>
    private void BlockedWeightGradientWork(int worker)
    {
        long t0 = _timed ? Profiler.Now() : 0;
        PixelBlocks blocks = _blocks!;
        float scale = (float)(1.0 / (255.0 * _n));
        int* columnStart = blocks.ColumnStart.Pointer;
        for (int c = _columnShare[worker]; c < _columnShare[worker + 1]; c++)
            BlockedWeightGradient(_dw1T.Pointer + 2 * c * _hv, _hv, blocks.ColumnBlock.Pointer + columnStart[c],
                blocks.ColumnBytes.Pointer + (long)columnStart[c] * 2 * BlockSize, columnStart[c + 1] - columnStart[c],
                _blockDz1!.Pointer, _hp, scale, UnitsPerGradientWalk);
        if (_timed) _scratch[worker].PhaseTicks[4] += Profiler.Now() - t0;
    }

    // z1 = x w1^T / 255 + b1; a1 = relu(z1) for the tile's blocks, over the blocks' kept pixel columns
    //      blocks' entries, w1T (784, Hv), b1 (Hv) -> a1T (Hp, Tile)
    // mirrors Reference.LinearForward + Reference.ReluForward (layer 1, the blocks' non-zero pixel columns)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void BlockedHiddenForward(float* a1T, PixelBlocks blocks, int firstBlock, float* w1T, float* b1,
        int hp, int hv)
    {
        int groups = hp;
        for (int i = 0; i < BlocksPerTile; i++)
        {
            int b = firstBlock + i, start = blocks.BlockStart.Pointer[b];
            int count = blocks.BlockStart.Pointer[b + 1] - start;
            ushort* columns = blocks.BlockColumn.Pointer + start;
            byte* bytes = blocks.BlockBytes.Pointer + (long)start * BlockSize;
            if (typeof(TVec) == typeof(Vector256<float>))
            {
                UnitPairForward(a1T + i * BlockSize, columns, bytes, count, w1T, b1, hp, hv);
                continue;
            }
            for (int g = 0; g < groups; g += UnitsPerForwardWalk)
            {
                int n = Math.Min(UnitsPerForwardWalk, groups - g);
                float* a = a1T + i * BlockSize;
                switch (n)
                {
                    case 1: ForwardWalk<Groups1>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 2: ForwardWalk<Groups2>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 3: ForwardWalk<Groups3>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 4: ForwardWalk<Groups4>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 5: ForwardWalk<Groups5>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 6: ForwardWalk<Groups6>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 7: ForwardWalk<Groups7>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 8: ForwardWalk<Groups8>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 9: ForwardWalk<Groups9>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 10: ForwardWalk<Groups10>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 11: ForwardWalk<Groups11>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 12: ForwardWalk<Groups12>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 13: ForwardWalk<Groups13>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 14: ForwardWalk<Groups14>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    case 15: ForwardWalk<Groups15>(a, g, columns, bytes, count, w1T, hv, b1); break;
                    default: ForwardWalk<Groups16>(a, g, columns, bytes, count, w1T, hv, b1); break;
                }
            }
        }
    }

    // TG.Value groups from `first`: the block's entries once, one accumulator per group (the `if`s fold away in
    // each instantiation), then scale, bias and ReLU into a1T (row stride Tile, this block's 8 samples)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardWalk<TG>(float* a1T, int first, ushort* columns, byte* bytes, int count, float* w1T,
        int hv, float* b1) where TG : struct, IGroupCount
    {
        float* w = w1T + first;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, a4 = TW.Zero;
        TVec a5 = TW.Zero, a6 = TW.Zero, a7 = TW.Zero, a8 = TW.Zero, a9 = TW.Zero;
        TVec a10 = TW.Zero, a11 = TW.Zero, a12 = TW.Zero, a13 = TW.Zero, a14 = TW.Zero, a15 = TW.Zero;
        for (int e = 0; e < count; e++)
        {
            TVec x = TW.LoadBytes(bytes + e * BlockSize);
            float* wk = w + columns[e] * hv;
            a0 = TW.MultiplyAdd(TW.Create(wk[0]), x, a0);
            if (TG.Value > 1) a1 = TW.MultiplyAdd(TW.Create(wk[1]), x, a1);
            if (TG.Value > 2) a2 = TW.MultiplyAdd(TW.Create(wk[2]), x, a2);
            if (TG.Value > 3) a3 = TW.MultiplyAdd(TW.Create(wk[3]), x, a3);
            if (TG.Value > 4) a4 = TW.MultiplyAdd(TW.Create(wk[4]), x, a4);
            if (TG.Value > 5) a5 = TW.MultiplyAdd(TW.Create(wk[5]), x, a5);
            if (TG.Value > 6) a6 = TW.MultiplyAdd(TW.Create(wk[6]), x, a6);
            if (TG.Value > 7) a7 = TW.MultiplyAdd(TW.Create(wk[7]), x, a7);
            if (TG.Value > 8) a8 = TW.MultiplyAdd(TW.Create(wk[8]), x, a8);
            if (TG.Value > 9) a9 = TW.MultiplyAdd(TW.Create(wk[9]), x, a9);
            if (TG.Value > 10) a10 = TW.MultiplyAdd(TW.Create(wk[10]), x, a10);
            if (TG.Value > 11) a11 = TW.MultiplyAdd(TW.Create(wk[11]), x, a11);
            if (TG.Value > 12) a12 = TW.MultiplyAdd(TW.Create(wk[12]), x, a12);
            if (TG.Value > 13) a13 = TW.MultiplyAdd(TW.Create(wk[13]), x, a13);
            if (TG.Value > 14) a14 = TW.MultiplyAdd(TW.Create(wk[14]), x, a14);
            if (TG.Value > 15) a15 = TW.MultiplyAdd(TW.Create(wk[15]), x, a15);
        }
        StoreActivations(a1T, first, a0, b1);
        if (TG.Value > 1) StoreActivations(a1T, first + 1, a1, b1);
        if (TG.Value > 2) StoreActivations(a1T, first + 2, a2, b1);
        if (TG.Value > 3) StoreActivations(a1T, first + 3, a3, b1);
        if (TG.Value > 4) StoreActivations(a1T, first + 4, a4, b1);
        if (TG.Value > 5) StoreActivations(a1T, first + 5, a5, b1);
        if (TG.Value > 6) StoreActivations(a1T, first + 6, a6, b1);
        if (TG.Value > 7) StoreActivations(a1T, first + 7, a7, b1);
        if (TG.Value > 8) StoreActivations(a1T, first + 8, a8, b1);
        if (TG.Value > 9) StoreActivations(a1T, first + 9, a9, b1);
        if (TG.Value > 10) StoreActivations(a1T, first + 10, a10, b1);
        if (TG.Value > 11) StoreActivations(a1T, first + 11, a11, b1);
        if (TG.Value > 12) StoreActivations(a1T, first + 12, a12, b1);
        if (TG.Value > 13) StoreActivations(a1T, first + 13, a13, b1);
        if (TG.Value > 14) StoreActivations(a1T, first + 14, a14, b1);
        if (TG.Value > 15) StoreActivations(a1T, first + 15, a15, b1);
    }

    // The 256-bit forward of one block of 8: two hidden units per FMA. `vbroadcastsd` puts the pair (w_j, w_j+1) in
    // every lane pair and the block's samples are split into two vectors of four, each duplicated into lane pairs
    // (x0 x0 x1 x1 x2 x2 x3 x3), so a column costs one weight load per two units where the embedded broadcast costs
    // one per unit, and the loads, not the FMAs, bounded that walk (docs/journal/sparse-training.md). Each unit still
    // sums its entries in order with one FMA each: the same bits as ForwardWalk.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void UnitPairForward(float* a1T, ushort* columns, byte* bytes, int count, float* w1T, float* b1,
        int hp, int hv)
    {
        for (int j = 0; j < hp; j += 2 * UnitPairsPerWalk)
            switch (Math.Min(UnitPairsPerWalk, (hp - j) / 2))
            {
                case 1: UnitPairWalk<Groups1>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
                case 2: UnitPairWalk<Groups2>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
                case 3: UnitPairWalk<Groups3>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
                case 4: UnitPairWalk<Groups4>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
                case 5: UnitPairWalk<Groups5>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
                case 6: UnitPairWalk<Groups6>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
                case 7: UnitPairWalk<Groups7>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
                default: UnitPairWalk<Groups8>(a1T, j, columns, bytes, count, w1T, hv, b1); break;
            }
    }

    /// <summary>Unit pairs per walk of <see cref="UnitPairForward"/>: two accumulators each, plus four working
    /// registers: 8 pairs with 32 vector registers, else 5 (14 of AVX2's 16).</summary>
    private static int UnitPairsPerWalk => ThirtyTwoVectorRegisters ? 8 : 5;

    // TG.Value unit pairs from unit `first` (even): lo* hold samples 0-3, hi* samples 4-7, each as (unit, unit + 1)
    // lane pairs
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void UnitPairWalk<TG>(float* a1T, int first, ushort* columns, byte* bytes, int count, float* w1T,
        int hv, float* b1) where TG : struct, IGroupCount
    {
        Vector256<int> lowSamples = Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3);
        Vector256<int> highSamples = Vector256.Create(4, 4, 5, 5, 6, 6, 7, 7);
        Vector256<float> lo0 = default, lo1 = default, lo2 = default, lo3 = default, lo4 = default, lo5 = default,
            lo6 = default, lo7 = default;
        Vector256<float> hi0 = default, hi1 = default, hi2 = default, hi3 = default, hi4 = default, hi5 = default,
            hi6 = default, hi7 = default;
        float* w = w1T + first;
        for (int e = 0; e < count; e++)
        {
            Vector256<float> x = Width256.LoadBytes(bytes + e * 8);
            Vector256<float> xl = Avx2.PermuteVar8x32(x, lowSamples), xh = Avx2.PermuteVar8x32(x, highSamples);
            double* wk = (double*)(w + columns[e] * hv);
            Vector256<float> p = Avx.BroadcastScalarToVector256(wk).AsSingle();
            lo0 = Fma.MultiplyAdd(p, xl, lo0); hi0 = Fma.MultiplyAdd(p, xh, hi0);
            if (TG.Value > 1)
            {
                p = Avx.BroadcastScalarToVector256(wk + 1).AsSingle();
                lo1 = Fma.MultiplyAdd(p, xl, lo1); hi1 = Fma.MultiplyAdd(p, xh, hi1);
            }
            if (TG.Value > 2)
            {
                p = Avx.BroadcastScalarToVector256(wk + 2).AsSingle();
                lo2 = Fma.MultiplyAdd(p, xl, lo2); hi2 = Fma.MultiplyAdd(p, xh, hi2);
            }
            if (TG.Value > 3)
            {
                p = Avx.BroadcastScalarToVector256(wk + 3).AsSingle();
                lo3 = Fma.MultiplyAdd(p, xl, lo3); hi3 = Fma.MultiplyAdd(p, xh, hi3);
            }
            if (TG.Value > 4)
            {
                p = Avx.BroadcastScalarToVector256(wk + 4).AsSingle();
                lo4 = Fma.MultiplyAdd(p, xl, lo4); hi4 = Fma.MultiplyAdd(p, xh, hi4);
            }
            if (TG.Value > 5)
            {
                p = Avx.BroadcastScalarToVector256(wk + 5).AsSingle();
                lo5 = Fma.MultiplyAdd(p, xl, lo5); hi5 = Fma.MultiplyAdd(p, xh, hi5);
            }
            if (TG.Value > 6)
            {
                p = Avx.BroadcastScalarToVector256(wk + 6).AsSingle();
                lo6 = Fma.MultiplyAdd(p, xl, lo6); hi6 = Fma.MultiplyAdd(p, xh, hi6);
            }
            if (TG.Value > 7)
            {
                p = Avx.BroadcastScalarToVector256(wk + 7).AsSingle();
                lo7 = Fma.MultiplyAdd(p, xl, lo7); hi7 = Fma.MultiplyAdd(p, xh, hi7);
            }
        }
        StoreUnitPair(a1T, first, lo0, hi0, b1);
        if (TG.Value > 1) StoreUnitPair(a1T, first + 2, lo1, hi1, b1);
        if (TG.Value > 2) StoreUnitPair(a1T, first + 4, lo2, hi2, b1);
        if (TG.Value > 3) StoreUnitPair(a1T, first + 6, lo3, hi3, b1);
        if (TG.Value > 4) StoreUnitPair(a1T, first + 8, lo4, hi4, b1);
        if (TG.Value > 5) StoreUnitPair(a1T, first + 10, lo5, hi5, b1);
        if (TG.Value > 6) StoreUnitPair(a1T, first + 12, lo6, hi6, b1);
        if (TG.Value > 7) StoreUnitPair(a1T, first + 14, lo7, hi7, b1);
    }

    // units j and j + 1 from their lane pairs: the even lanes of lo and hi are unit j's samples (0 1 | 4 5 | 2 3 | 6 7
    // after the in-lane shuffle, put in order by a 64-bit permute), the odd lanes unit j + 1's
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreUnitPair(float* a1T, int j, Vector256<float> lo, Vector256<float> hi, float* b1)
    {
        Vector256<float> even = Avx.Shuffle(lo, hi, 0b10_00_10_00), odd = Avx.Shuffle(lo, hi, 0b11_01_11_01);
        even = Avx2.Permute4x64(even.AsDouble(), 0b11_01_10_00).AsSingle();
        odd = Avx2.Permute4x64(odd.AsDouble(), 0b11_01_10_00).AsSingle();
        StoreActivations(a1T, j, Unsafe.As<Vector256<float>, TVec>(ref even), b1);
        StoreActivations(a1T, j + 1, Unsafe.As<Vector256<float>, TVec>(ref odd), b1);
    }

    // relu(z / 255 + b1) of one unit into its row of a1T (Hp, Tile)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreActivations(float* a1T, int unit, TVec z, float* b1) =>
        TW.Store(a1T + unit * Tile, TW.Max(TW.MultiplyAdd(z, TW.Create(PixelScale), TW.Create(b1[unit])), TW.Zero));

    // dw1 rows of one column's two pixels (their Hp units) = sum over the column's blocks of dz1 . pixels, times
    // scale       the column's entries (block, 2 x BlockSize bytes), dz1 (blocks, Hp, Count) -> 2 dw1T rows (hv apart)
    // Each load of a block's dz1 feeds both pixels' FMAs: one pixel per walk read a vector of dz1 from L2 per FMA,
    // and L2's bandwidth bounded the kernel (docs/journal/sparse-training.md).
    // mirrors Reference.LinearBackward (dw of layer 1, the blocks' non-zero pixel columns)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void BlockedWeightGradient(float* dw1Rows, int hv, int* blockOf, byte* bytes, int count,
        float* dz1, int hp, float scale, int unitsPerWalk)
    {
        int stride = hp * TW.Count;
        for (int g = 0; g < hp; g += unitsPerWalk)
        {
            float* d = dz1 + g * TW.Count, r = dw1Rows + g;
            switch (Math.Min(unitsPerWalk, hp - g))
            {
                case 1: GradientWalk<Groups1>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 2: GradientWalk<Groups2>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 3: GradientWalk<Groups3>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 4: GradientWalk<Groups4>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 5: GradientWalk<Groups5>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 6: GradientWalk<Groups6>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 7: GradientWalk<Groups7>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 8: GradientWalk<Groups8>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                case 9: GradientWalk<Groups9>(r, hv, blockOf, bytes, count, d, stride, scale); break;
                default: GradientWalk<Groups10>(r, hv, blockOf, bytes, count, d, stride, scale); break;
            }
        }
    }

    // TG.Value units of both pixels: the column's entries once, one accumulator per unit and pixel, then each lane
    // sum into its row
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientWalk<TG>(float* rowA, int hv, int* blockOf, byte* bytes, int count, float* dz1,
        int stride, float scale) where TG : struct, IGroupCount
    {
        int w = TW.Count;
        TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, a4 = TW.Zero; // pixel A
        TVec a5 = TW.Zero, a6 = TW.Zero, a7 = TW.Zero, a8 = TW.Zero, a9 = TW.Zero;
        TVec b0 = TW.Zero, b1 = TW.Zero, b2 = TW.Zero, b3 = TW.Zero, b4 = TW.Zero; // pixel B
        TVec b5 = TW.Zero, b6 = TW.Zero, b7 = TW.Zero, b8 = TW.Zero, b9 = TW.Zero;
        for (int e = 0; e < count; e++)
        {
            TVec xa = TW.LoadBytes(bytes + 2 * e * BlockSize), xb = TW.LoadBytes(bytes + (2 * e + 1) * BlockSize);
            float* d = dz1 + (nint)blockOf[e] * stride;
            TVec v = TW.Load(d);
            a0 = TW.MultiplyAdd(v, xa, a0); b0 = TW.MultiplyAdd(v, xb, b0);
            if (TG.Value > 1)
            {
                v = TW.Load(d + 1 * w);
                a1 = TW.MultiplyAdd(v, xa, a1); b1 = TW.MultiplyAdd(v, xb, b1);
            }
            if (TG.Value > 2)
            {
                v = TW.Load(d + 2 * w);
                a2 = TW.MultiplyAdd(v, xa, a2); b2 = TW.MultiplyAdd(v, xb, b2);
            }
            if (TG.Value > 3)
            {
                v = TW.Load(d + 3 * w);
                a3 = TW.MultiplyAdd(v, xa, a3); b3 = TW.MultiplyAdd(v, xb, b3);
            }
            if (TG.Value > 4)
            {
                v = TW.Load(d + 4 * w);
                a4 = TW.MultiplyAdd(v, xa, a4); b4 = TW.MultiplyAdd(v, xb, b4);
            }
            if (TG.Value > 5)
            {
                v = TW.Load(d + 5 * w);
                a5 = TW.MultiplyAdd(v, xa, a5); b5 = TW.MultiplyAdd(v, xb, b5);
            }
            if (TG.Value > 6)
            {
                v = TW.Load(d + 6 * w);
                a6 = TW.MultiplyAdd(v, xa, a6); b6 = TW.MultiplyAdd(v, xb, b6);
            }
            if (TG.Value > 7)
            {
                v = TW.Load(d + 7 * w);
                a7 = TW.MultiplyAdd(v, xa, a7); b7 = TW.MultiplyAdd(v, xb, b7);
            }
            if (TG.Value > 8)
            {
                v = TW.Load(d + 8 * w);
                a8 = TW.MultiplyAdd(v, xa, a8); b8 = TW.MultiplyAdd(v, xb, b8);
            }
            if (TG.Value > 9)
            {
                v = TW.Load(d + 9 * w);
                a9 = TW.MultiplyAdd(v, xa, a9); b9 = TW.MultiplyAdd(v, xb, b9);
            }
        }
        float* rowB = rowA + hv;
        rowA[0] = TW.Sum(a0) * scale; rowB[0] = TW.Sum(b0) * scale;
        if (TG.Value > 1) { rowA[1] = TW.Sum(a1) * scale; rowB[1] = TW.Sum(b1) * scale; }
        if (TG.Value > 2) { rowA[2] = TW.Sum(a2) * scale; rowB[2] = TW.Sum(b2) * scale; }
        if (TG.Value > 3) { rowA[3] = TW.Sum(a3) * scale; rowB[3] = TW.Sum(b3) * scale; }
        if (TG.Value > 4) { rowA[4] = TW.Sum(a4) * scale; rowB[4] = TW.Sum(b4) * scale; }
        if (TG.Value > 5) { rowA[5] = TW.Sum(a5) * scale; rowB[5] = TW.Sum(b5) * scale; }
        if (TG.Value > 6) { rowA[6] = TW.Sum(a6) * scale; rowB[6] = TW.Sum(b6) * scale; }
        if (TG.Value > 7) { rowA[7] = TW.Sum(a7) * scale; rowB[7] = TW.Sum(b7) * scale; }
        if (TG.Value > 8) { rowA[8] = TW.Sum(a8) * scale; rowB[8] = TW.Sum(b8) * scale; }
        if (TG.Value > 9) { rowA[9] = TW.Sum(a9) * scale; rowB[9] = TW.Sum(b9) * scale; }
    }

    // dz1T (Hp, Tile) -> the tile's blocks of dz1, (BlocksPerTile, Hp, Count)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ToBlocks(float* dst, float* dz1T, int hp)
    {
        int w = TW.Count;
        for (int i = 0; i < BlocksPerTile; i++)
            for (int j = 0; j < hp; j++) TW.Store(dst + (i * hp + j) * w, TW.Load(dz1T + j * Tile + i * w));
    }
}

/// <summary>A compile-time count for the walks of the blocked kernels (each instantiation keeps its accumulators in
/// registers).</summary>
internal interface IGroupCount
{
    static abstract int Value { get; }
}

internal readonly struct Groups1 : IGroupCount { public static int Value => 1; }
internal readonly struct Groups2 : IGroupCount { public static int Value => 2; }
internal readonly struct Groups3 : IGroupCount { public static int Value => 3; }
internal readonly struct Groups4 : IGroupCount { public static int Value => 4; }
internal readonly struct Groups5 : IGroupCount { public static int Value => 5; }
internal readonly struct Groups6 : IGroupCount { public static int Value => 6; }
internal readonly struct Groups7 : IGroupCount { public static int Value => 7; }
internal readonly struct Groups8 : IGroupCount { public static int Value => 8; }
internal readonly struct Groups9 : IGroupCount { public static int Value => 9; }
internal readonly struct Groups10 : IGroupCount { public static int Value => 10; }
internal readonly struct Groups11 : IGroupCount { public static int Value => 11; }
internal readonly struct Groups12 : IGroupCount { public static int Value => 12; }
internal readonly struct Groups13 : IGroupCount { public static int Value => 13; }
internal readonly struct Groups14 : IGroupCount { public static int Value => 14; }
internal readonly struct Groups15 : IGroupCount { public static int Value => 15; }
internal readonly struct Groups16 : IGroupCount { public static int Value => 16; }

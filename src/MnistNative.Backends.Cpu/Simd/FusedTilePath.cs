using CommunityToolkit.HighPerformance;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// How the training images are kept between iterations (see docs/cpu-backends.md for the measurements).
/// </summary>
internal enum InputLayout
{
    /// <summary>
    /// Raw bytes (n, 784); each tile is widened to float once, into a per-worker tile buffer that stays in L1/L2.
    /// </summary>
    BytesPerTile,

    /// <summary>Pre-converted float32 (n, 784); tiles are read in place, 4x the bytes streamed per iteration.</summary>
    Float32,
}

/// <summary>
/// The SIMD backend's fused path for the seed's case: whole-set gradient descent on 784-H-10, generic over the
/// vector width (<see cref="Width256"/>, <see cref="Width512"/>). It mirrors <see cref="Reference.Reference"/>
/// pair by pair (HiddenForward and OutputForward mirror LinearForward + ReluForward, Softmax mirrors
/// SoftmaxCrossEntropyForward, OutputBackward and HiddenBackward mirror SoftmaxCrossEntropyBackward +
/// LinearBackward + ReluBackward), but fused per tile: a tile
/// of <see cref="Tile"/> samples is widened to float once and then goes through the forward and the backward
/// pass while it is in cache, so the training set is read once per iteration.
///
/// Layouts inside a tile: x (Tile, 784) sample-major; the backward pass walks whole chunks of 7 vectors at
/// both widths (784 = 7 * 7 * 16 = 7 * 14 * 8);
/// the per-tile activations are hidden-major (a1T (Hp, Tile), z2T (10, Tile)) so the output layer, the
/// softmax and the relu mask run with samples across the vector lanes and need no horizontal operations.
/// Hp is H rounded up to even: the hidden kernels work on pairs of hidden units; the padded unit has zero
/// weights, so its relu is off and it never gets a gradient.
///
/// Threads: tiles are split into one contiguous range per worker; each worker owns its gradient partials,
/// and the partials are summed in worker order, so a backend with a given thread count is bitwise
/// reproducible. Pixels stay 0..255 as floats; the 1/255 is folded into z1 and into the dw1 scale.
/// </summary>
internal sealed unsafe partial class FusedTilePath<TW, TVec>
    where TW : struct, IVectorWidth<TVec>
    where TVec : unmanaged
{
    private const int In = MlpParameters.InputSize;
    private const int Out = MlpParameters.Classes;

    /// <summary>
    /// Row pitch of x and w1 in floats: the 784 pixels, whole chunks of 7 vectors at 8 and 16 lanes, and 3136 bytes
    /// (49 cache lines), so rows stay 64-byte aligned. It was 800 (16 zeros, chunks of 5), which made the backward
    /// do 2% more FMAs than needed and held only 10 accumulators.
    /// </summary>
    internal const int Pitch = 784;

    /// <summary>
    /// Samples per tile: a multiple of 16 (whole vectors of samples in the output layer at both widths) and of
    /// 4 (the forward kernel's sample block). 32 samples are 100 KB of floats: in L2, and the 4-sample and
    /// 5-vector slices the kernels walk stay in L1.
    /// </summary>
    internal const int Tile = 32;

    private const int BackwardChunk = 7; // vectors of dw1 per register block
    private const float PixelScale = 1f / 255f;

    private readonly int _h, _hp;
    private readonly InputLayout _layout;
    private readonly KernelMode _kernelMode;
    private readonly NativeBuffer<float> _w1, _b1, _w2, _b2;     // w1 (Hp, Pitch), b1 (Hp), w2 (10, Hp), b2 (10)
    private readonly NativeBuffer<float> _dw1, _db1, _dw2, _db2; // mean gradients, same shapes
    private readonly WorkerScratch[] _scratch;
    private readonly WorkerPool _pool;

    private NativeBuffer<byte>? _pixels;  // (nPad, 784), rows past n are zero
    private NativeBuffer<float>? _xf;     // (nPad, Pitch), only for InputLayout.Float32
    private NativeBuffer<float>? _labels; // (nPad) labels as floats
    private NativeBuffer<float>? _valid;  // (nPad) 1 for real samples, 0 for the padding of the last tile
    private int _n, _tiles;

    private readonly Action<int> _work;
    private readonly string[] _workerPhases = [$"{Phases.Forward} layer 1", $"{Phases.Forward} layer 2",
        Phases.SoftmaxLoss, $"{Phases.Backward} layer 2", $"{Phases.Backward} layer 1"];

    // The job the workers run next; written before WorkerPool.Run, read by the workers.
    private bool _predicting, _measure, _timed;
    private byte* _predictImages;
    private double* _predictOut;
    private int _predictCount;

    public FusedTilePath(int hidden, WorkerPool pool, InputLayout layout, KernelMode kernel)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(hidden, 1);
        int threads = pool.Count;
        _h = hidden;
        _hp = (hidden + 1) & ~1;
        _hv = SparseRowWidth(_hp);
        _layout = layout;
        _kernelMode = kernel;
        // b1 is read as whole vectors of _hv by the sparse forward; the floats past _hp stay zero
        _w1 = new(_hp * Pitch); _b1 = new(_hv); _w2 = new(Out * _hp); _b2 = new(16);
        _dw1 = new(_hp * Pitch); _db1 = new(_hp); _dw2 = new(Out * _hp); _db2 = new(16);
        _w1T = new(In * _hv); _dw1T = new(In * _hv);
        _scratch = new WorkerScratch[threads];
        for (int i = 0; i < threads; i++) _scratch[i] = new WorkerScratch(_hp, _hv, TW.Count);
        _pool = pool;
        _work = Work;
        _gradientWork = BlockedWeightGradientWork;
    }

    /// <summary>Where the phases go (the backend's profiler); null when profiling is off.</summary>
    public Profiler? Profiler { get; set; }

    /// <summary>A copy of the uploaded set, read back from this path's own buffers (for the per-layer path when a
    /// run first needs it, so the backend need not hold the caller's images all run).</summary>
    public LabeledImages TrainingSet()
    {
        if (_pixels == null || _labels == null) throw new InvalidOperationException("Upload the training set first");
        var labels = new byte[_n];
        for (int i = 0; i < _n; i++) labels[i] = (byte)_labels.Span[i];
        return new LabeledImages(_pixels.Span[..(_n * In)].ToArray(), labels);
    }

    public void Upload(LabeledImages train)
    {
        SyncDenseW1(); // the weights live in _w1 again until ChooseKernel decides
        DisposeData();
        _n = train.Count;
        _tiles = (_n + Tile - 1) / Tile;
        int nPad = _tiles * Tile;
        _pixels = new NativeBuffer<byte>(nPad * In);
        train.Pixels.CopyTo(_pixels.Span);
        _labels = new NativeBuffer<float>(nPad);
        _valid = new NativeBuffer<float>(nPad);
        for (int i = 0; i < _n; i++)
        {
            _labels.Span[i] = train.Labels[i];
            _valid.Span[i] = 1f;
        }
        if (_layout == InputLayout.Float32)
        {
            _xf = new NativeBuffer<float>(nPad * Pitch);
            for (int t = 0; t < _tiles; t++)
                ConvertTile(_xf.Pointer + (long)t * Tile * Pitch, _pixels.Pointer + (long)t * Tile * In, Tile);
        }
        ChooseKernel(train);
    }

    public void SetWeights(MlpParameters weights)
    {
        if (weights.LayerCount != 2 || weights.Sizes[0] != In || weights.Sizes[1] != _h || weights.Sizes[2] != Out)
            throw new ArgumentException(
                $"the fused path was built for 784-{_h}-10, got {string.Join('-', weights.Sizes)}");
        _w1.Clear(); _b1.Clear(); _w2.Clear(); _b2.Clear();
        Span2D<float> w1 = _w1.AsSpan2D(_h, In, Pitch - In), w2 = _w2.AsSpan2D(Out, _h, _hp - _h);
        for (int j = 0; j < _h; j++)
        {
            for (int k = 0; k < In; k++) w1[j, k] = (float)weights.W[0][j * In + k];
            _b1.Span[j] = (float)weights.B[0][j];
        }
        for (int c = 0; c < Out; c++)
        {
            for (int j = 0; j < _h; j++) w2[c, j] = (float)weights.W[1][c * _h + j];
            _b2.Span[c] = (float)weights.B[1][c];
        }
        TransposeW1ToPixelMajor();
    }

    public MlpParameters GetWeights()
    {
        SyncDenseW1();
        var p = MlpParameters.ForHidden(_h);
        CopyOut(p, _w1, _b1, _w2, _b2);
        return p;
    }

    /// <summary>One whole-set gradient-descent step, w -= lr * dw (mirrors OptimizerMath.Apply for gd).</summary>
    public StepMetrics Step(double learningRate, bool measure)
    {
        StepMetrics m = ForwardBackward(measure);
        Profiler? profiler = Profiler;
        long t = profiler is null ? 0 : Profiler.Now();
        float lr = (float)learningRate;
        if (_sparse)
        {
            Update(_w1T.Pointer, _dw1T.Pointer, In * _hv, lr);
            _denseW1Stale = true;
        }
        else Update(_w1.Pointer, _dw1.Pointer, _hp * Pitch, lr);
        Update(_b1.Pointer, _db1.Pointer, _hp, lr);
        Update(_w2.Pointer, _dw2.Pointer, Out * _hp, lr);
        Update(_b2.Pointer, _db2.Pointer, Out, lr);
        profiler?.Record(Phases.Update, t);
        return measure ? m : default;
    }

    public StepMetrics ComputeGradients(MlpParameters gradients)
    {
        if (!gradients.SameShape(MlpParameters.ForHidden(_h)))
            throw new ArgumentException($"gradients must be 784-{_h}-10, got {string.Join('-', gradients.Sizes)}");
        StepMetrics m = ForwardBackward(measure: true);
        if (_sparse) TransposeToRowMajor(_dw1.Pointer, _dw1T.Pointer);
        CopyOut(gradients, _dw1, _db1, _dw2, _db2);
        return m;
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        int n = PredictArguments.ImageCount(images, probabilities);
        if (n == 0) return;
        SyncDenseW1(); // Predict runs the dense forward: its images come as raw bytes, with no sparse layout
        fixed (byte* pi = images)
        fixed (double* po = probabilities)
        {
            _predicting = true;
            _predictImages = pi;
            _predictOut = po;
            _predictCount = n;
            try
            {
                _pool.Run(_work);
            }
            finally
            {
                _predicting = false;
                _predictImages = null;
                _predictOut = null;
            }
        }
    }

    public void Dispose()
    {
        DisposeData();
        foreach (NativeBuffer<float> b in new[] { _w1, _b1, _w2, _b2, _dw1, _db1, _dw2, _db2, _w1T, _dw1T })
            b.Dispose();
        _pixelValues.Dispose();
        foreach (WorkerScratch s in _scratch) s.Dispose();
    }

    private void DisposeData()
    {
        _pixels?.Dispose(); _xf?.Dispose(); _labels?.Dispose(); _valid?.Dispose();
        _pixels = null; _xf = null; _labels = null; _valid = null;
        _sparseImages?.Dispose();
        _sparseImages = null;
        DisposeBlocks();
        _sparse = false;
    }

    private StepMetrics ForwardBackward(bool measure)
    {
        if (_pixels == null) throw new InvalidOperationException("Upload the training set before training");
        _measure = measure;
        Profiler? profiler = Profiler;
        _timed = profiler is not null;
        long start = _timed ? Profiler.Now() : 0;
        _pool.Run(_work);
        if (_blocks != null && _gradientByBlocks) _pool.Run(_gradientWork);
        if (profiler is not null) RecordWorkerPhases(profiler, start);
        long t = profiler is null ? 0 : Profiler.Now();
        StepMetrics m = Reduce(measure);
        profiler?.Record(Phases.Reduce, t);
        return m;
    }

    /// <summary>
    /// Each worker's time per phase, summed over its tiles, as one event per phase on the worker's row (thread id =
    /// worker), laid end to end from the step's start: a tile runs every phase, so the phases interleave in time
    /// and a per-tile event would cost more than the kernels it times.
    /// </summary>
    private void RecordWorkerPhases(Profiler profiler, long start)
    {
        for (int worker = 0; worker < _scratch.Length; worker++)
        {
            long at = start;
            long[] ticks = _scratch[worker].PhaseTicks;
            for (int p = 0; p < ticks.Length; p++)
            {
                profiler.Record(_workerPhases[p], at, at + ticks[p], worker);
                at += ticks[p];
            }
        }
    }

    /// <summary>
    /// One worker's share of the current job: a contiguous range of tiles, always the same for a given thread count.
    /// </summary>
    private void Work(int worker)
    {
        if (_predicting)
        {
            int tiles = (_predictCount + Tile - 1) / Tile;
            (int first, int end) = Share(worker, tiles);
            for (int t = first; t < end; t++) PredictTile(_scratch[worker], t);
        }
        else
        {
            WorkerScratch s = _scratch[worker];
            s.ClearPartials(withDw1: !_gradientByBlocks); // the blocks' second pass writes dw1 whole
            (int first, int end) =
                _blocks != null ? (_tileShare[worker], _tileShare[worker + 1]) : Share(worker, _tiles);
            if (_blocks != null)
                for (int t = first; t < end; t++) BlockedTrainTile(s, t, _timed);
            else if (_timed)
                for (int t = first; t < end; t++) TimedTrainTile(s, t);
            else if (_sparse)
                for (int t = first; t < end; t++) SparseTrainTile(s, t);
            else
                for (int t = first; t < end; t++) TrainTile(s, t);
        }
    }

    private (int First, int End) Share(int worker, int tiles) =>
        ((int)((long)tiles * worker / _scratch.Length), (int)((long)tiles * (worker + 1) / _scratch.Length));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void TrainTile(WorkerScratch s, int tile)
    {
        // bytes: HiddenForward widens the tile into s.X block by block, and the backward reads it from there
        float* x = _layout == InputLayout.Float32 ? _xf!.Pointer + (long)tile * Tile * Pitch : s.X;
        byte* pixels = _layout == InputLayout.BytesPerTile ? _pixels!.Pointer + (long)tile * Tile * In : null;
        float* labels = _labels!.Pointer + tile * Tile;
        float* valid = _valid!.Pointer + tile * Tile;
        byte* next = _layout == InputLayout.BytesPerTile && tile + 1 < _tiles
            ? _pixels!.Pointer + (long)(tile + 1) * Tile * In
            : null;
        HiddenForward(s.A1, x, _w1.Pointer, _b1.Pointer, _hp, pixels);
        OutputForward(s.Z2, s.A1, _w2.Pointer, _b2.Pointer, _hp);
        Softmax(s.Z2, s.Z2, labels, valid, _measure, ref s.Correct, ref s.LossSum);
        OutputBackward(s.Z2, s.Dw2, s.Db2, s.Z2, labels, valid, s.A1, _hp);
        HiddenBackward(s.Dw1, s.Db1, s.Dz1, s.Z2, _w2.Pointer, s.A1, x, _hp, next);
    }

    /// <summary>
    /// TrainTile or SparseTrainTile with each kernel timed into the worker's PhaseTicks (profiling on).
    /// </summary>
    private void TimedTrainTile(WorkerScratch s, int tile)
    {
        float* labels = _labels!.Pointer + tile * Tile;
        float* valid = _valid!.Pointer + tile * Tile;
        long[] ticks = s.PhaseTicks;
        long t0 = Profiler.Now();
        float* x = s.X;
        byte* next = null;
        if (_sparse)
        {
            int* rowStart = _sparseImages!.RowStart.Pointer + tile * Tile;
            SparseHiddenForward(s.A1, s.Rows, _sparseImages.Offsets.Pointer, _sparseImages.Values.Pointer, rowStart,
                _w1T.Pointer, _b1.Pointer, _hp, _hv);
        }
        else
        {
            x = _layout == InputLayout.Float32 ? _xf!.Pointer + (long)tile * Tile * Pitch : s.X;
            byte* pixels = _layout == InputLayout.BytesPerTile ? _pixels!.Pointer + (long)tile * Tile * In : null;
            next = _layout == InputLayout.BytesPerTile && tile + 1 < _tiles
                ? _pixels!.Pointer + (long)(tile + 1) * Tile * In : null;
            HiddenForward(s.A1, x, _w1.Pointer, _b1.Pointer, _hp, pixels);
        }
        long t1 = Profiler.Now();
        OutputForward(s.Z2, s.A1, _w2.Pointer, _b2.Pointer, _hp);
        long t2 = Profiler.Now();
        Softmax(s.Z2, s.Z2, labels, valid, _measure, ref s.Correct, ref s.LossSum);
        long t3 = Profiler.Now();
        OutputBackward(s.Z2, s.Dw2, s.Db2, s.Z2, labels, valid, s.A1, _hp);
        long t4 = Profiler.Now();
        if (_sparse)
        {
            HiddenDelta(s.Dz1, s.Db1, s.Z2, _w2.Pointer, s.A1, _hp);
            SparseImages images = _sparseImages!;
            SparseHiddenWeightGradient(s.Dw1, s.Rows, s.Dz1, images.Offsets.Pointer, images.Values.Pointer,
                images.RowStart.Pointer + tile * Tile, images.ColumnEntries.Pointer, images.ColumnEntryStart.Pointer,
                images.ColumnOffset.Pointer, images.TileColumnStart.Pointer[tile],
                images.TileColumnStart.Pointer[tile + 1], _pixelValues.Pointer, _hp, _hv);
        }
        else HiddenBackward(s.Dw1, s.Db1, s.Dz1, s.Z2, _w2.Pointer, s.A1, x, _hp, next);
        long t5 = Profiler.Now();
        ticks[0] += t1 - t0; ticks[1] += t2 - t1; ticks[2] += t3 - t2; ticks[3] += t4 - t3; ticks[4] += t5 - t4;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PredictTile(WorkerScratch s, int tile)
    {
        int rows = Math.Min(Tile, _predictCount - tile * Tile);
        float* x = s.X;
        byte* pixels = _predictImages + (long)tile * Tile * In;
        // the next tile's bytes on their way to L2 while this one computes (as HiddenBackward does in training)
        if (_predictCount - (tile + 1) * Tile >= Tile)
            for (int line = 0; line < Tile * In / 64; line++) Sse.Prefetch1(pixels + Tile * In + line * 64);
        if (rows == Tile)
            HiddenForward(s.A1, x, _w1.Pointer, _b1.Pointer, _hp, pixels); // widens block by block, as in training
        else
        {
            ConvertTile(x, pixels, rows); // the last, partial tile: rows past `rows` must read as zeros
            HiddenForward(s.A1, x, _w1.Pointer, _b1.Pointer, _hp);
        }
        OutputForward(s.Z2, s.A1, _w2.Pointer, _b2.Pointer, _hp);
        int ignoredCorrect = 0;
        double ignoredLoss = 0;
        Softmax(s.Z2, s.Z2, null, null, false, ref ignoredCorrect, ref ignoredLoss);
        double* o = _predictOut + (long)tile * Tile * Out;
        for (int i = 0; i < rows; i++)
            for (int c = 0; c < Out; c++) o[i * Out + c] = s.Z2[c * Tile + i];
    }

    // pixels (rows, 784) bytes -> x (Tile, Pitch) floats 0..255; rows past `rows` are zeroed
    // mirrors Reference.ScalePixels without the division (the 1/255 is folded into z1 and dw1)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void ConvertTile(float* x, byte* pixels, int rows)
    {
        for (int r = 0; r < rows; r++) WidenRow(x + r * Pitch, pixels + r * In);
        for (int r = rows; r < Tile; r++) new Span<float>(x + r * Pitch, In).Clear();
    }

    // 784 bytes -> 784 floats 0..255
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WidenRow(float* xr, byte* p)
    {
        for (int k = 0; k < In; k += TW.Count) TW.Store(xr + k, TW.LoadBytes(p + k));
    }

    // z1 = x w1^T / 255 + b1; a1 = relu(z1)       x (Tile, Pitch), w1 (Hp, Pitch), b1 (Hp) -> a1T (Hp, Tile)
    // Register block: 4 samples x 2 hidden units = 8 accumulators (enough to cover the FMA latency at both
    // widths); per step 6 loads feed 8 FMAs, and the 4 sample rows (12.5 KB) stay in L1 across all units.
    // `pixels`, when not null, is the tile's bytes (Tile, 784): each 4-sample block widens its own rows into x
    // just before it uses them, so they are in L1 when the FMAs start. Widening the whole 100 KB tile first
    // (ConvertTile) and reading it back from L2 cost 5-6% more per step (A/B, 1 thread, H=10, both widths).
    // mirrors Reference.LinearForward + Reference.ReluForward (layer 1)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void HiddenForward(float* a1T, float* x, float* w1, float* b1, int hp, byte* pixels = null)
    {
        int w = TW.Count;
        for (int s = 0; s < Tile; s += 4)
        {
            if (pixels != null)
                for (int r = s; r < s + 4; r++) WidenRow(x + r * Pitch, pixels + r * In);
            float* x0 = x + s * Pitch, x1 = x0 + Pitch, x2 = x1 + Pitch, x3 = x2 + Pitch;
            for (int j = 0; j < hp; j += 2)
            {
                float* wa = w1 + j * Pitch, wb = wa + Pitch;
                TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero;
                TVec b0 = TW.Zero, b1v = TW.Zero, b2 = TW.Zero, b3 = TW.Zero;
                for (int k = 0; k < In; k += w)
                {
                    TVec va = TW.Load(wa + k), vb = TW.Load(wb + k);
                    TVec v = TW.Load(x0 + k);
                    a0 = TW.MultiplyAdd(va, v, a0); b0 = TW.MultiplyAdd(vb, v, b0);
                    v = TW.Load(x1 + k);
                    a1 = TW.MultiplyAdd(va, v, a1); b1v = TW.MultiplyAdd(vb, v, b1v);
                    v = TW.Load(x2 + k);
                    a2 = TW.MultiplyAdd(va, v, a2); b2 = TW.MultiplyAdd(vb, v, b2);
                    v = TW.Load(x3 + k);
                    a3 = TW.MultiplyAdd(va, v, a3); b3 = TW.MultiplyAdd(vb, v, b3);
                }
                // the 4 samples' sums of each unit in one transposing reduction (Sum4), scaled, biased and ReLU'd
                // as a vector: the 8 separate horizontal sums were ~15% of this kernel's instructions at 512 bits.
                // Sse.Max(z, 0) is z > 0 ? z : +0 (NaN and -0 give +0).
                float* ra = a1T + j * Tile + s, rb = ra + Tile;
                Vector128<float> scale = Vector128.Create(PixelScale);
                Sse.Max(Sse.Add(Sse.Multiply(TW.Sum4(a0, a1, a2, a3), scale), Vector128.Create(b1[j])),
                    Vector128<float>.Zero).Store(ra);
                Sse.Max(Sse.Add(Sse.Multiply(TW.Sum4(b0, b1v, b2, b3), scale), Vector128.Create(b1[j + 1])),
                    Vector128<float>.Zero).Store(rb);
            }
        }
    }

    // z2 = a1 w2^T + b2                          a1T (Hp, Tile), w2 (10, Hp), b2 (10) -> z2T (10, Tile)
    // mirrors Reference.LinearForward (layer 2)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void OutputForward(float* z2T, float* a1T, float* w2, float* b2, int hp)
    {
        // two classes x two vectors of samples per pass: four independent sums, each still in unit order (one
        // chain of Hp dependent FMAs at a time left the FMA pipes waiting on its latency)
        int w = TW.Count;
        for (int sv = 0; sv < Tile; sv += 2 * w)
            for (int c = 0; c < Out; c += 2)
            {
                float* wc = w2 + c * hp, wd = wc + hp;
                TVec a0 = TW.Zero, a1 = TW.Zero, b0 = TW.Zero, b1 = TW.Zero;
                for (int j = 0; j < hp; j++)
                {
                    TVec x0 = TW.Load(a1T + j * Tile + sv), x1 = TW.Load(a1T + j * Tile + sv + w);
                    TVec u = TW.Create(wc[j]), v = TW.Create(wd[j]);
                    a0 = TW.MultiplyAdd(u, x0, a0); a1 = TW.MultiplyAdd(u, x1, a1);
                    b0 = TW.MultiplyAdd(v, x0, b0); b1 = TW.MultiplyAdd(v, x1, b1);
                }
                TVec bc = TW.Create(b2[c]), bd = TW.Create(b2[c + 1]);
                TW.Store(z2T + c * Tile + sv, TW.Add(a0, bc)); TW.Store(z2T + c * Tile + sv + w, TW.Add(a1, bc));
                TW.Store(z2T + (c + 1) * Tile + sv, TW.Add(b0, bd));
                TW.Store(z2T + (c + 1) * Tile + sv + w, TW.Add(b1, bd));
            }
    }

    // probs = softmax(z2) per sample (samples across lanes, shifted by the max as the seed does); when
    // measuring, also the correct predictions (first argmax on ties) and the summed cross-entropy
    // logsumexp(z2) - z2[y], summed per vector of samples (the padding's lanes masked), vectors in order.
    //                                                       z2T (10, Tile) -> probsT (10, Tile), may alias
    // mirrors Reference.SoftmaxCrossEntropyForward
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Softmax(float* probsT, float* z2T, float* labels, float* valid, bool measure, ref int correct,
        ref double lossSum)
    {
        int w = TW.Count, hits = 0;
        double loss = 0;
        for (int sv = 0; sv < Tile; sv += w)
        {
            TVec max = TW.Load(z2T + sv);
            for (int c = 1; c < Out; c++) max = TW.Max(max, TW.Load(z2T + c * Tile + sv));
            TVec y = TW.Zero, best = TW.Zero, bestIndex = TW.Zero, zy = TW.Zero;
            if (measure)
            {
                y = TW.Load(labels + sv);
                best = TW.Load(z2T + sv);
                for (int c = 0; c < Out; c++)
                {
                    TVec z = TW.Load(z2T + c * Tile + sv), cv = TW.Create(c);
                    TVec greater = TW.GreaterThan(z, best);
                    best = TW.Select(greater, z, best);
                    bestIndex = TW.Select(greater, cv, bestIndex);
                    zy = TW.Select(TW.Equal(y, cv), z, zy);
                }
            }
            // one exp per logit (the loss reuses the sum), then one division for the ten probabilities
            TVec sum = TW.Zero;
            for (int c = 0; c < Out; c++)
            {
                TVec e = TW.Exp(TW.Subtract(TW.Load(z2T + c * Tile + sv), max));
                TW.Store(probsT + c * Tile + sv, e);
                sum = TW.Add(sum, e);
            }
            if (measure)
            {
                // valid is 1 or 0 per lane: the padding adds nothing to the loss or the hits
                TVec v = TW.Load(valid + sv), counted = TW.GreaterThan(v, TW.Zero);
                loss += TW.Sum(TW.Select(counted, TW.Subtract(TW.Add(TW.Log(sum), max), zy), TW.Zero));
                hits += (int)TW.Sum(TW.Select(TW.Equal(bestIndex, y), v, TW.Zero));
            }
            TVec inverse = TW.Divide(TW.Create(1f), sum);
            for (int c = 0; c < Out; c++)
                TW.Store(probsT + c * Tile + sv, TW.Multiply(TW.Load(probsT + c * Tile + sv), inverse));
        }
        if (!measure) return;
        correct += hits;
        lossSum += loss;
    }

    // dz2 = (probs - onehot(y)) * valid; dw2 += dz2^T a1; db2 += sum(dz2), as per-lane partials (mean taken in Reduce)
    //                           probsT (10, Tile), a1T (Hp, Tile) -> dz2T (10, Tile), dw2 (10, Hp, W), db2 (10, W)
    // mirrors Reference.SoftmaxCrossEntropyBackward + Reference.LinearBackward (layer 2)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void OutputBackward(float* dz2T, float* dw2, float* db2, float* probsT, float* labels, float* valid,
        float* a1T, int hp)
    {
        int w = TW.Count;
        TVec one = TW.Create(1f);
        for (int sv = 0; sv < Tile; sv += w)
        {
            TVec y = TW.Load(labels + sv), v = TW.Load(valid + sv);
            for (int c = 0; c < Out; c++)
            {
                TVec onehot = TW.Select(TW.Equal(y, TW.Create(c)), one, TW.Zero);
                TVec d = TW.Multiply(TW.Subtract(TW.Load(probsT + c * Tile + sv), onehot), v);
                TW.Store(dz2T + c * Tile + sv, d);
                TW.Store(db2 + c * w, TW.Add(TW.Load(db2 + c * w), d));
            }
        }
        // two classes x two units per pass: four independent sums over the sample vectors, each in their order,
        // and each loaded row serves two of them
        for (int c = 0; c < Out; c += 2)
            for (int j = 0; j < hp; j += 2)
            {
                float* p00 = dw2 + (c * hp + j) * w, p01 = p00 + w, p10 = p00 + hp * w, p11 = p10 + w;
                TVec a00 = TW.Load(p00), a01 = TW.Load(p01), a10 = TW.Load(p10), a11 = TW.Load(p11);
                for (int sv = 0; sv < Tile; sv += w)
                {
                    TVec d0 = TW.Load(dz2T + c * Tile + sv), d1 = TW.Load(dz2T + (c + 1) * Tile + sv);
                    TVec x0 = TW.Load(a1T + j * Tile + sv), x1 = TW.Load(a1T + (j + 1) * Tile + sv);
                    a00 = TW.MultiplyAdd(d0, x0, a00); a01 = TW.MultiplyAdd(d0, x1, a01);
                    a10 = TW.MultiplyAdd(d1, x0, a10); a11 = TW.MultiplyAdd(d1, x1, a11);
                }
                TW.Store(p00, a00); TW.Store(p01, a01); TW.Store(p10, a10); TW.Store(p11, a11);
            }
    }

    // dz1 = (dz2 w2) * relu'(z1); dw1 += dz1^T x; db1 += sum(dz1)
    //                  dz2T (10, Tile), w2 (10, Hp), a1T (Hp, Tile), x (Tile, Pitch) -> dw1 (Hp, Pitch), db1 (Hp, W)
    // Register block for dw1: 2 hidden units x 7 vectors of pixels = 14 accumulators over the tile's samples
    // (the forward_backward_cpu.cl block); per sample 7 loads + 2 broadcasts feed 14 FMAs, and the 7-vector
    // column slice of the tile stays in L1 while the loop walks all hidden pairs. On this AVX-512 machine the JIT
    // also uses ymm16-31 at 256 bits, so neither width spills; an AVX2-only CPU has exactly the 16 it needs (not
    // measured). `next`, when not null, is the next tile's bytes (Tile, 784): each
    // column chunk prefetches its share of those 392 cache lines, spread over the FMA-dense loop, so the next
    // tile's widening reads them from cache instead of waiting on memory.
    // mirrors Reference.LinearBackward (dx of layer 2, dw of layer 1) + Reference.ReluBackward
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void HiddenBackward(float* dw1, float* db1, float* dz1T, float* dz2T, float* w2, float* a1T,
        float* x, int hp, byte* next = null)
    {
        HiddenDelta(dz1T, db1, dz2T, w2, a1T, hp);
        HiddenWeightGradient(dw1, dz1T, x, hp, next);
    }

    // dz1 = (dz2 w2) * relu'(z1); db1 += sum(dz1)   dz2T (10, Tile), w2 (10, Hp), a1T (Hp, Tile) -> dz1T (Hp, Tile),
    // db1 (Hp, W)
    // mirrors Reference.LinearBackward (dx of layer 2) + Reference.ReluBackward
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void HiddenDelta(float* dz1T, float* db1, float* dz2T, float* w2, float* a1T, int hp)
    {
        // two vectors of samples per pass: two independent sums over the classes, each in class order
        int w = TW.Count;
        for (int j = 0; j < hp; j++)
        {
            TVec acc = TW.Load(db1 + j * w);
            for (int sv = 0; sv < Tile; sv += 2 * w)
            {
                TVec d0 = TW.Zero, d1 = TW.Zero;
                for (int c = 0; c < Out; c++)
                {
                    TVec u = TW.Create(w2[c * hp + j]);
                    d0 = TW.MultiplyAdd(u, TW.Load(dz2T + c * Tile + sv), d0);
                    d1 = TW.MultiplyAdd(u, TW.Load(dz2T + c * Tile + sv + w), d1);
                }
                d0 = TW.Select(TW.GreaterThan(TW.Load(a1T + j * Tile + sv), TW.Zero), d0, TW.Zero);
                d1 = TW.Select(TW.GreaterThan(TW.Load(a1T + j * Tile + sv + w), TW.Zero), d1, TW.Zero);
                TW.Store(dz1T + j * Tile + sv, d0);
                TW.Store(dz1T + j * Tile + sv + w, d1);
                acc = TW.Add(TW.Add(acc, d0), d1);
            }
            TW.Store(db1 + j * w, acc);
        }
    }

    // dw1 += dz1^T x (the dense product; see HiddenBackward)       dz1T (Hp, Tile), x (Tile, Pitch) -> dw1 (Hp, Pitch)
    // mirrors Reference.LinearBackward (dw of layer 1)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void HiddenWeightGradient(float* dw1, float* dz1T, float* x, int hp, byte* next)
    {
        int w = TW.Count;
        int chunk = BackwardChunk * w, chunks = Pitch / chunk, lines = Tile * In / 64;
        for (int k = 0; k < Pitch; k += chunk)
        {
            if (next != null)
            {
                int c = k / chunk;
                for (int line = lines * c / chunks; line < lines * (c + 1) / chunks; line++)
                    Sse.Prefetch1(next + line * 64);
            }
            for (int j = 0; j < hp; j += 2)
            {
                TVec a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero, a4 = TW.Zero, a5 = TW.Zero, a6 = TW.Zero;
                TVec b0 = TW.Zero, b1 = TW.Zero, b2 = TW.Zero, b3 = TW.Zero, b4 = TW.Zero, b5 = TW.Zero, b6 = TW.Zero;
                float* da = dz1T + j * Tile, db = da + Tile;
                for (int s = 0; s < Tile; s++)
                {
                    TVec ga = TW.Create(da[s]), gb = TW.Create(db[s]);
                    float* xs = x + s * Pitch + k;
                    TVec v = TW.Load(xs);
                    a0 = TW.MultiplyAdd(ga, v, a0); b0 = TW.MultiplyAdd(gb, v, b0);
                    v = TW.Load(xs + w);
                    a1 = TW.MultiplyAdd(ga, v, a1); b1 = TW.MultiplyAdd(gb, v, b1);
                    v = TW.Load(xs + 2 * w);
                    a2 = TW.MultiplyAdd(ga, v, a2); b2 = TW.MultiplyAdd(gb, v, b2);
                    v = TW.Load(xs + 3 * w);
                    a3 = TW.MultiplyAdd(ga, v, a3); b3 = TW.MultiplyAdd(gb, v, b3);
                    v = TW.Load(xs + 4 * w);
                    a4 = TW.MultiplyAdd(ga, v, a4); b4 = TW.MultiplyAdd(gb, v, b4);
                    v = TW.Load(xs + 5 * w);
                    a5 = TW.MultiplyAdd(ga, v, a5); b5 = TW.MultiplyAdd(gb, v, b5);
                    v = TW.Load(xs + 6 * w);
                    a6 = TW.MultiplyAdd(ga, v, a6); b6 = TW.MultiplyAdd(gb, v, b6);
                }
                float* ra = dw1 + j * Pitch + k, rb = ra + Pitch;
                TW.Store(ra, TW.Add(TW.Load(ra), a0));
                TW.Store(rb, TW.Add(TW.Load(rb), b0));
                TW.Store(ra + w, TW.Add(TW.Load(ra + w), a1));
                TW.Store(rb + w, TW.Add(TW.Load(rb + w), b1));
                TW.Store(ra + 2 * w, TW.Add(TW.Load(ra + 2 * w), a2));
                TW.Store(rb + 2 * w, TW.Add(TW.Load(rb + 2 * w), b2));
                TW.Store(ra + 3 * w, TW.Add(TW.Load(ra + 3 * w), a3));
                TW.Store(rb + 3 * w, TW.Add(TW.Load(rb + 3 * w), b3));
                TW.Store(ra + 4 * w, TW.Add(TW.Load(ra + 4 * w), a4));
                TW.Store(rb + 4 * w, TW.Add(TW.Load(rb + 4 * w), b4));
                TW.Store(ra + 5 * w, TW.Add(TW.Load(ra + 5 * w), a5));
                TW.Store(rb + 5 * w, TW.Add(TW.Load(rb + 5 * w), b5));
                TW.Store(ra + 6 * w, TW.Add(TW.Load(ra + 6 * w), a6));
                TW.Store(rb + 6 * w, TW.Add(TW.Load(rb + 6 * w), b6));
            }
        }
    }

    // Sums the workers' partials in worker order and takes the means: dw1 also carries the 1/255 of the pixels.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private StepMetrics Reduce(bool measure)
    {
        int w = TW.Count, workers = _scratch.Length;
        float invN = 1f / _n;
        TVec scale1 = TW.Create((float)(1.0 / (255.0 * _n)));
        float* dw1 = _sparse ? _dw1T.Pointer : _dw1.Pointer;
        // the blocked kernels' second pass wrote dw1 complete
        int dw1Length = _gradientByBlocks ? 0 : _sparse ? In * _hv : _hp * Pitch;
        for (int i = 0; i < dw1Length; i += w)
        {
            TVec acc = TW.Load(_scratch[0].Dw1 + i);
            for (int p = 1; p < workers; p++) acc = TW.Add(acc, TW.Load(_scratch[p].Dw1 + i));
            TW.Store(dw1 + i, TW.Multiply(acc, scale1));
        }
        for (int j = 0; j < _hp; j++) _db1.Pointer[j] = SumLanes(j, static s => s.Db1) * invN;
        for (int c = 0; c < Out; c++)
        {
            for (int j = 0; j < _hp; j++) _dw2.Pointer[c * _hp + j] = SumLanes(c * _hp + j, static s => s.Dw2) * invN;
            _db2.Pointer[c] = SumLanes(c, static s => s.Db2) * invN;
        }
        if (!measure) return default;
        int correct = 0;
        double loss = 0;
        foreach (WorkerScratch s in _scratch)
        {
            correct += s.Correct;
            loss += s.LossSum;
        }
        return new StepMetrics(correct, loss, _n);
    }

    private delegate float* PartialOf(WorkerScratch s);

    // Sum over workers (in order) of the lane sums of one partial vector.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float SumLanes(int index, PartialOf partial)
    {
        int w = TW.Count;
        float sum = 0;
        foreach (WorkerScratch s in _scratch) sum += TW.Sum(TW.Load(partial(s) + index * w));
        return sum;
    }

    // w -= lr * dw
    // mirrors OptimizerMath.Apply (gd)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Update(float* wt, float* dw, int length, float lr)
    {
        int w = TW.Count, i = 0;
        TVec rate = TW.Create(lr);
        for (; i + w <= length; i += w)
            TW.Store(wt + i, TW.Subtract(TW.Load(wt + i), TW.Multiply(rate, TW.Load(dw + i))));
        for (; i < length; i++) wt[i] -= lr * dw[i];
    }

    private void CopyOut(MlpParameters p, NativeBuffer<float> w1, NativeBuffer<float> b1, NativeBuffer<float> w2,
        NativeBuffer<float> b2)
    {
        // the padding (w2: the odd-H padding unit) is the views' pitch, never copied
        Span2D<float> w1v = w1.AsSpan2D(_h, In, Pitch - In), w2v = w2.AsSpan2D(Out, _h, _hp - _h);
        for (int j = 0; j < _h; j++)
        {
            for (int k = 0; k < In; k++) p.W[0][j * In + k] = w1v[j, k];
            p.B[0][j] = b1.Span[j];
        }
        for (int c = 0; c < Out; c++)
        {
            for (int j = 0; j < _h; j++) p.W[1][c * _h + j] = w2v[c, j];
            p.B[1][c] = b2.Span[c];
        }
    }

    /// <summary>
    /// One worker's tile buffers and gradient partials (partials of db1, dw2 and db2 are per lane), laid out one
    /// after the other (64-byte aligned) in one <see cref="HugePageBuffer"/>: see there for the measurement.
    /// </summary>
    private sealed class WorkerScratch : IDisposable
    {
        private readonly HugePageBuffer _memory;
        private readonly int _partialFloats;
        public readonly float* X, A1, Dz1, Z2, Rows, Dw1, Db1, Dw2, Db2;
        /// <summary>Stopwatch ticks per phase of this worker's tiles in the current step (profiling on).</summary>
        public readonly long[] PhaseTicks = new long[5];
        public int Correct;
        public double LossSum;

        /// <param name="hv">The sparse kernels' row width: Rows is (Tile, hv) and the dw1 partial is also the
        /// sparse kernels' pixel-major (784, hv) one, whichever is larger.</param>
        public WorkerScratch(int hp, int hv, int width)
        {
            ReadOnlySpan<int> sizes = [Tile * Pitch, hp * Tile, hp * Tile, Out * Tile, Tile * hv,
                Math.Max(hp * Pitch, In * hv), hp * width, Out * hp * width, Out * width];
            long total = 0;
            foreach (int n in sizes) total += Padded(n);
            _memory = new HugePageBuffer(total * sizeof(float));
            float* p = (float*)_memory.Pointer;
            float* Next(int n) { float* r = p; p += Padded(n); return r; }
            X = Next(sizes[0]); A1 = Next(sizes[1]); Dz1 = Next(sizes[2]); Z2 = Next(sizes[3]); Rows = Next(sizes[4]);
            // the partials, last
            Dw1 = Next(sizes[5]); Db1 = Next(sizes[6]); Dw2 = Next(sizes[7]); Db2 = Next(sizes[8]);
            _partialFloats = (int)(p - Dw1);
        }

        private static int Padded(int floats) => (floats + 15) & ~15; // whole 64-byte lines

        public void ClearPartials(bool withDw1)
        {
            float* from = withDw1 ? Dw1 : Db1;
            new Span<float>(from, _partialFloats - (int)(from - Dw1)).Clear();
            Array.Clear(PhaseTicks);
            Correct = 0;
            LossSum = 0;
        }

        public void Dispose() => _memory.Dispose();
    }
}

using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The SIMD backend's per-layer path: steps of an MLP of any depth over batches of any size, every optimizer,
/// float32, multi-threaded and vectorized; it mirrors <see cref="Reference.Reference"/> layer by layer
/// (LayerForward mirrors LinearForward + ReluForward, Softmax mirrors SoftmaxCrossEntropyForward and Backward,
/// LayerBackwardWeights and LayerBackwardInputs mirror LinearBackward + ReluBackward, Update mirrors
/// OptimizerMath.Apply).
///
/// The work is sparse where the data is: every layer's input is kept per batch as a list of its nonzero
/// entries, per sample (CSR) and per input unit (CSC). MNIST images are about 19% nonzero pixels and ReLU
/// outputs about half zeros, so
///   forward   z[s, :]  = b + sum over nonzero a[s, k] of a[s, k] * Wt[k, :]       (CSR, Wt input-major)
///   backward  dWt[k, :] = sum over nonzero a[s, k] of a[s, k] * dz[s, :]           (CSC, s ascending)
///             dz_prev[s, k] = dot(dz[s, :], Wt[k, :]) only where a[s, k] > 0       (CSR; ReLU' is 0 elsewhere)
/// which is exact: the skipped terms are zeros. Weights are stored transposed, Wt (in, outP) with outP the
/// output width rounded up to the vector width; padded columns hold zeros and never get a gradient.
///
/// Threads: each phase splits either output columns (whole vectors) or samples or input rows among the
/// workers, and every sum runs in a fixed order (samples ascending) whatever the split, so the weights are
/// bitwise reproducible and independent of the thread count. The first layer's optimizer update is fused
/// into its gradient pass (the gradient never leaves the registers); deeper layers update in the last phase.
/// Nothing is allocated per step.
/// </summary>
internal sealed unsafe class LayerPath<TW, TVec>
    where TW : struct, IVectorWidth<TVec>
    where TVec : unmanaged
{
    private const int In = MlpParameters.InputSize;
    private const int Classes = MlpParameters.Classes;
    private const float PixelDivisor = 255f; // x = byte / 255, as Reference.ScalePixels

    private readonly int[] _sizes, _outP;
    private readonly int _layers, _maxBatch;
    private readonly NativeBuffer<float>[] _wt, _b, _dwt, _db;
    private readonly NativeBuffer<float>[] _m1w, _m1b, _m2w, _m2b; // momentum / Adam moments (empty when unused)
    // act[l] (B, outP[l-1]) for hidden l >= 1; act[L] = logits / probabilities (B, outP[L-1])
    private readonly NativeBuffer<float>[] _act;
    private readonly NativeBuffer<float>[] _dz;    // dz[l] (B, outP[l-1]) for l >= 1
    private readonly NativeBuffer<int>[] _csrIdx, _cscSample, _cscCount, _csrCount;
    private readonly NativeBuffer<float>[] _csrVal, _cscVal;
    private readonly int[] _csrCap;
    private readonly NativeBuffer<int> _batchIndex;
    private readonly NativeBuffer<byte> _batchLabel;
    private readonly WorkerPool _pool;
    private readonly double[] _lossW;
    private readonly int[] _correctW;

    // the uploaded training set as CSR: row s is entries [start[s], start[s+1]) of (pixel index, pixel / 255);
    // a training step's first layer reads its samples' rows here directly (see Row)
    private NativeBuffer<int> _trainStart = new(1);
    private NativeBuffer<int> _trainIdx = new(0);
    private NativeBuffer<float> _trainVal = new(0);
    private byte[] _trainLabels = [];

    // the current job and its arguments (set before _pool.Run; the workers read them)
    private Job _job;
    private int _layer, _batch;
    private bool _training, _update;
    private byte* _images;
    private long _t;
    private TVec _lrV, _wdV, _muV, _b1V, _b2V, _1mb1V, _1mb2V, _stepV, _invV, _epsV;

    private readonly Action<int> _work;
    private readonly string[] _forwardPhase, _backwardPhase;

    /// <summary>What the workers run in one <see cref="WorkerPool.Run"/>.</summary>
    private enum Job
    {
        /// <summary>Predict's images into layer 0's CSR.</summary>
        GatherImages,

        /// <summary>LayerForward of one layer (and the CSC of its input when training; and the softmax when the
        /// layer splits samples and no profiler wants it timed apart).</summary>
        Forward,

        /// <summary>After a layer's forward, per sample: the next layer's CSR (hidden) or the softmax, loss and dz
        /// (output).</summary>
        Activations,

        /// <summary>LayerBackwardWeights and LayerBackwardInputs of one layer (layer 0 with its update fused);
        /// after layer 0, the updates of the other layers unless a profiler times them apart.</summary>
        Backward,

        /// <summary>The updates of the layers above 0.</summary>
        Update,
    }

    public LayerPath(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch, WorkerPool pool)
    {
        if (sizes.Count < 2 || sizes[0] != In || sizes[^1] != Classes)
            throw new ArgumentException($"sizes must run from {In} to {Classes}, got {string.Join('-', sizes)}");
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        optimizer.Validate();
        Optimizer = optimizer;
        _sizes = sizes.ToArray();
        _layers = _sizes.Length - 1;
        _maxBatch = maxBatch;
        int workers = pool.Count;
        _outP = new int[_layers];
        _wt = new NativeBuffer<float>[_layers]; _b = new NativeBuffer<float>[_layers];
        _dwt = new NativeBuffer<float>[_layers]; _db = new NativeBuffer<float>[_layers];
        _m1w = new NativeBuffer<float>[_layers]; _m1b = new NativeBuffer<float>[_layers];
        _m2w = new NativeBuffer<float>[_layers]; _m2b = new NativeBuffer<float>[_layers];
        for (int l = 0; l < _layers; l++)
        {
            int outP = (_sizes[l + 1] + TW.Count - 1) / TW.Count * TW.Count;
            _outP[l] = outP;
            int n = _sizes[l] * outP;
            _wt[l] = new(n); _b[l] = new(outP); _dwt[l] = new(n); _db[l] = new(outP);
            bool m1 = optimizer.MomentCount >= 1, m2 = optimizer.MomentCount >= 2;
            _m1w[l] = new(m1 ? n : 0); _m1b[l] = new(m1 ? outP : 0);
            _m2w[l] = new(m2 ? n : 0); _m2b[l] = new(m2 ? outP : 0);
        }
        _act = new NativeBuffer<float>[_layers + 1];
        _dz = new NativeBuffer<float>[_layers + 1];
        _act[0] = new(0); _dz[0] = new(0);
        for (int l = 1; l <= _layers; l++)
        {
            _act[l] = new((long)maxBatch * _outP[l - 1] > int.MaxValue
                ? throw new ArgumentException("batch too large")
                : maxBatch * _outP[l - 1]);
            _dz[l] = new(maxBatch * _outP[l - 1]);
        }
        _csrIdx = new NativeBuffer<int>[_layers]; _csrVal = new NativeBuffer<float>[_layers];
        _csrCount = new NativeBuffer<int>[_layers];
        _cscCount = new NativeBuffer<int>[_layers]; _cscSample = new NativeBuffer<int>[_layers];
        _cscVal = new NativeBuffer<float>[_layers];
        _csrCap = new int[_layers];
        for (int l = 0; l < _layers; l++)
        {
            int cap = l == 0 ? In : _outP[l - 1]; // hidden: the padded width, room for whole-vector compaction
            _csrCap[l] = cap;
            long entries = (long)maxBatch * cap;
            if (entries > int.MaxValue)
                throw new ArgumentException($"batch {maxBatch} is too large for the per-layer path");
            _csrIdx[l] = new((int)entries); _csrVal[l] = new((int)entries); _csrCount[l] = new(maxBatch);
            _cscCount[l] = new(_sizes[l]); _cscSample[l] = new((int)entries); _cscVal[l] = new((int)entries);
        }
        _batchIndex = new(maxBatch);
        _batchLabel = new(maxBatch);
        _lossW = new double[workers];
        _correctW = new int[workers];
        _pool = pool;
        _work = Work;
        _forwardPhase = new string[_layers];
        _backwardPhase = new string[_layers];
        for (int l = 0; l < _layers; l++)
        {
            _forwardPhase[l] = $"{Phases.Forward} layer {l + 1}";
            _backwardPhase[l] = $"{Phases.Backward} layer {l + 1}";
        }
    }

    public OptimizerSettings Optimizer { get; }

    /// <summary>Where the phases go (the backend's profiler); null when profiling is off.</summary>
    public Profiler? Profiler { get; set; }

    /// <summary>Optimizer steps taken (Adam's t); the backend sets it when the fused path took steps.</summary>
    public long Steps { get => _t; set => _t = value; }

    public void Upload(LabeledImages train)
    {
        int n = train.Count;
        long nnz = 0;
        foreach (byte p in train.Pixels) if (p != 0) nnz++;
        _trainStart.Dispose(); _trainIdx.Dispose(); _trainVal.Dispose();
        _trainStart = new(n + 1);
        _trainIdx = new((int)nnz);
        _trainVal = new((int)nnz);
        int e = 0;
        byte[] px = train.Pixels;
        for (int s = 0; s < n; s++)
        {
            _trainStart.Pointer[s] = e;
            for (int k = 0; k < In; k++)
            {
                byte p = px[s * In + k];
                if (p == 0) continue;
                _trainIdx.Pointer[e] = k;
                _trainVal.Pointer[e] = p / PixelDivisor;
                e++;
            }
        }
        _trainStart.Pointer[n] = e;
        _trainLabels = train.Labels;
    }

    public void SetWeights(MlpParameters weights)
    {
        if (!weights.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException(
                $"weights are {string.Join('-', weights.Sizes)}, the backend is {string.Join('-', _sizes)}");
        for (int l = 0; l < _layers; l++) { ToDevice(weights.W[l], weights.B[l], l, _wt[l], _b[l]); }
    }

    public MlpParameters GetWeights() => FromDevice(_wt, _b);

    public OptimizerState GetOptimizerState()
    {
        var moments = new List<MlpParameters>();
        if (Optimizer.MomentCount >= 1) moments.Add(FromDevice(_m1w, _m1b));
        if (Optimizer.MomentCount >= 2) moments.Add(FromDevice(_m2w, _m2b));
        return new OptimizerState(_t, [.. moments]);
    }

    public void SetOptimizerState(OptimizerState state)
    {
        if (state.Moments.Length != Optimizer.MomentCount)
            throw new ArgumentException($"the optimizer state has {state.Moments.Length} moment buffers, "
                + $"{Optimizer.Kind} keeps {Optimizer.MomentCount}");
        _t = state.Steps;
        for (int l = 0; l < _layers; l++)
        {
            if (Optimizer.MomentCount >= 1) ToDevice(state.Moments[0].W[l], state.Moments[0].B[l], l, _m1w[l], _m1b[l]);
            if (Optimizer.MomentCount >= 2) ToDevice(state.Moments[1].W[l], state.Moments[1].B[l], l, _m2w[l], _m2b[l]);
        }
    }

    // W (out, in) row-major float64 -> Wt (in, outP) float32
    private void ToDevice(double[] w, double[] b, int l, NativeBuffer<float> wt, NativeBuffer<float> bt)
    {
        int nIn = _sizes[l], nOut = _sizes[l + 1], outP = _outP[l];
        wt.Clear(); bt.Clear();
        for (int j = 0; j < nOut; j++)
        {
            for (int k = 0; k < nIn; k++) wt.Pointer[k * outP + j] = (float)w[j * nIn + k];
            bt.Pointer[j] = (float)b[j];
        }
    }

    private MlpParameters FromDevice(NativeBuffer<float>[] wt, NativeBuffer<float>[] bt)
    {
        var p = new MlpParameters(_sizes);
        for (int l = 0; l < _layers; l++)
        {
            int nIn = _sizes[l], nOut = _sizes[l + 1], outP = _outP[l];
            for (int j = 0; j < nOut; j++)
            {
                for (int k = 0; k < nIn; k++) p.W[l][j * nIn + k] = wt[l].Pointer[k * outP + j];
                p.B[l][j] = bt[l].Pointer[j];
            }
        }
        return p;
    }

    public StepMetrics StepBatch(ReadOnlySpan<int> sampleIndices, double learningRate, bool measure)
    {
        StepMetrics m = Run(sampleIndices, learningRate, update: true);
        return measure ? m : default;
    }

    public StepMetrics ComputeGradients(ReadOnlySpan<int> sampleIndices, MlpParameters gradients)
    {
        StepMetrics m = Run(sampleIndices, 0, update: false);
        MlpParameters g = FromDevice(_dwt, _db);
        for (int l = 0; l < _layers; l++) { g.W[l].CopyTo(gradients.W[l], 0); g.B[l].CopyTo(gradients.B[l], 0); }
        return m;
    }

    private StepMetrics Run(ReadOnlySpan<int> sampleIndices, double lr, bool update)
    {
        int n = sampleIndices.Length;
        if (n < 1 || n > _maxBatch)
            throw new ArgumentOutOfRangeException(nameof(sampleIndices),
                $"a batch of {n} samples; this backend takes 1..{_maxBatch}");
        int trainCount = _trainLabels.Length;
        for (int i = 0; i < n; i++)
        {
            int s = sampleIndices[i];
            if ((uint)s >= (uint)trainCount)
                throw new ArgumentOutOfRangeException(nameof(sampleIndices),
                    $"sample {s} is not among the {trainCount} uploaded");
            _batchIndex.Pointer[i] = s;
            _batchLabel.Pointer[i] = _trainLabels[s];
        }
        _batch = n;
        _training = true;
        _update = update;
        if (update) SetOptimizerConstants(lr);
        ForwardAll();
        for (int l = _layers - 1; l >= 0; l--) RunJob(Job.Backward, l, _backwardPhase[l]);
        if (update && _layers > 1 && Profiler is not null) RunJob(Job.Update, 0, Phases.Update);
        double loss = 0;
        int correct = 0;
        for (int w = 0; w < _lossW.Length; w++) { loss += _lossW[w]; correct += _correctW[w]; }
        return new StepMetrics(correct, loss, n);
    }

    private void ForwardAll()
    {
        Array.Clear(_lossW);
        Array.Clear(_correctW);
        for (int l = 0; l < _layers; l++)
        {
            RunJob(Job.Forward, l, _forwardPhase[l]);
            if (SeparateActivations(l))
                RunJob(Job.Activations, l, l + 1 < _layers ? _forwardPhase[l] : Phases.SoftmaxLoss);
        }
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        int count = PredictArguments.ImageCount(images, probabilities);
        fixed (byte* p = images)
        {
            for (int start = 0; start < count; start += _maxBatch)
            {
                int n = Math.Min(_maxBatch, count - start);
                _images = p + (long)start * In;
                _batch = n;
                _training = false;
                _update = false;
                RunJob(Job.GatherImages, 0, Phases.Gather);
                ForwardAll();
                float* probs = _act[_layers].Pointer;
                int outP = _outP[_layers - 1];
                for (int s = 0; s < n; s++)
                    for (int c = 0; c < Classes; c++) probabilities[(start + s) * Classes + c] = probs[s * outP + c];
            }
        }
        _images = null;
    }

    /// <summary>Runs one job on every worker and records it as <paramref name="phase"/> when profiling.</summary>
    private void RunJob(Job job, int layer, string phase)
    {
        Profiler? profiler = Profiler;
        long t0 = profiler is null ? 0 : Profiler.Now();
        _job = job;
        _layer = layer;
        _pool.Run(_work);
        profiler?.Record(phase, t0);
    }

    /// <summary>Whether layer l's activations run as their own job: always when its forward splits output vectors
    /// (the softmax and the CSR need whole samples), and when a profiler times the softmax apart.</summary>
    private bool SeparateActivations(int l) => ColumnMode(l) || (l + 1 == _layers && Profiler is not null);

    /// <summary>
    /// Whether layer l's forward and weight gradient split output vectors among the workers (wide layers) rather
    /// than samples / input rows.
    /// </summary>
    private bool ColumnMode(int l) => _outP[l] / TW.Count >= _pool.Count;

    private static (int Start, int End) Share(int total, int parts, int index) =>
        ((int)((long)total * index / parts), (int)((long)total * (index + 1) / parts));

    private void Work(int w)
    {
        int l = _layer, workers = _pool.Count;
        switch (_job)
        {
            case Job.GatherImages:
            {
                var (s0, s1) = Share(_batch, workers, w);
                GatherImages(s0, s1);
                break;
            }
            case Job.Forward:
                if (_training)
                {
                    var (k0, k1) = Share(_sizes[l], workers, w);
                    BuildCsc(l, k0, k1);
                }
                if (ColumnMode(l))
                {
                    var (v0, v1) = Share(_outP[l] / TW.Count, workers, w);
                    LayerForward(l, 0, _batch, v0, v1);
                }
                else
                {
                    var (s0, s1) = Share(_batch, workers, w);
                    LayerForward(l, s0, s1, 0, _outP[l] / TW.Count);
                    if (!SeparateActivations(l)) Activations(l, s0, s1, w);
                }
                break;
            case Job.Activations:
            {
                var (s0, s1) = Share(_batch, workers, w);
                Activations(l, s0, s1, w);
                break;
            }
            case Job.Update:
                UpdateLayersAbove0(w);
                break;
            case Job.Backward:
            {
                bool fuse = _update && l == 0;
                if (ColumnMode(l))
                {
                    var (v0, v1) = Share(_outP[l] / TW.Count, workers, w);
                    LayerBackwardWeights(l, 0, _sizes[l], v0, v1, fuse, bias: true);
                }
                else
                {
                    var (k0, k1) = Share(_sizes[l], workers, w);
                    LayerBackwardWeights(l, k0, k1, 0, _outP[l] / TW.Count, fuse, bias: w == 0);
                }
                if (l > 0)
                {
                    var (s0, s1) = Share(_batch, workers, w);
                    LayerBackwardInputs(l, s0, s1);
                }
                else if (_update && Profiler is null) UpdateLayersAbove0(w);
                break;
            }
        }
    }

    /// <summary>Worker w's share of the updates of layers 1.. (layer 0's is fused into its gradient pass).</summary>
    private void UpdateLayersAbove0(int w)
    {
        for (int u = 1; u < _layers; u++)
        {
            var (a0, a1) = Share(_sizes[u] * _outP[u] / TW.Count, _pool.Count, w);
            UpdateRange(_wt[u], _dwt[u], _m1w[u], _m2w[u], a0 * TW.Count, a1 * TW.Count);
            if (w == 0) UpdateRange(_b[u], _db[u], _m1b[u], _m2b[u], 0, _outP[u]);
        }
    }

    /// <summary>
    /// Sample s's row of layer l's input as CSR (unit indices ascending, values, count). In a training step the
    /// first layer's rows are the uploaded training set's, found through the batch's indices, so nothing is
    /// gathered or copied; otherwise the layer's own CSR buffer (Predict's images, hidden activations).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Row(int l, int s, out int* idx, out float* val)
    {
        if (l == 0 && _training)
        {
            int src = _batchIndex.Pointer[s], e0 = _trainStart.Pointer[src];
            idx = _trainIdx.Pointer + e0;
            val = _trainVal.Pointer + e0;
            return _trainStart.Pointer[src + 1] - e0;
        }
        long at = (long)s * _csrCap[l];
        idx = _csrIdx[l].Pointer + at;
        val = _csrVal[l].Pointer + at;
        return _csrCount[l].Pointer[s];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void GatherImages(int s0, int s1)
    {
        int cap = _csrCap[0];
        for (int s = s0; s < s1; s++)
        {
            byte* px = _images + (long)s * In;
            int* idx = _csrIdx[0].Pointer + (long)s * cap;
            float* val = _csrVal[0].Pointer + (long)s * cap;
            int count = 0;
            for (int k = 0; k < In; k++)
            {
                if (px[k] == 0) continue;
                idx[count] = k;
                val[count++] = px[k] / PixelDivisor;
            }
            _csrCount[0].Pointer[s] = count;
        }
    }

    /// <summary>
    /// The batch's CSR of layer l's input, transposed for the input units [k0, k1): unit k's entries (sample,
    /// value) go to slots k * MaxBatch onwards, samples ascending, and their number to cscCount[k]. A fixed slot
    /// range per unit needs no counting pass and no prefix sum, so each worker builds its own units' lists in
    /// the forward phase (the CSR is ready then and the lists are read only by the backward phase).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void BuildCsc(int l, int k0, int k1)
    {
        int stride = _maxBatch;
        int* count = _cscCount[l].Pointer, sample = _cscSample[l].Pointer;
        float* cval = _cscVal[l].Pointer;
        new Span<int>(count + k0, k1 - k0).Clear();
        for (int s = 0; s < _batch; s++)
        {
            int n = Row(l, s, out int* idx, out float* v), e = 0;
            while (e < n && idx[e] < k0) e++; // a sample's entries are in ascending unit order
            for (; e < n; e++)
            {
                int k = idx[e];
                if (k >= k1) break;
                long slot = (long)k * stride + count[k]++;
                sample[slot] = s;
                cval[slot] = v[e];
            }
        }
    }

    // CSR of a (B, in), Wt (in, outP), b (outP) -> act[l+1] (B, outP) = z, ReLU'd for hidden layers;
    // output vectors [v0, v1)
    // mirrors Reference.LinearForward + Reference.ReluForward
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LayerForward(int l, int s0, int s1, int v0, int v1)
    {
        int outP = _outP[l], vc = TW.Count;
        bool relu = l + 1 < _layers;
        float* wt = _wt[l].Pointer, bias = _b[l].Pointer, z = _act[l + 1].Pointer;
        for (int s = s0; s < s1; s++)
        {
            int nnz = Row(l, s, out int* idx, out float* val);
            float* zs = z + (long)s * outP;
            int v = v0;
            for (; v + 4 <= v1; v += 4)
                VectorKernels<TW, TVec>.SparseAccumulate4(zs + v * vc, bias + v * vc, wt + v * vc, outP, idx, val, nnz);
            for (; v < v1; v++)
                VectorKernels<TW, TVec>.SparseAccumulate1(zs + v * vc, bias + v * vc, wt + v * vc, outP, idx, val, nnz);
            if (relu)
                for (int c = v0 * vc; c < v1 * vc; c += vc) TW.Store(zs + c, TW.Max(TW.Load(zs + c), TW.Zero));
        }
    }

    /// <summary>
    /// After layer l's forward, per sample: the CSR of the next layer's input (hidden), or softmax, loss and dz
    /// (output).
    /// </summary>
    // mirrors Reference.SoftmaxCrossEntropyForward and Backward (output layer)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Activations(int l, int s0, int s1, int w)
    {
        int outP = _outP[l];
        float* z = _act[l + 1].Pointer;
        if (l + 1 < _layers)
        {
            int cap = _csrCap[l + 1], nOut = _sizes[l + 1];
            for (int s = s0; s < s1; s++)
            {
                float* a = z + (long)s * outP;
                int* idx = _csrIdx[l + 1].Pointer + (long)s * cap;
                float* val = _csrVal[l + 1].Pointer + (long)s * cap;
                _csrCount[l + 1].Pointer[s] = VectorKernels<TW, TVec>.CompactNonzero(a, nOut, idx, val);
            }
            return;
        }
        float invN = 1f / _batch;
        double loss = 0;
        int correct = 0;
        float* dz = _dz[_layers].Pointer;
        for (int s = s0; s < s1; s++)
        {
            float* zs = z + (long)s * outP;
            int best = ScalarKernels.ArgMax(zs, Classes);
            float max = zs[best];
            float sum = 0;
            for (int c = 0; c < Classes; c++) sum += MathF.Exp(zs[c] - max);
            if (_training)
            {
                // the one loss formula (Reference.CrossEntropy), from the logits before they become probabilities
                int label = _batchLabel.Pointer[s];
                if (best == label) correct++;
                loss += (max + Math.Log(sum)) - zs[label];
            }
            for (int c = 0; c < Classes; c++) zs[c] = MathF.Exp(zs[c] - max) / sum;
            if (!_training) continue;
            int y = _batchLabel.Pointer[s];
            float* d = dz + (long)s * outP;
            for (int c = 0; c < Classes; c++) d[c] = (zs[c] - (c == y ? 1f : 0f)) * invN;
        }
        _lossW[w] += loss;
        _correctW[w] += correct;
    }

    // CSC of a (in, B), dz[l+1] (B, outP) -> dWt[k, v-range] for k in [k0, k1) (or the optimizer applied to it in
    // place when fused); db likewise
    // mirrors Reference.LinearBackward (dw, db)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LayerBackwardWeights(int l, int k0, int k1, int v0, int v1, bool fuse, bool bias)
    {
        int outP = _outP[l], vc = TW.Count;
        float* dz = _dz[l + 1].Pointer, dwt = _dwt[l].Pointer, wt = _wt[l].Pointer;
        float* m1 = _m1w[l].Length > 0 ? _m1w[l].Pointer : null, m2 = _m2w[l].Length > 0 ? _m2w[l].Pointer : null;
        int* count = _cscCount[l].Pointer, sample = _cscSample[l].Pointer;
        float* val = _cscVal[l].Pointer;
        // the fused first layer's gradient lives only in g (4 vectors, stays in L1) on its way into Update
        float* zero = stackalloc float[4 * TW.Count], g = stackalloc float[4 * TW.Count];
        new Span<float>(zero, 4 * TW.Count).Clear();
        for (int k = k0; k < k1; k++)
        {
            long e0 = (long)k * _maxBatch;
            int n = count[k];
            long rowOff = (long)k * outP;
            int v = v0;
            for (; v + 4 <= v1; v += 4)
            {
                long o = rowOff + v * vc;
                if (!fuse)
                {
                    VectorKernels<TW, TVec>.SparseAccumulate4(dwt + o, zero, dz + v * vc, outP,
                        sample + e0, val + e0, n);
                    continue;
                }
                VectorKernels<TW, TVec>.SparseAccumulate4(g, zero, dz + v * vc, outP, sample + e0, val + e0, n);
                for (int i = 0; i < 4; i++)
                    Update(wt + o + i * vc, m1 + o + i * vc, m2 + o + i * vc, TW.Load(g + i * vc));
            }
            for (; v < v1; v++)
            {
                long o = rowOff + v * vc;
                VectorKernels<TW, TVec>.SparseAccumulate1(fuse ? g : dwt + o, zero, dz + v * vc, outP,
                    sample + e0, val + e0, n);
                if (fuse) Update(wt + o, m1 + o, m2 + o, TW.Load(g));
            }
        }
        if (!bias) return;
        float* b = _b[l].Pointer, db = _db[l].Pointer;
        float* bm1 = _m1b[l].Length > 0 ? _m1b[l].Pointer : null, bm2 = _m2b[l].Length > 0 ? _m2b[l].Pointer : null;
        for (int v = v0; v < v1; v++)
        {
            int c = v * vc;
            TVec gb = TW.Zero;
            for (int s = 0; s < _batch; s++) gb = TW.Add(gb, TW.Load(dz + (long)s * outP + c));
            if (fuse) Update(b + c, bm1 + c, bm2 + c, gb);
            else TW.Store(db + c, gb);
        }
    }

    // dz[l+1] (B, outP), Wt (in, outP), CSR of a (B, in) -> dz[l] (B, outP[l-1]): dot products only where a > 0 (ReLU')
    // Four entries at a time: one dot product is a chain of dependent FMAs (latency-bound, a quarter of the
    // FMA throughput); four independent chains share each load of dz. Each entry still sums its vectors in
    // ascending order, so the result is the same bit for bit.
    // mirrors Reference.LinearBackward (dx) + Reference.ReluBackward
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LayerBackwardInputs(int l, int s0, int s1)
    {
        int outP = _outP[l], prevP = _outP[l - 1], cap = _csrCap[l], vectors = outP / TW.Count, vc = TW.Count;
        float* dz = _dz[l + 1].Pointer, wt = _wt[l].Pointer, dprev = _dz[l].Pointer;
        for (int s = s0; s < s1; s++)
        {
            float* d = dz + (long)s * outP;
            float* dp = dprev + (long)s * prevP;
            new Span<float>(dp, prevP).Clear();
            int* idx = _csrIdx[l].Pointer + (long)s * cap;
            int nnz = _csrCount[l].Pointer[s];
            int e = 0;
            for (; e + 4 <= nnz; e += 4)
            {
                int k0 = idx[e], k1 = idx[e + 1], k2 = idx[e + 2], k3 = idx[e + 3];
                float* r0 = wt + (long)k0 * outP, r1 = wt + (long)k1 * outP;
                float* r2 = wt + (long)k2 * outP, r3 = wt + (long)k3 * outP;
                TVec dv = TW.Load(d);
                TVec a0 = TW.Multiply(dv, TW.Load(r0)), a1 = TW.Multiply(dv, TW.Load(r1));
                TVec a2 = TW.Multiply(dv, TW.Load(r2)), a3 = TW.Multiply(dv, TW.Load(r3));
                for (int c = vc; c < outP; c += vc)
                {
                    dv = TW.Load(d + c);
                    a0 = TW.MultiplyAdd(dv, TW.Load(r0 + c), a0);
                    a1 = TW.MultiplyAdd(dv, TW.Load(r1 + c), a1);
                    a2 = TW.MultiplyAdd(dv, TW.Load(r2 + c), a2);
                    a3 = TW.MultiplyAdd(dv, TW.Load(r3 + c), a3);
                }
                dp[k0] = TW.Sum(a0); dp[k1] = TW.Sum(a1); dp[k2] = TW.Sum(a2); dp[k3] = TW.Sum(a3);
            }
            for (; e < nnz; e++)
            {
                int k = idx[e];
                float* row = wt + (long)k * outP;
                TVec acc = TW.Multiply(TW.Load(d), TW.Load(row));
                for (int v = 1; v < vectors; v++) acc = TW.MultiplyAdd(TW.Load(d + v * vc), TW.Load(row + v * vc), acc);
                dp[k] = TW.Sum(acc);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void UpdateRange(NativeBuffer<float> w, NativeBuffer<float> g, NativeBuffer<float> m1,
        NativeBuffer<float> m2, int start, int end)
    {
        float* pw = w.Pointer, pg = g.Pointer;
        float* p1 = m1.Length > 0 ? m1.Pointer : null, p2 = m2.Length > 0 ? m2.Pointer : null;
        for (int i = start; i < end; i += TW.Count) Update(pw + i, p1 + i, p2 + i, TW.Load(pg + i));
    }

    private void SetOptimizerConstants(double lr)
    {
        _t++;
        OptimizerSettings o = Optimizer;
        _lrV = TW.Create((float)lr);
        _wdV = TW.Create((float)o.WeightDecay);
        _muV = TW.Create((float)o.Momentum);
        _b1V = TW.Create((float)o.Beta1);
        _b2V = TW.Create((float)o.Beta2);
        _1mb1V = TW.Create((float)(1 - o.Beta1));
        _1mb2V = TW.Create((float)(1 - o.Beta2));
        var (step, inv) = OptimizerMath.AdamScales(lr, o.Beta1, o.Beta2, _t);
        _stepV = TW.Create((float)step);
        _invV = TW.Create((float)inv);
        _epsV = TW.Create((float)o.Epsilon);
    }

    /// <summary>
    /// One vector of <see cref="OptimizerMath.Apply{T}"/>: w, m1, m2 updated in place from the gradient g.
    /// </summary>
    // mirrors OptimizerMath.Apply
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Update(float* w, float* m1, float* m2, TVec g)
    {
        TVec wv = TW.Load(w);
        g = TW.MultiplyAdd(_wdV, wv, g);
        switch (Optimizer.Kind)
        {
            case OptimizerKind.Gd:
                TW.Store(w, TW.Subtract(wv, TW.Multiply(_lrV, g)));
                break;
            case OptimizerKind.Momentum:
            {
                TVec m = TW.MultiplyAdd(_muV, TW.Load(m1), g);
                TW.Store(m1, m);
                TW.Store(w, TW.Subtract(wv, TW.Multiply(_lrV, m)));
                break;
            }
            default:
            {
                TVec m = TW.MultiplyAdd(_b1V, TW.Load(m1), TW.Multiply(_1mb1V, g));
                TVec v = TW.MultiplyAdd(_b2V, TW.Load(m2), TW.Multiply(_1mb2V, TW.Multiply(g, g)));
                TW.Store(m1, m);
                TW.Store(m2, v);
                TVec denom = TW.MultiplyAdd(TW.Sqrt(v), _invV, _epsV);
                TW.Store(w, TW.Subtract(wv, TW.Divide(TW.Multiply(_stepV, m), denom)));
                break;
            }
        }
    }

    public void Dispose()
    {
        foreach (var set in new[] { _wt, _b, _dwt, _db, _m1w, _m1b, _m2w, _m2b, _act, _dz, _csrVal, _cscVal })
            foreach (var buf in set) buf.Dispose();
        foreach (var set in new[] { _csrIdx, _cscSample, _cscCount, _csrCount })
            foreach (var buf in set) buf.Dispose();
        _batchIndex.Dispose(); _batchLabel.Dispose();
        _trainStart.Dispose(); _trainIdx.Dispose(); _trainVal.Dispose();
    }
}

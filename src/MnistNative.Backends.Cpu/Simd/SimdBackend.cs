using System.Runtime.Intrinsics;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>Creates the SIMD backend at a vector width.</summary>
public static class SimdBackend
{
    /// <param name="width">"avx2" (Vector256, AVX2 + FMA) or "avx512" (Vector512, AVX-512F).</param>
    /// <param name="sizes">Layer sizes, 784 first and 10 last.</param>
    /// <param name="optimizer">The optimizer every step applies.</param>
    /// <param name="maxBatch">The most samples one step takes; a whole-set step on the per-layer path needs the
    /// uploaded count (the fused path has no limit).</param>
    /// <param name="threads">Worker threads; 0 = all cores (Environment.ProcessorCount).</param>
    /// <param name="kernel">The fused path's layer-1 kernels: dense, sparse (skip zero pixels), or auto (from the
    /// uploaded images' density).</param>
    /// <exception cref="BackendUnavailableException">The CPU or the runtime (DOTNET_EnableAVX2=0,
    /// DOTNET_EnableAVX512=0) lacks the instruction set; the message names it.</exception>
    public static ITrainingBackend Create(string width, IReadOnlyList<int> sizes, OptimizerSettings optimizer,
        int maxBatch, int threads, KernelMode kernel) =>
        Create(width, sizes, optimizer, maxBatch, threads, kernel, InputLayout.BytesPerTile);

    internal static ITrainingBackend Create(string width, IReadOnlyList<int> sizes, OptimizerSettings optimizer,
        int maxBatch, int threads, KernelMode kernel, InputLayout layout)
    {
        switch (width)
        {
            case "avx2":
                if (CpuFeatures.Avx2UnavailableReason() is { } avx2) throw new BackendUnavailableException(avx2);
                return new SimdBackend<Width256, Vector256<float>>(sizes, optimizer, maxBatch, threads, kernel,
                    layout);
            case "avx512":
                if (CpuFeatures.Avx512UnavailableReason() is { } avx512) throw new BackendUnavailableException(avx512);
                return new SimdBackend<Width512, Vector512<float>>(sizes, optimizer, maxBatch, threads, kernel,
                    layout);
            default:
                throw new ArgumentException($"unknown SIMD width '{width}': expected avx2 or avx512", nameof(width));
        }
    }
}

/// <summary>
/// The SIMD training backend at one vector width, float32. Two paths behind one contract:
/// <list type="bullet">
/// <item>the fused path (<see cref="FusedTilePath{TW, TVec}"/>): whole-set gradient descent on 784-H-10 (the seed's
/// step), tiles of 32 samples through the forward and the backward pass while they are in cache, dense or sparse
/// layer-1 kernels;</item>
/// <item>the per-layer path (<see cref="LayerPath{TW, TVec}"/>): every other step (any depth, sampled batches,
/// momentum, Adam, weight decay), layer by layer over sparse inputs.</item>
/// </list>
/// The paths keep their own weight layouts; the backend tracks which of them holds the current weights and copies
/// across (float32 through float64, exact) when a run switches, so whole-set steps, sampled steps, Predict and
/// GetWeights always see one model. Both paths run on one <see cref="WorkerPool"/>. The per-layer path is built on
/// first use when the fused one applies, since its scratch is sized by the batch (hundreds of MB for a whole-set
/// batch of 60,000 that the fused path never needs).
/// </summary>
/// <summary>Test access to the fused path's choice between the two sparse kernel families.</summary>
internal interface ISparseFamilyChoice
{
    /// <summary>See FusedTilePath.SparseFamily; set before Upload.</summary>
    Layer1Kernel? SparseFamily { set; }
}

internal sealed partial class SimdBackend<TW, TVec> : ITrainingBackend, ISparseFamilyChoice
    where TW : struct, IVectorWidth<TVec>
    where TVec : unmanaged
{
    private readonly int[] _sizes;
    private readonly int _maxBatch;
    private readonly KernelMode _kernelMode; // the fused path applies it; the per-layer path only reports it
    private readonly WorkerPool _pool;
    private readonly FusedTilePath<TW, TVec>? _fused; // null unless the shape is 784-H-10
    private LayerPath<TW, TVec>? _layer;
    private bool _fusedCurrent = true, _layerCurrent = true; // whether each path holds the current weights
    private bool _fusedHasTrain; // the fused path has the uploaded set (it copies it into its own layouts)
    // the caller's images, held only until every path that may still need them has its own copy
    private LabeledImages? _train;
    private int _uploadedCount = -1;
    private int[] _wholeSet = [];
    private long _steps;
    private Profiler? _profiler;

    Layer1Kernel? ISparseFamilyChoice.SparseFamily
    {
        set
        {
            if (_fused != null) _fused.SparseFamily = value;
        }
    }

    public SimdBackend(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch, int threads,
        KernelMode kernel, InputLayout layout = InputLayout.BytesPerTile)
    {
        if (sizes.Count < 2 || sizes[0] != MlpParameters.InputSize || sizes[^1] != MlpParameters.Classes)
            throw new ArgumentException(
                $"sizes must run from {MlpParameters.InputSize} to {MlpParameters.Classes}, " +
                $"got {string.Join('-', sizes)}");
        foreach (int s in sizes) ArgumentOutOfRangeException.ThrowIfLessThan(s, 1, nameof(sizes));
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        optimizer.Validate();
        _sizes = sizes.ToArray();
        _maxBatch = maxBatch;
        _kernelMode = kernel;
        Optimizer = optimizer;
        if (threads == 0) threads = Environment.ProcessorCount;
        _pool = new WorkerPool(threads, TW.Name);
        if (_sizes.Length == 3) _fused = new FusedTilePath<TW, TVec>(_sizes[1], _pool, layout, kernel);
        else _layer = new LayerPath<TW, TVec>(_sizes, optimizer, maxBatch, _pool);
        string isa = TW.Count == 16 ? "AVX-512F" : "AVX2 + FMA";
        Info = new BackendInfo(TW.Name, Precision.F32, threads,
            $"CPU, {TW.Count * 32}-bit vectors ({isa}), {threads} thread{(threads == 1 ? "" : "s")}");
    }

    public BackendInfo Info { get; }
    public IReadOnlyList<int> Sizes => _sizes;
    public OptimizerSettings Optimizer { get; }
    public int MaxBatch => _maxBatch;
    public KernelChoice? KernelChoice { get; private set; }

    public Profiler? Profiler
    {
        get => _profiler;
        set
        {
            _profiler = value;
            if (_fused != null) _fused.Profiler = value;
            if (_layer != null) _layer.Profiler = value;
        }
    }

    /// <summary>Bytes the dedicated worker threads allocated on the managed heap (for the zero-allocation
    /// tests).</summary>
    internal long WorkerAllocatedBytes => _pool.WorkerAllocatedBytes;

    /// <summary>Whether whole-set steps run on the fused path: 784-H-10 and plain gradient descent.</summary>
    internal bool FusedStepsApply => _fused != null && Optimizer.Kind == OptimizerKind.Gd && Optimizer.WeightDecay == 0;

    public void Upload(LabeledImages train)
    {
        _train = train;
        _uploadedCount = train.Count;
        _wholeSet = Enumerable.Range(0, train.Count).ToArray();
        // the fused path keeps its own copy of the set (bytes and the sparse layout): only when its steps apply,
        // else on the first whole-set ComputeGradients
        _fusedHasTrain = false;
        if (FusedStepsApply) FusedWithTrain();
        _layer?.Upload(train);
        ReleaseTrainWhenCopied();
        if (FusedStepsApply)
            KernelChoice = _fused!.KernelChoice;
        else
        {
            double density = Core.KernelChoice.MeasureDensity(train.Pixels);
            string reason = "per-layer path: every layer's input as the list of its non-zero entries";
            if (_kernelMode == KernelMode.Dense)
                reason += " (--kernel dense chooses layer 1's kernels on the fused path, for whole-set gd steps " +
                    "of one hidden layer; this path has no dense kernels)";
            KernelChoice = new KernelChoice(KernelMode.Sparse, reason, density,
                Core.KernelChoice.UsefulFlops(train.Count, _sizes[1], density));
        }
    }

    public void SetWeights(MlpParameters weights)
    {
        if (!weights.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException(
                $"weights are {string.Join('-', weights.Sizes)}, the backend is {string.Join('-', _sizes)}");
        _fused?.SetWeights(weights);
        _layer?.SetWeights(weights);
        _fusedCurrent = _layerCurrent = true;
    }

    public MlpParameters GetWeights() =>
        _fused != null && _fusedCurrent ? _fused.GetWeights() : Layer().GetWeights();

    public OptimizerState GetOptimizerState()
    {
        if (Optimizer.MomentCount == 0) return new OptimizerState(_steps, []);
        LayerPath<TW, TVec> layer = Layer();
        layer.Steps = _steps;
        return layer.GetOptimizerState();
    }

    public void SetOptimizerState(OptimizerState state)
    {
        if (Optimizer.MomentCount == 0)
        {
            if (state.Moments.Length != 0)
                throw new ArgumentException(
                    $"the optimizer state has {state.Moments.Length} moment buffers, gd keeps 0");
        }
        else Layer().SetOptimizerState(state);
        _steps = state.Steps;
    }

    public StepMetrics Step(TrainingBatch batch, double learningRate, bool measure)
    {
        StepMetrics m;
        if (batch.IsWholeSet && FusedStepsApply)
        {
            m = FusedWithTrain().Step(learningRate, measure);
            _steps++;
            _layerCurrent = false;
            return m;
        }
        LayerPath<TW, TVec> layer = Layer();
        layer.Steps = _steps;
        m = layer.StepBatch(Indices(batch), learningRate, measure);
        _steps = layer.Steps;
        _fusedCurrent = false;
        return m;
    }

    public StepMetrics ComputeGradients(TrainingBatch batch, MlpParameters gradients)
    {
        if (!gradients.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException(
                $"gradients are {string.Join('-', gradients.Sizes)}, the backend is {string.Join('-', _sizes)}");
        // the fused kernels compute the plain gradient whatever the optimizer
        if (batch.IsWholeSet && _fused != null && (_fusedHasTrain || _train != null))
            return FusedWithTrain().ComputeGradients(gradients);
        return Layer().ComputeGradients(Indices(batch), gradients);
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        if (_fused != null) Fused().Predict(images, probabilities);
        else Layer().Predict(images, probabilities);
    }

    public void Dispose()
    {
        _pool.Dispose();
        _fused?.Dispose();
        _layer?.Dispose();
    }

    private ReadOnlySpan<int> Indices(TrainingBatch batch)
    {
        if (_uploadedCount < 0) throw new InvalidOperationException("Upload the training set before training");
        if (!batch.IsWholeSet) return batch.Indices;
        if (_wholeSet.Length > _maxBatch)
            throw new ArgumentException(
                $"a whole-set step of {_wholeSet.Length} samples on the per-layer path needs maxBatch >= " +
                $"{_wholeSet.Length}; this backend was built for {_maxBatch}");
        return _wholeSet;
    }

    /// <summary>The fused path with the current weights.</summary>
    private FusedTilePath<TW, TVec> Fused()
    {
        if (!_fusedCurrent)
        {
            _fused!.SetWeights(_layer!.GetWeights());
            _fusedCurrent = true;
        }
        return _fused!;
    }

    /// <summary>The fused path with the current weights and the uploaded set.</summary>
    private FusedTilePath<TW, TVec> FusedWithTrain()
    {
        FusedTilePath<TW, TVec> fused = Fused();
        if (!_fusedHasTrain && _train != null)
        {
            fused.Upload(_train);
            _fusedHasTrain = true;
            ReleaseTrainWhenCopied();
        }
        return fused;
    }

    // The caller's images (47 MB for all of MNIST) need not stay alive once the fused path holds a copy (it can give
    // the set back, TrainingSet), or once the per-layer path does and can take every step the fused path would
    // have needed the set for (no fused path, or a whole set within its maxBatch).
    private void ReleaseTrainWhenCopied()
    {
        if (_fusedHasTrain || (_layer != null && (_fused == null || _wholeSet.Length <= _maxBatch))) _train = null;
    }

    /// <summary>The per-layer path with the current weights, built on first use.</summary>
    private LayerPath<TW, TVec> Layer()
    {
        if (_layer == null)
        {
            _layer = new LayerPath<TW, TVec>(_sizes, Optimizer, _maxBatch, _pool) { Profiler = _profiler };
            if (_train != null) _layer.Upload(_train);
            else if (_fusedHasTrain) _layer.Upload(_fused!.TrainingSet());
            _layerCurrent = false;
            ReleaseTrainWhenCopied();
        }
        if (!_layerCurrent)
        {
            _layer.SetWeights(_fused!.GetWeights());
            _layerCurrent = true;
        }
        return _layer;
    }
}

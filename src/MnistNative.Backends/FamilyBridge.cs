using MnistNative.Core;

namespace MnistNative.Backends;

/// <summary>
/// Transitional: puts a full-batch backend (fused 784-H-10 kernels) and a per-layer backend of the same family
/// behind <see cref="ITrainingBackend"/> until each family implements the contract itself. Whole-set gd steps of
/// 784-H-10 run on the full-batch backend, everything else on the per-layer one (created on first use); the
/// weights move across when the run switches.
/// </summary>
internal sealed class FamilyBridge : ITrainingBackend
{
    private readonly IFullBatchBackend? _fused;
    private readonly Func<IMiniBatchBackend> _createPerLayer;
    private IMiniBatchBackend? _perLayer;
    private LabeledImages? _train;
    private bool _weightsOnFused;
    private Profiler? _profiler;

    public FamilyBridge(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch, IFullBatchBackend? fused,
        Func<IMiniBatchBackend> createPerLayer)
    {
        Sizes = sizes.ToArray();
        Optimizer = optimizer;
        MaxBatch = maxBatch;
        _fused = fused;
        _createPerLayer = createPerLayer;
        _weightsOnFused = fused != null;
        if (fused == null) _perLayer = createPerLayer();
    }

    public BackendInfo Info => _fused?.Info ?? _perLayer!.Info;
    public IReadOnlyList<int> Sizes { get; }
    public OptimizerSettings Optimizer { get; }
    public int MaxBatch { get; }

    public KernelChoice? KernelChoice => _weightsOnFused
        ? (_fused as IKernelChoosingBackend)?.KernelChoice ??
            new KernelChoice(KernelMode.Dense, "the only layer-1 kernel of this backend", 0, 0)
        : new KernelChoice(KernelMode.Dense, "per-layer path", 0, 0);

    public Profiler? Profiler
    {
        get => _profiler;
        set
        {
            _profiler = value;
            if (_fused is IProfiledBackend p) p.Profiler = value;
        }
    }

    public void Upload(LabeledImages train)
    {
        _train = train;
        _fused?.Upload(train);
        _perLayer?.Upload(train);
    }

    public void SetWeights(MlpParameters weights)
    {
        if (_fused != null) _fused.SetWeights(weights);
        else _perLayer!.SetWeights(weights);
        _weightsOnFused = _fused != null;
    }

    public MlpParameters GetWeights() => _weightsOnFused ? _fused!.GetWeights() : _perLayer!.GetWeights();

    public OptimizerState GetOptimizerState() => _perLayer?.GetOptimizerState() ?? new OptimizerState(0, []);

    public void SetOptimizerState(OptimizerState state)
    {
        if (Optimizer.MomentCount == 0 && _fused != null) return;
        PerLayer().SetOptimizerState(state);
    }

    public StepMetrics Step(TrainingBatch batch, double learningRate, bool measure)
    {
        if (UsesFused(batch)) return _fused!.Step(learningRate, measure);
        return PerLayer().StepBatch(Indices(batch), learningRate, measure);
    }

    public StepMetrics ComputeGradients(TrainingBatch batch, MlpParameters gradients)
    {
        if (UsesFused(batch)) return _fused!.ComputeGradients(gradients);
        return PerLayer().ComputeGradients(Indices(batch), gradients);
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        if (_weightsOnFused) _fused!.Predict(images, probabilities);
        else _perLayer!.Predict(images, probabilities);
    }

    public void Synchronize() => _fused?.Synchronize();

    public void Dispose()
    {
        _fused?.Dispose();
        _perLayer?.Dispose();
    }

    private bool UsesFused(TrainingBatch batch)
    {
        bool fused = _fused != null && batch.IsWholeSet && Optimizer.Kind == OptimizerKind.Gd &&
            Optimizer.WeightDecay == 0;
        if (fused && !_weightsOnFused)
        {
            _fused!.SetWeights(_perLayer!.GetWeights());
            _weightsOnFused = true;
        }
        return fused;
    }

    private IMiniBatchBackend PerLayer()
    {
        if (_perLayer == null)
        {
            _perLayer = _createPerLayer();
            if (_train != null) _perLayer.Upload(_train);
        }
        if (_weightsOnFused)
        {
            _perLayer.SetWeights(_fused!.GetWeights());
            _weightsOnFused = false;
        }
        return _perLayer;
    }

    private ReadOnlySpan<int> Indices(TrainingBatch batch)
    {
        if (!batch.IsWholeSet) return batch.Indices;
        int n = _train?.Count ?? 0;
        var all = new int[n];
        for (int i = 0; i < n; i++) all[i] = i;
        return all;
    }
}

using MnistNative.Core;
using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

/// <summary>Which kernels run: tuned for a GPU (many work-items) or for a CPU device (few, wide ones).</summary>
public enum OpenClVariant
{
    Gpu,
    Cpu,
}

/// <summary>How to open an <see cref="OpenClBackend"/>; every field has a sensible default.</summary>
public sealed record OpenClBackendOptions
{
    /// <summary>"P:D", part of a device name, or null / "auto" for the first GPU, else the first device.</summary>
    public string? Device { get; init; }

    /// <summary>"gpu" or "cpu" forces a kernel variant; null / "auto" picks it from the device type.</summary>
    public string? Variant { get; init; }

    /// <summary>Load *.cl from this directory instead of the embedded copies (kernel development).</summary>
    public string? KernelsDirectory { get; init; }

    /// <summary>F64 needs a device with cl_khr_fp64; otherwise opening the backend is a clear error.</summary>
    public Precision Precision { get; init; } = Precision.F32;

    /// <summary>
    /// Create the queue with CL_QUEUE_PROFILING_ENABLE, so that an attached <see cref="OpenClBackend.Profiler"/>
    /// also gets one "device: KERNEL" row per kernel, timed by the device. Without it the profiler gets the
    /// host's phases only (transfers, gathers).
    /// </summary>
    public bool Profiling { get; init; }

    /// <summary>
    /// Layer-1 kernels of the fused 784-H-10 path: Sparse (the CPU variant only) runs sparse_cpu.cl on the
    /// training set's <see cref="PixelBlocks"/>, Dense the fused dense kernel, Auto picks at upload from the
    /// measured density and the blocks' share of the pixel columns (<see cref="OpenClBackend.ChooseKernel"/>).
    /// </summary>
    public KernelMode Kernel { get; init; } = KernelMode.Auto;
}

/// <summary>
/// Training on an OpenCL device: an MLP of any depth, batches of any size up to the whole uploaded set, every
/// optimizer, on one <see cref="OpenClAccelerator"/> that holds the device, the data and the weights. Two kernel
/// families run on it. A whole-set gradient-descent step of a 784-H-10 network (the seed's step, weight decay 0)
/// runs the fused kernels (<see cref="FusedKernels"/>: one pass over tiles of samples, then a reduction); every
/// other step runs the per-layer kernels (<see cref="LayerKernels"/>). The weights are current in one family or
/// both; switching family copies them on the device. Steps that do not measure return without waiting; only a
/// measuring step reads back its few metrics. See docs/opencl-backend.md.
/// </summary>
public sealed unsafe class OpenClBackend : ITrainingBackend
{
    private const int In = MlpParameters.InputSize;
    private const int Out = MlpParameters.Classes;
    // The per-layer family's buffers hold at least this many rows, so that predicting the test set does not
    // run one tiny launch series per image when training with tiny batches.
    private const int MinCapacity = 256;

    private readonly int[] _sizes;
    private readonly string? _kernelsDirectory;
    private readonly int _capacity;
    private readonly OpenClAccelerator _cl;
    private FusedKernels? _fused;
    private LayerKernels? _layers;
    // Where the current weights are: in the fused family's packed buffer, the per-layer buffers, or both.
    private bool _fusedWeightsCurrent, _layerWeightsCurrent;
    // Auto takes the sparse kernels when at most this share of the pixels are non-zero...
    internal const double SparseMaxDensity = 0.5;
    // ...and the blocks of 8 keep fewer than this share of the 784 pixel columns (docs/journal/sparse-training.md).
    internal const double SparseMaxColumnFraction = 0.5;

    private readonly KernelMode _kernelMode;
    private ClBuffer? _pixels, _labels;
    // The training set's blocks while the sparse kernels are chosen (a lazily built FusedKernels binds them too).
    private PixelBlocks? _pixelBlocks;
    private byte[] _trainLabels = [];
    private int[] _wholeSetIndices = [];
    private int _n;
    private long _t;
    private bool _disposed;

    public OpenClBackend(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch,
        OpenClBackendOptions? options = null)
    {
        options ??= new OpenClBackendOptions();
        if (sizes.Count < 2 || sizes[0] != In || sizes[^1] != Out)
            throw new ArgumentException($"sizes must run from {In} to {Out}, got {string.Join('-', sizes)}");
        if (sizes.Count > 10) throw new ArgumentException($"at most 8 hidden layers, got {sizes.Count - 2}");
        foreach (int s in sizes)
            if (s is < 1 or > 4096)
                throw new ArgumentException($"layer widths must be between 1 and 4096, got {string.Join('-', sizes)}");
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        optimizer.Validate();
        _sizes = sizes.ToArray();
        Optimizer = optimizer;
        _capacity = Math.Max(maxBatch, MinCapacity);
        _kernelsDirectory = string.IsNullOrEmpty(options.KernelsDirectory) ? null : options.KernelsDirectory;
        string? variant = options.Variant;
        if (variant?.ToLowerInvariant() is not (null or "" or "auto" or "gpu" or "cpu"))
            throw new ArgumentException($"unknown OpenCL kernel variant '{variant}' (choose gpu, cpu or auto)",
                nameof(options));
        _kernelMode = options.Kernel;
        _cl = new OpenClAccelerator(options.Device, options.Precision, options.Profiling);
        try
        {
            Variant = ResolveVariant(variant, _cl.Device, nameof(options));
            if (_kernelMode == KernelMode.Sparse && Variant == OpenClVariant.Gpu)
                throw new BackendUnavailableException("OpenCL's GPU kernel variant has no sparse kernels; " +
                    "--kernel sparse on opencl goes with the CPU variant (--opencl-variant cpu)");
            // The family the run's steps will take is built now, so that a kernel that does not compile or a
            // device that cannot run it is an error when the backend opens; the other one when it is first needed.
            if (FusedSteps) Fused();
            else Layers();
        }
        catch
        {
            _cl.Dispose();
            throw;
        }
        OpenClDeviceInfo d = _cl.Device;
        Info = new BackendInfo("opencl", options.Precision, d.ComputeUnits,
            $"OpenCL {d.Id} {d.Name} ({d.PlatformName}), {Variant.ToString().ToLowerInvariant()} kernels");
    }

    public BackendInfo Info { get; }

    public IReadOnlyList<int> Sizes => _sizes;

    public OptimizerSettings Optimizer { get; }

    /// <summary>The most samples of a sampled step; a whole-set step on the fused kernels may take more.</summary>
    public int MaxBatch => _capacity;

    public KernelChoice? KernelChoice { get; private set; }

    public OpenClVariant Variant { get; }

    public OpenClDeviceInfo Device => _cl.Device;

    /// <summary>Samples per tile of the fused kernels (CPU variant TS, GPU variant TILE); 0 before they exist.
    /// </summary>
    public int Tile => _fused?.Tile ?? 0;

    /// <summary>Work-groups of the fused kernel for the uploaded set; 0 before it is bound.</summary>
    public int Groups => _fused?.Groups ?? 0;

    /// <summary>
    /// Receives the host's transfers and gathers and, when the backend was opened with
    /// <see cref="OpenClBackendOptions.Profiling"/>, each kernel's device time ("device: NAME"). Device times are
    /// collected at measuring steps, <see cref="Synchronize"/> and when the profiler is detached.
    /// </summary>
    public Profiler? Profiler
    {
        get => _cl.Profiler;
        set
        {
            if (_cl.Profiler != null && !_disposed) _cl.RecordDeviceTimes();
            _cl.Profiler = value;
        }
    }

    /// <summary>"gpu" / "cpu" force a kernel variant; null / "auto" take the GPU kernels on a GPU, else the CPU
    /// ones.</summary>
    internal static OpenClVariant ResolveVariant(string? variant, OpenClDeviceInfo device, string parameter) =>
        variant?.ToLowerInvariant() switch
        {
            null or "" or "auto" => device.Type == OpenClDeviceType.Gpu ? OpenClVariant.Gpu : OpenClVariant.Cpu,
            "gpu" => OpenClVariant.Gpu,
            "cpu" => OpenClVariant.Cpu,
            _ => throw new ArgumentException($"unknown OpenCL kernel variant '{variant}' (choose gpu, cpu or auto)",
                parameter),
        };

    /// <summary>The fused kernels fit the shape: one hidden layer.</summary>
    private bool FusedShape => _sizes.Length == 3;

    /// <summary>Whole-set steps take the fused kernels: the seed's shape and plain gradient descent.</summary>
    private bool FusedSteps => FusedShape && Optimizer.Kind == OptimizerKind.Gd && Optimizer.WeightDecay == 0;

    public void Upload(LabeledImages train)
    {
        ThrowIfDisposed();
        if (train.Count == 0) throw new ArgumentException("the training set is empty", nameof(train));
        _layers?.ReleaseIndexWrite();
        _cl.Release(_pixels);
        _cl.Release(_labels);
        _pixels = _labels = null;
        _n = 0;
        fixed (byte* p = train.Pixels)
            _pixels = _cl.Allocate(train.Pixels.LongLength, "training pixels", p, MemFlags.ReadOnly);
        fixed (byte* p = train.Labels)
            _labels = _cl.Allocate(train.Labels.LongLength, "training labels", p, MemFlags.ReadOnly);
        _n = train.Count;
        _pixelBlocks?.Dispose();
        _pixelBlocks = null;
        _trainLabels = train.Labels;
        double density = KernelChoice.MeasureDensity(train.Pixels);
        if (!FusedShape)
            KernelChoice = new KernelChoice(KernelMode.Dense, "per-layer path", density, 0);
        else
        {
            (_pixelBlocks, string reason) = ChooseKernel(_kernelMode, Variant, density, train);
            KernelChoice = new KernelChoice(_pixelBlocks != null ? KernelMode.Sparse : KernelMode.Dense, reason,
                density, Core.KernelChoice.UsefulFlops(_n, _sizes[1], density));
        }
        if (_fused != null) BindFused(_fused);
        _layers?.Bind(_pixels, _labels);
    }

    /// <summary>
    /// The fused path's layer-1 kernels for a training set, and why: the blocks to run the sparse kernels on, or
    /// null for the dense kernel. Auto takes sparse on the CPU variant when at most
    /// <see cref="SparseMaxDensity"/> of the pixels are non-zero and the blocks keep under
    /// <see cref="SparseMaxColumnFraction"/> of the pixel columns (each kept column costs a block's 8 samples an
    /// FMA whether they are zero or not).
    /// </summary>
    internal static (PixelBlocks? Blocks, string Reason) ChooseKernel(KernelMode mode, OpenClVariant variant,
        double density, LabeledImages train)
    {
        string measured = $"{density:P1} of the training pixels are non-zero";
        if (variant == OpenClVariant.Gpu)
            return (null, $"{(mode == KernelMode.Dense ? "forced by --kernel dense" : "auto")}: the GPU variant's " +
                $"fused kernels are dense (no sparse GPU variant yet; {measured})");
        if (mode == KernelMode.Dense) return (null, $"forced by --kernel dense ({measured})");
        if (mode == KernelMode.Auto && density > SparseMaxDensity)
            return (null, $"auto: {measured}, more than {SparseMaxDensity:P0}");
        const int BlockSize = FusedKernels.SparseBlockSize;
        PixelBlocks blocks = PixelBlocks.Build(train.Pixels, train.Labels,
            (train.Count + BlockSize - 1) / BlockSize * BlockSize, BlockSize);
        string kept = $"{measured}; blocks of {BlockSize} samples keep {blocks.ColumnFraction:P1} " +
            "of the pixel columns";
        if (mode == KernelMode.Sparse) return (blocks, $"forced by --kernel sparse ({kept})");
        if (blocks.ColumnFraction < SparseMaxColumnFraction)
            return (blocks, $"auto: {kept}, under {SparseMaxColumnFraction:P0}");
        blocks.Dispose();
        return (null, $"auto: {kept}, not under {SparseMaxColumnFraction:P0}");
    }

    public void SetWeights(MlpParameters weights)
    {
        ThrowIfDisposed();
        CheckShape(weights, "weights");
        if (_fused != null)
            for (int l = 0; l < 2; l++)
            {
                _cl.WriteReals(_fused.Weights, weights.W[l], _fused.Offset(l, bias: false));
                _cl.WriteReals(_fused.Weights, weights.B[l], _fused.Offset(l, bias: true));
            }
        if (_layers != null)
            for (int l = 0; l < _layers.Layers.Count; l++)
            {
                _cl.WriteReals(_layers.Layers[l].W, weights.W[l]);
                _cl.WriteReals(_layers.Layers[l].B, weights.B[l]);
            }
        _fusedWeightsCurrent = _fused != null;
        _layerWeightsCurrent = _layers != null;
    }

    public MlpParameters GetWeights()
    {
        ThrowIfDisposed();
        var p = new MlpParameters(_sizes);
        if (_layerWeightsCurrent || _fused == null)
            ReadLayers(p, y => y.W, y => y.B);
        else
            ReadPacked(_fused!.Weights, p);
        return p;
    }

    public OptimizerState GetOptimizerState()
    {
        ThrowIfDisposed();
        var moments = new MlpParameters[Optimizer.MomentCount];
        if (moments.Length >= 1) ReadLayers(moments[0] = new MlpParameters(_sizes), y => y.MW!, y => y.MB!);
        if (moments.Length >= 2) ReadLayers(moments[1] = new MlpParameters(_sizes), y => y.VW!, y => y.VB!);
        return new OptimizerState(_t, moments);
    }

    public void SetOptimizerState(OptimizerState state)
    {
        ThrowIfDisposed();
        if (state.Moments.Length != Optimizer.MomentCount)
            throw new ArgumentException(
                $"the optimizer state has {state.Moments.Length} moment buffers, " +
                $"{Optimizer.Kind} keeps {Optimizer.MomentCount}");
        foreach (MlpParameters m in state.Moments) CheckShape(m, "optimizer moments");
        if (state.Moments.Length > 0)
        {
            LayerKernels layers = Layers();
            for (int l = 0; l < layers.Layers.Count; l++)
            {
                LayerKernels.Layer y = layers.Layers[l];
                _cl.WriteReals(y.MW!, state.Moments[0].W[l]);
                _cl.WriteReals(y.MB!, state.Moments[0].B[l]);
                if (state.Moments.Length < 2) continue;
                _cl.WriteReals(y.VW!, state.Moments[1].W[l]);
                _cl.WriteReals(y.VB!, state.Moments[1].B[l]);
            }
        }
        _t = state.Steps;
    }

    public StepMetrics Step(TrainingBatch batch, double learningRate, bool measure)
    {
        ThrowIfDisposed();
        RequireUpload();
        if (batch.IsWholeSet && FusedSteps)
        {
            FusedKernels fused = FusedWithCurrentWeights();
            fused.Enqueue(learningRate, apply: true);
            _layerWeightsCurrent = false;
            _t++;
            return measure ? Measured(fused.ReadMetrics()) : Flushed();
        }
        ReadOnlySpan<int> indices = BatchIndices(batch);
        LayerKernels layers = LayersWithCurrentWeights();
        layers.EnqueueGradients(indices);
        _t++;
        layers.EnqueueUpdate(learningRate, _t);
        _fusedWeightsCurrent = false;
        return measure ? Measured(layers.ReadMetrics(indices.Length)) : Flushed();
    }

    public StepMetrics ComputeGradients(TrainingBatch batch, MlpParameters gradients)
    {
        ThrowIfDisposed();
        RequireUpload();
        CheckShape(gradients, "gradients");
        if (batch.IsWholeSet && FusedShape)
        {
            FusedKernels fused = FusedWithCurrentWeights();
            fused.Enqueue(0, apply: false);
            StepMetrics fusedMetrics = Measured(fused.ReadMetrics());
            ReadPacked(fused.Gradients, gradients);
            return fusedMetrics;
        }
        ReadOnlySpan<int> indices = BatchIndices(batch);
        LayerKernels layers = LayersWithCurrentWeights();
        layers.EnqueueGradients(indices);
        StepMetrics metrics = Measured(layers.ReadMetrics(indices.Length));
        ReadLayers(gradients, y => y.DW, y => y.DB);
        return metrics;
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        ThrowIfDisposed();
        int n = PredictArguments.ImageCount(images, probabilities);
        if (n == 0) return;
        if (!_fusedWeightsCurrent)
        {
            LayersWithCurrentWeights().Predict(images, probabilities);
            return;
        }
        ClBuffer pixels, probs;
        fixed (byte* p = images) pixels = _cl.Allocate(images.Length, "images to predict", p, MemFlags.ReadOnly);
        probs = _cl.AllocateReals((long)n * Out, "probabilities");
        try
        {
            _fused!.Predict(pixels, n, probs);
            _cl.ReadReals(probs, probabilities);
        }
        finally
        {
            _cl.Release(pixels);
            _cl.Release(probs);
        }
    }

    /// <summary>Waits until every queued command has run (for timing from the host), and collects device times.
    /// </summary>
    public void Synchronize()
    {
        ThrowIfDisposed();
        _cl.Finish();
        if (_cl.Profiler != null) _cl.RecordDeviceTimes();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            _pixelBlocks?.Dispose();
            _layers?.ReleaseIndexWrite();
        }
        finally
        {
            _cl.Dispose();
        }
    }

    private FusedKernels Fused()
    {
        if (_fused != null) return _fused;
        _fused = new FusedKernels(_cl, Variant, _sizes[1], _kernelsDirectory);
        if (_pixels != null) BindFused(_fused);
        return _fused;
    }

    private void BindFused(FusedKernels fused)
    {
        if (_pixelBlocks != null) fused.BindSparse(_pixelBlocks, _trainLabels);
        else fused.Bind(_pixels!, _labels!, _n);
    }

    private LayerKernels Layers()
    {
        if (_layers != null) return _layers;
        _layers = new LayerKernels(_cl, Variant, _sizes, Optimizer, _capacity, _kernelsDirectory);
        if (_pixels != null) _layers.Bind(_pixels, _labels!);
        return _layers;
    }

    /// <summary>The fused kernels, with the current weights copied into their packed buffer if they were
    /// elsewhere.</summary>
    private FusedKernels FusedWithCurrentWeights()
    {
        FusedKernels fused = Fused();
        if (!_fusedWeightsCurrent && _layers != null) CopyWeights(_layers, fused, toFused: true);
        _fusedWeightsCurrent = true;
        return fused;
    }

    /// <summary>The per-layer kernels, with the current weights copied into their buffers if they were elsewhere.
    /// </summary>
    private LayerKernels LayersWithCurrentWeights()
    {
        LayerKernels layers = Layers();
        if (!_layerWeightsCurrent && _fused != null) CopyWeights(layers, _fused, toFused: false);
        _layerWeightsCurrent = true;
        return layers;
    }

    /// <summary>
    /// Enqueues device-side copies of w1, b1, w2, b2 between the per-layer buffers and the packed one.
    /// </summary>
    private void CopyWeights(LayerKernels layers, FusedKernels fused, bool toFused)
    {
        for (int l = 0; l < 2; l++)
        {
            LayerKernels.Layer y = layers.Layers[l];
            foreach (var (own, bias, count) in new[] { (y.W, false, (long)y.NOut * y.NIn), (y.B, true, y.NOut) })
            {
                long packed = fused.Offset(l, bias);
                if (toFused) _cl.CopyReals(own, 0, fused.Weights, packed, count);
                else _cl.CopyReals(fused.Weights, packed, own, 0, count);
            }
        }
    }

    /// <summary>The indices of a batch for the per-layer kernels, checked; the whole set is 0..n-1.</summary>
    private ReadOnlySpan<int> BatchIndices(TrainingBatch batch)
    {
        if (batch.IsWholeSet)
        {
            if (_n > _capacity)
                throw new ArgumentException(
                    $"a whole-set step of {_n} samples on the per-layer kernels needs MaxBatch >= {_n}, " +
                    $"got {_capacity}");
            if (_wholeSetIndices.Length != _n) _wholeSetIndices = Enumerable.Range(0, _n).ToArray();
            return _wholeSetIndices;
        }
        ReadOnlySpan<int> indices = batch.Indices;
        if (indices.Length < 1 || indices.Length > _capacity)
            throw new ArgumentException($"a batch takes 1 to {_capacity} samples, got {indices.Length}");
        foreach (int s in indices)
            if ((uint)s >= (uint)_n)
                throw new ArgumentOutOfRangeException(nameof(batch),
                    $"sample index {s} is outside the {_n} uploaded samples");
        return indices;
    }

    private StepMetrics Measured(StepMetrics metrics)
    {
        if (_cl.Profiler != null) _cl.RecordDeviceTimes();
        return metrics;
    }

    private StepMetrics Flushed()
    {
        _cl.Flush();
        return default;
    }

    private void ReadPacked(ClBuffer packed, MlpParameters into)
    {
        for (int l = 0; l < 2; l++)
        {
            _cl.ReadReals(packed, into.W[l], _fused!.Offset(l, bias: false));
            _cl.ReadReals(packed, into.B[l], _fused.Offset(l, bias: true));
        }
    }

    private void ReadLayers(MlpParameters into, Func<LayerKernels.Layer, ClBuffer> w,
        Func<LayerKernels.Layer, ClBuffer> b)
    {
        IReadOnlyList<LayerKernels.Layer> layers = Layers().Layers;
        for (int l = 0; l < layers.Count; l++)
        {
            _cl.ReadReals(w(layers[l]), into.W[l]);
            _cl.ReadReals(b(layers[l]), into.B[l]);
        }
    }

    private void CheckShape(MlpParameters p, string what)
    {
        if (!p.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException(
                $"{what} are {string.Join('-', p.Sizes)}, the backend is {string.Join('-', _sizes)}");
    }

    private void RequireUpload()
    {
        if (_n == 0) throw new InvalidOperationException("Upload the training set before training");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}

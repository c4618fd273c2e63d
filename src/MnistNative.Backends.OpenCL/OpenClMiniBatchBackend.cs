using MnistNative.Core;
using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

/// <summary>How to open an <see cref="OpenClMiniBatchBackend"/>; every field has a sensible default.</summary>
public sealed record OpenClMiniBatchOptions
{
    /// <summary>"P:D", part of a device name, or null / "auto" for the first GPU, else the first device.</summary>
    public string? Device { get; init; }

    /// <summary>Load minibatch.cl from this directory instead of the embedded copy (kernel development).</summary>
    public string? KernelsDirectory { get; init; }

    /// <summary>F64 needs a device with cl_khr_fp64; otherwise opening the backend is a clear error.</summary>
    public Precision Precision { get; init; } = Precision.F32;

    /// <summary>"gpu" or "cpu" forces the matrix kernels' variant; null / "auto" picks it from the device type.</summary>
    public string? Variant { get; init; }
}

/// <summary>
/// Mini-batch training of an MLP of any depth on an OpenCL device, mirroring <c>DeepReferenceBackend&lt;T&gt;</c>
/// (native/opencl/minibatch.cl names the reference function behind each kernel). The training images stay on
/// the device as bytes; a step copies the batch's sample indices into a preallocated buffer (without
/// waiting) and enqueues, per layer, the forward pass, then softmax + loss + dz, the backward pass and the
/// optimizer update. Only a measuring step waits, to read back its per-sample metrics. Every device buffer
/// is allocated when the backend opens (the training set when it is uploaded), none per step.
/// The matrix kernels (forward, weight and input gradients) come in two variants, as the full-batch
/// backend's: GPU kernels (minibatch.cl: 16 x 16 work-groups over local-memory tiles) and CPU-device kernels
/// (minibatch_cpu.cl: a few dozen work-items, each a register-blocked rectangle of explicit vectors).
/// </summary>
public sealed unsafe class OpenClMiniBatchBackend : IMiniBatchBackend
{
    private const int In = MlpParameters.InputSize;
    private const int Out = MlpParameters.Classes;
    // Matrix kernels run 16 x 16 work-groups over 16 x 16 local tiles: 2 KB of local memory in float32,
    // within every device's minimum (16 KB), and 256 work-items, what every GPU and PoCL allow.
    private const int Tile = 16;
    // Predict and batches smaller than this still get buffers of this many rows, so that predicting the
    // test set does not run one tiny launch series per image when training with tiny batches.
    private const int MinCapacity = 256;
    private static readonly nuint[] s_tileGroup = [Tile, Tile];
    private static readonly nuint[] s_single = [1, 1];
    // CPU variant: work-items per compute unit. One item per core would leave a core idle behind the
    // slowest (ragged) item or behind another process on a shared machine; many small items re-read more
    // operands. A few per core balance the two.
    private const int CpuItemsPerUnit = 8;

    private readonly int[] _sizes;
    private readonly int _capacity;
    private readonly int _realSize;
    private readonly int _vectorWidth;
    private readonly int _itemTarget;
    private readonly OpenClDeviceInfo _device;
    private readonly Layer[] _layers;
    private readonly int[] _stagedIndices; // pinned: the source of the non-blocking index write
    private readonly double[] _metricsHost;
    private readonly float[] _metricsHostF32;
    private nint _indexWrite; // the event of the last non-blocking index write; _stagedIndices is busy until it completes
    private long _t;
    private int _n;
    private bool _disposed;

    private ClContext? _context;
    private ClCommandQueue? _queue;
    private ClProgram? _program;
    private ClKernel? _gather, _gatherPredict, _loss, _softmax;
    private ClBuffer? _pixels, _labels, _indices, _predictPixels, _identity, _input, _metrics, _probabilities;

    /// <summary>One layer's device state: parameters, gradients, moments, its output and the output's gradient.</summary>
    private sealed class Layer
    {
        public required int NIn, NOut;
        public ClBuffer? W, B, DW, DB, MW, MB, VW, VB, A, DZ;
        public ClKernel? Forward, BackwardWeights, BackwardBias, BackwardInput, UpdateW, UpdateB;
    }

    public OpenClMiniBatchBackend(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch, OpenClMiniBatchOptions? options = null)
    {
        options ??= new OpenClMiniBatchOptions();
        if (sizes.Count < 2 || sizes[0] != In || sizes[^1] != Out)
            throw new ArgumentException($"sizes must run from {In} to {Out}, got {string.Join('-', sizes)}");
        if (sizes.Count > 10) throw new ArgumentException($"at most 8 hidden layers, got {sizes.Count - 2}");
        foreach (int s in sizes)
            if (s is < 1 or > 4096) throw new ArgumentException($"layer widths must be between 1 and 4096, got {string.Join('-', sizes)}");
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        optimizer.Validate();
        if (!OpenClRuntime.TryProbe(out string reason)) throw new BackendUnavailableException(reason);
        _device = OpenClRuntime.SelectDevice(options.Device);
        bool f64 = options.Precision == Precision.F64;
        if (f64 && !_device.SupportsDouble)
            throw new BackendUnavailableException($"OpenCL device {_device.Id} {_device.Name} has no double support (cl_khr_fp64): use float32");
        Variant = OpenClBackend.ResolveVariant(options.Variant, _device, nameof(options));
        if (Variant == OpenClVariant.Gpu && _device.MaxWorkGroupSize < Tile * Tile)
            throw new BackendUnavailableException($"OpenCL device {_device.Name} allows {_device.MaxWorkGroupSize} work-items per group; the mini-batch kernels need {Tile * Tile}");
        _sizes = sizes.ToArray();
        Optimizer = optimizer;
        _capacity = Math.Max(maxBatch, MinCapacity);
        _realSize = f64 ? 8 : 4;
        _stagedIndices = GC.AllocateArray<int>(_capacity, pinned: true);
        _metricsHost = new double[2 * _capacity];
        _metricsHostF32 = f64 ? [] : new float[2 * _capacity];
        _layers = new Layer[_sizes.Length - 1];
        for (int l = 0; l < _layers.Length; l++) _layers[l] = new Layer { NIn = _sizes[l], NOut = _sizes[l + 1] };

        // VW: the CPU kernels' vector, 64 bytes (one AVX-512 register) in either precision
        _vectorWidth = f64 ? 8 : 16;
        _itemTarget = Math.Max(1, _device.ComputeUnits * CpuItemsPerUnit);
        string defines = $"-cl-std=CL1.2 -D REAL={(f64 ? "double" : "float")} -D TILE={Tile} -D VW={_vectorWidth}" + (f64 ? " -D USE_F64" : "");
        try
        {
            _context = ClContext.Create(_device.DeviceHandle);
            _queue = ClCommandQueue.Create(_context, _device.DeviceHandle, profiling: false);
            string? dir = string.IsNullOrEmpty(options.KernelsDirectory) ? null : options.KernelsDirectory;
            _program = ClProgram.Build(_context, _device.DeviceHandle, KernelSource.Program(Variant == OpenClVariant.Cpu ? ["minibatch.cl", "minibatch_cpu.cl"] : ["minibatch.cl"], dir), defines);
            CreateBuffersAndKernels();
        }
        catch
        {
            Dispose();
            throw;
        }
        Info = new BackendInfo("opencl", options.Precision, _device.ComputeUnits,
            $"OpenCL {_device.Id} {_device.Name} ({_device.PlatformName}), mini-batch {Variant.ToString().ToLowerInvariant()} kernels");
    }

    public BackendInfo Info { get; }
    public IReadOnlyList<int> Sizes => _sizes;
    public OptimizerSettings Optimizer { get; }
    public int MaxBatch => _capacity;
    public OpenClDeviceInfo Device => _device;

    /// <summary>Which matrix kernels run: GPU (minibatch.cl) or CPU-device (minibatch_cpu.cl).</summary>
    public OpenClVariant Variant { get; }

    private void CreateBuffersAndKernels()
    {
        long cap = _capacity;
        _indices = Allocate(cap * sizeof(int), "batch indices");
        _predictPixels = Allocate(cap * In, "images to predict");
        _identity = Allocate(cap * sizeof(int), "predict indices");
        var identity = new int[_capacity];
        for (int i = 0; i < identity.Length; i++) identity[i] = i;
        fixed (int* p = identity) WriteBytes(_identity, p, cap * sizeof(int));
        _input = AllocateReals(cap * In, "gathered input rows");
        _metrics = AllocateReals(2 * cap, "per-sample metrics");
        _probabilities = AllocateReals(cap * Out, "probabilities");

        _gather = ClKernel.Create(_program!, "gather_input");
        _gather.SetArg(0, _input);
        _gather.SetArg(2, _indices);
        _gatherPredict = ClKernel.Create(_program!, "gather_input");
        _gatherPredict.SetArg(0, _input);
        _gatherPredict.SetArg(1, _predictPixels);
        _gatherPredict.SetArg(2, _identity);
        _softmax = ClKernel.Create(_program!, "softmax");
        _softmax.SetArg(0, _probabilities);

        int moments = Optimizer.MomentCount;
        for (int l = 0; l < _layers.Length; l++)
        {
            Layer y = _layers[l];
            long weights = (long)y.NOut * y.NIn;
            y.W = AllocateReals(weights, $"layer {l + 1} weights");
            y.B = AllocateReals(y.NOut, $"layer {l + 1} biases");
            y.DW = AllocateReals(weights, $"layer {l + 1} weight gradients");
            y.DB = AllocateReals(y.NOut, $"layer {l + 1} bias gradients");
            if (moments >= 1) { y.MW = AllocateZeros(weights, $"layer {l + 1} first moments"); y.MB = AllocateZeros(y.NOut, $"layer {l + 1} first moments"); }
            if (moments >= 2) { y.VW = AllocateZeros(weights, $"layer {l + 1} second moments"); y.VB = AllocateZeros(y.NOut, $"layer {l + 1} second moments"); }
            y.A = AllocateReals(cap * y.NOut, $"layer {l + 1} activations");
            y.DZ = AllocateReals(cap * y.NOut, $"layer {l + 1} activation gradients");
            ClBuffer aIn = l == 0 ? _input : _layers[l - 1].A!;

            string suffix = Variant == OpenClVariant.Cpu ? "_cpu" : "";
            y.Forward = ClKernel.Create(_program!, "layer_forward" + suffix);
            y.Forward.SetArg(0, y.A);
            y.Forward.SetArg(1, aIn);
            y.Forward.SetArg(2, y.W);
            y.Forward.SetArg(3, y.B);
            y.Forward.SetArg(5, y.NIn);
            y.Forward.SetArg(6, y.NOut);
            y.Forward.SetArg(7, l + 1 < _layers.Length ? 1 : 0);

            y.BackwardWeights = ClKernel.Create(_program!, "layer_backward_weights" + suffix);
            y.BackwardWeights.SetArg(0, y.DW);
            y.BackwardWeights.SetArg(1, y.DZ);
            y.BackwardWeights.SetArg(2, aIn);
            y.BackwardWeights.SetArg(4, y.NIn);
            y.BackwardWeights.SetArg(5, y.NOut);

            y.BackwardBias = ClKernel.Create(_program!, "layer_backward_bias");
            y.BackwardBias.SetArg(0, y.DB);
            y.BackwardBias.SetArg(1, y.DZ);
            y.BackwardBias.SetArg(3, y.NOut);

            if (l > 0)
            {
                y.BackwardInput = ClKernel.Create(_program!, "layer_backward_input" + suffix);
                y.BackwardInput.SetArg(0, _layers[l - 1].DZ!);
                y.BackwardInput.SetArg(1, y.DZ);
                y.BackwardInput.SetArg(2, y.W);
                y.BackwardInput.SetArg(3, aIn);
                y.BackwardInput.SetArg(5, y.NIn);
                y.BackwardInput.SetArg(6, y.NOut);
            }
            y.UpdateW = CreateUpdate(y.W, y.DW, y.MW, y.VW, weights);
            y.UpdateB = CreateUpdate(y.B, y.DB, y.MB, y.VB, y.NOut);
        }

        Layer last = _layers[^1];
        _loss = ClKernel.Create(_program!, "softmax_cross_entropy_backward");
        _loss.SetArg(0, last.DZ!);
        _loss.SetArg(1, _metrics);
        _loss.SetArg(2, last.A!);
        _loss.SetArg(4, _indices);
        _softmax.SetArg(1, last.A!);
    }

    /// <summary>The optimizer's kernel for one parameter buffer, with everything but the per-step scalars bound.</summary>
    private ClKernel CreateUpdate(ClBuffer w, ClBuffer g, ClBuffer? m, ClBuffer? v, long count)
    {
        ClKernel k;
        switch (Optimizer.Kind)
        {
            case OptimizerKind.Gd:
                k = ClKernel.Create(_program!, "gd_update");
                k.SetArg(0, w); k.SetArg(1, g); k.SetArg(2, (int)count);
                SetReal(k, 4, Optimizer.WeightDecay);
                break;
            case OptimizerKind.Momentum:
                k = ClKernel.Create(_program!, "momentum_update");
                k.SetArg(0, w); k.SetArg(1, g); k.SetArg(2, m!); k.SetArg(3, (int)count);
                SetReal(k, 5, Optimizer.WeightDecay);
                SetReal(k, 6, Optimizer.Momentum);
                break;
            default:
                k = ClKernel.Create(_program!, "adam_update");
                k.SetArg(0, w); k.SetArg(1, g); k.SetArg(2, m!); k.SetArg(3, v!); k.SetArg(4, (int)count);
                SetReal(k, 5, Optimizer.WeightDecay);
                SetReal(k, 6, Optimizer.Beta1);
                SetReal(k, 7, Optimizer.Beta2);
                SetReal(k, 10, Optimizer.Epsilon);
                break;
        }
        return k;
    }

    public void Upload(LabeledImages train)
    {
        ThrowIfDisposed();
        if (train.Count == 0) throw new ArgumentException("the training set is empty", nameof(train));
        Finish(); // nothing queued may still read the old set
        _pixels?.Dispose();
        _labels?.Dispose();
        _pixels = _labels = null;
        _n = 0;
        fixed (byte* p = train.Pixels) _pixels = Allocate(train.Pixels.LongLength, "training pixels", p);
        fixed (byte* p = train.Labels) _labels = Allocate(train.Labels.LongLength, "training labels", p);
        _n = train.Count;
        _gather!.SetArg(1, _pixels);
        _loss!.SetArg(3, _labels);
    }

    public void SetWeights(MlpParameters weights)
    {
        ThrowIfDisposed();
        CheckShape(weights, "weights");
        for (int l = 0; l < _layers.Length; l++)
        {
            WriteReals(_layers[l].W!, weights.W[l]);
            WriteReals(_layers[l].B!, weights.B[l]);
        }
    }

    public MlpParameters GetWeights()
    {
        ThrowIfDisposed();
        return Read(y => y.W!, y => y.B!);
    }

    public OptimizerState GetOptimizerState()
    {
        ThrowIfDisposed();
        var moments = new MlpParameters[Optimizer.MomentCount];
        if (moments.Length >= 1) moments[0] = Read(y => y.MW!, y => y.MB!);
        if (moments.Length >= 2) moments[1] = Read(y => y.VW!, y => y.VB!);
        return new OptimizerState(_t, moments);
    }

    public void SetOptimizerState(OptimizerState state)
    {
        ThrowIfDisposed();
        if (state.Moments.Length != Optimizer.MomentCount)
            throw new ArgumentException($"the optimizer state has {state.Moments.Length} moment buffers, {Optimizer.Kind} keeps {Optimizer.MomentCount}");
        foreach (MlpParameters m in state.Moments) CheckShape(m, "optimizer moments");
        for (int l = 0; l < _layers.Length; l++)
        {
            Layer y = _layers[l];
            if (state.Moments.Length >= 1) { WriteReals(y.MW!, state.Moments[0].W[l]); WriteReals(y.MB!, state.Moments[0].B[l]); }
            if (state.Moments.Length >= 2) { WriteReals(y.VW!, state.Moments[1].W[l]); WriteReals(y.VB!, state.Moments[1].B[l]); }
        }
        _t = state.Steps;
    }

    public StepMetrics StepBatch(ReadOnlySpan<int> sampleIndices, double learningRate, bool measure)
    {
        int n = EnqueueGradients(sampleIndices);
        _t++;
        double step = learningRate, invSqrtBc2 = 0;
        if (Optimizer.Kind == OptimizerKind.Adam)
            (step, invSqrtBc2) = OptimizerMath.AdamScales(learningRate, Optimizer.Beta1, Optimizer.Beta2, _t);
        foreach (Layer y in _layers)
        {
            EnqueueUpdate(y.UpdateW!, (long)y.NOut * y.NIn, step, invSqrtBc2);
            EnqueueUpdate(y.UpdateB!, y.NOut, step, invSqrtBc2);
        }
        if (!measure)
        {
            ClErrors.Check(OpenClRuntime.Api.Flush(_queue!.Raw), "clFlush");
            return default;
        }
        return ReadMetrics(n);
    }

    public StepMetrics ComputeGradients(ReadOnlySpan<int> sampleIndices, MlpParameters gradients)
    {
        CheckShape(gradients, "gradients");
        int n = EnqueueGradients(sampleIndices);
        StepMetrics metrics = ReadMetrics(n);
        for (int l = 0; l < _layers.Length; l++)
        {
            ReadReals(_layers[l].DW!, gradients.W[l]);
            ReadReals(_layers[l].DB!, gradients.B[l]);
        }
        return metrics;
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        ThrowIfDisposed();
        int count = images.Length / In;
        if (images.Length != count * In) throw new ArgumentException($"images must be rows of {In} bytes, got {images.Length} bytes");
        if (probabilities.Length != count * Out) throw new ArgumentException($"need {count * Out} probabilities for {count} images, got {probabilities.Length}");
        for (int start = 0; start < count; start += _capacity)
        {
            int n = Math.Min(_capacity, count - start);
            fixed (byte* p = images.Slice(start * In, n * In)) WriteBytes(_predictPixels!, p, (long)n * In);
            _gatherPredict!.SetArg(3, n);
            Enqueue2D(_gatherPredict, In, n);
            EnqueueForward(n);
            _softmax!.SetArg(2, n);
            Enqueue1D(_softmax, n);
            ReadReals(_probabilities!, probabilities.Slice(start * Out, n * Out));
        }
    }

    /// <summary>Waits until every queued command has run (for timing from the host).</summary>
    public void Finish()
    {
        ThrowIfDisposed();
        ClErrors.Check(OpenClRuntime.Api.Finish(_queue!.Raw), "clFinish");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_queue != null && !_queue.IsClosed) OpenClRuntime.Api.Finish(_queue.Raw); // nothing may run on what we release
        if (_indexWrite != 0) OpenClRuntime.Api.ReleaseEvent(_indexWrite);
        _indexWrite = 0;
        // Children before parents: kernels, buffers, program, queue, context.
        foreach (Layer y in _layers)
            foreach (ClKernel? k in new[] { y.Forward, y.BackwardWeights, y.BackwardBias, y.BackwardInput, y.UpdateW, y.UpdateB }) k?.Dispose();
        foreach (ClKernel? k in new[] { _gather, _gatherPredict, _loss, _softmax }) k?.Dispose();
        foreach (Layer y in _layers)
            foreach (ClBuffer? b in new[] { y.W, y.B, y.DW, y.DB, y.MW, y.MB, y.VW, y.VB, y.A, y.DZ }) b?.Dispose();
        foreach (ClBuffer? b in new[] { _pixels, _labels, _indices, _predictPixels, _identity, _input, _metrics, _probabilities }) b?.Dispose();
        _program?.Dispose();
        _queue?.Dispose();
        _context?.Dispose();
    }

    /// <summary>Uploads the indices and enqueues forward, loss and backward (mean gradients into DW, DB).</summary>
    private int EnqueueGradients(ReadOnlySpan<int> sampleIndices)
    {
        ThrowIfDisposed();
        if (_n == 0) throw new InvalidOperationException("Upload the training set before training");
        int n = sampleIndices.Length;
        if (n < 1 || n > _capacity) throw new ArgumentException($"a batch takes 1 to {_capacity} samples, got {n}");
        foreach (int s in sampleIndices)
            if ((uint)s >= (uint)_n) throw new ArgumentOutOfRangeException(nameof(sampleIndices), $"sample index {s} is outside the {_n} uploaded samples");
        WriteIndices(sampleIndices);

        _gather!.SetArg(3, n);
        Enqueue2D(_gather, In, n);
        EnqueueForward(n);
        _loss!.SetArg(5, n);
        SetReal(_loss, 6, 1.0 / n);
        Enqueue1D(_loss, n);
        for (int l = _layers.Length - 1; l >= 0; l--)
        {
            Layer y = _layers[l];
            y.BackwardWeights!.SetArg(3, n);
            if (Variant == OpenClVariant.Cpu) EnqueueCpuGrid(y.BackwardWeights, 6, y.NIn, 4 * _vectorWidth, y.NOut);
            else Enqueue2DTiled(y.BackwardWeights, y.NIn, y.NOut);
            y.BackwardBias!.SetArg(2, n);
            Enqueue1D(y.BackwardBias, y.NOut);
            if (y.BackwardInput == null) continue;
            y.BackwardInput.SetArg(4, n);
            if (Variant == OpenClVariant.Cpu) EnqueueCpuGrid(y.BackwardInput, 7, y.NIn, 4 * _vectorWidth, n);
            else Enqueue2DTiled(y.BackwardInput, y.NIn, n);
        }
        return n;
    }

    private void EnqueueForward(int n)
    {
        foreach (Layer y in _layers)
        {
            y.Forward!.SetArg(4, n);
            if (Variant == OpenClVariant.Cpu) EnqueueCpuGrid(y.Forward, 8, y.NOut, 4, n);
            else Enqueue2DTiled(y.Forward, y.NOut, n);
        }
    }

    private void EnqueueUpdate(ClKernel kernel, long count, double step, double invSqrtBc2)
    {
        switch (Optimizer.Kind)
        {
            case OptimizerKind.Gd: SetReal(kernel, 3, step); break;
            case OptimizerKind.Momentum: SetReal(kernel, 4, step); break;
            default: SetReal(kernel, 8, step); SetReal(kernel, 9, invSqrtBc2); break;
        }
        Enqueue1D(kernel, count);
    }

    /// <summary>
    /// Copies the indices into the pinned staging array and enqueues a non-blocking write of them. The array
    /// is reused, so the previous write (queued a step ago, long since started) must have finished first.
    /// </summary>
    private void WriteIndices(ReadOnlySpan<int> sampleIndices)
    {
        CL api = OpenClRuntime.Api;
        if (_indexWrite != 0)
        {
            nint previous = _indexWrite;
            _indexWrite = 0;
            int wait = api.WaitForEvents(1, &previous);
            api.ReleaseEvent(previous);
            ClErrors.Check(wait, "clWaitForEvents");
        }
        sampleIndices.CopyTo(_stagedIndices);
        nint ev;
        fixed (int* p = _stagedIndices)
            ClErrors.Check(api.EnqueueWriteBuffer(_queue!.Raw, _indices!.Raw, false, 0, (nuint)(sampleIndices.Length * sizeof(int)), p, 0, null, &ev), "clEnqueueWriteBuffer(batch indices)");
        _indexWrite = ev;
    }

    private StepMetrics ReadMetrics(int n)
    {
        Span<double> m = _metricsHost.AsSpan(0, 2 * n);
        ReadReals(_metrics!, m);
        int correct = 0;
        double loss = 0;
        for (int i = 0; i < n; i++)
        {
            correct += m[2 * i] > 0.5 ? 1 : 0;
            loss += m[2 * i + 1];
        }
        return new StepMetrics(correct, loss, n);
    }

    private void Enqueue1D(ClKernel kernel, long count) => Enqueue(kernel, 1, [RoundUp(count, 64), 1], null);

    private void Enqueue2D(ClKernel kernel, long x, long y) => Enqueue(kernel, 2, [RoundUp(x, Tile), (nuint)y], null);

    private void Enqueue2DTiled(ClKernel kernel, long x, long y) => Enqueue(kernel, 2, [RoundUp(x, Tile), RoundUp(y, Tile)], s_tileGroup);

    /// <summary>
    /// Enqueues a CPU-variant matrix kernel over an x-by-y output (x in multiples of xStep, y of 4 rows):
    /// sets its rows-per-item and columns-per-item arguments (at sizeArg, sizeArg + 1; forward: samples, then
    /// outputs) and runs one work-item per rectangle, in groups of one.
    /// </summary>
    private void EnqueueCpuGrid(ClKernel kernel, uint sizeArg, int x, int xStep, int y)
    {
        (int xPer, int yPer) = Split(x, xStep, y, 4, _itemTarget);
        kernel.SetArg(sizeArg, yPer);
        kernel.SetArg(sizeArg + 1, xPer);
        Enqueue(kernel, 2, [(nuint)((x + xPer - 1) / xPer), (nuint)((y + yPer - 1) / yPer)], s_single);
    }

    /// <summary>
    /// Cuts an x-by-y output into about target rectangles whose sides are multiples of xStep and yStep:
    /// starting from one rectangle, halves the longer side (in steps) until there are enough. Returns the
    /// rectangle's sides.
    /// </summary>
    internal static (int XPer, int YPer) Split(int x, int xStep, int y, int yStep, int target)
    {
        int xSteps = (x + xStep - 1) / xStep, ySteps = (y + yStep - 1) / yStep;
        int xPer = xSteps, yPer = ySteps; // in steps
        while ((long)((xSteps + xPer - 1) / xPer) * ((ySteps + yPer - 1) / yPer) < target && (xPer > 1 || yPer > 1))
        {
            // compare the sides in elements: the longer one is cut
            if (xPer > 1 && ((long)xPer * xStep >= (long)yPer * yStep || yPer == 1)) xPer = (xPer + 1) / 2;
            else yPer = (yPer + 1) / 2;
        }
        return (xPer * xStep, yPer * yStep);
    }

    private void Enqueue(ClKernel kernel, uint dimensions, ReadOnlySpan<nuint> global, nuint[]? local)
    {
        fixed (nuint* g = global)
        fixed (nuint* l = local)
        {
            int code = OpenClRuntime.Api.EnqueueNdrangeKernel(_queue!.Raw, kernel.Raw, dimensions, null, g, local != null ? l : null, 0, null, null);
            ClErrors.Check(code, $"clEnqueueNDRangeKernel({kernel.Name})");
        }
    }

    private MlpParameters Read(Func<Layer, ClBuffer> w, Func<Layer, ClBuffer> b)
    {
        var p = new MlpParameters(_sizes);
        for (int l = 0; l < _layers.Length; l++)
        {
            ReadReals(w(_layers[l]), p.W[l]);
            ReadReals(b(_layers[l]), p.B[l]);
        }
        return p;
    }

    private void CheckShape(MlpParameters p, string what)
    {
        if (!p.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException($"{what} are {string.Join('-', p.Sizes)}, the backend is {string.Join('-', _sizes)}");
    }

    private ClBuffer Allocate(long bytes, string what, void* hostData = null) =>
        ClTransfers.Allocate(_context!, _device, MemFlags.ReadWrite, bytes, what, hostData);

    private ClBuffer AllocateReals(long count, string what) => Allocate(count * _realSize, what);

    private ClBuffer AllocateZeros(long count, string what)
    {
        ClBuffer buffer = AllocateReals(count, what);
        WriteReals(buffer, new double[count]);
        return buffer;
    }

    private void SetReal(ClKernel kernel, uint index, double value) => ClTransfers.SetReal(kernel, index, value, _realSize);

    private void WriteReals(ClBuffer buffer, double[] values) => ClTransfers.WriteReals(_queue!, buffer, values, _realSize);

    private void WriteBytes(ClBuffer buffer, void* data, long bytes) => ClTransfers.WriteBytes(_queue!, buffer, data, bytes);

    /// <summary>Reads values.Length reals from the start of the buffer (blocking: waits for the queue).</summary>
    private void ReadReals(ClBuffer buffer, Span<double> values) => ClTransfers.ReadReals(_queue!, buffer, values, _realSize, _metricsHostF32);

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private static nuint RoundUp(long value, int multiple) => (nuint)((value + multiple - 1) / multiple * multiple);
}

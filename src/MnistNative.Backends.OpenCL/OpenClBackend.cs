using System.Runtime.InteropServices;
using MnistNative.Core;
using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

/// <summary>Which kernel family runs: tuned for a GPU (many work-items) or for a CPU device (few, wide ones).</summary>
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

    /// <summary>Create the queue with CL_QUEUE_PROFILING_ENABLE and record every kernel's time.</summary>
    public bool Profiling { get; init; }
}

/// <summary>Total device time of one kernel over the backend's life (for a --profile table).</summary>
public sealed record KernelTiming(string Name, int Calls, double TotalMilliseconds);

/// <summary>
/// Full-batch training on an OpenCL device. The training set, the weights and the gradient scratch live on
/// the device; a step enqueues the fused forward+backward kernel and the reduce-and-update kernel and returns
/// without waiting, and only a measuring step reads back its few metrics. See docs/opencl-backend.md.
/// </summary>
public sealed unsafe class OpenClBackend : IFullBatchBackend, IProfiledBackend
{
    private const int In = MlpParameters.InputSize;
    private const int Out = MlpParameters.Classes;
    // Partial slices start on a 16-value boundary: PoCL's vector loads and stores need 64-byte alignment.
    private const int SliceAlignment = 16;
    // The CPU variant's sample tile: 16 rows of 784 floats (50 KB) and the output layer on float16 vectors
    // of 16 samples. Measured on PoCL (H = 10, kernel CPU time): TS = 16 5.2 ms/iteration, TS = 8 5.8.
    private const int CpuTile = 16;
    // Work-items per compute unit for the CPU variant: a few per core balance the uneven last group.
    private const int CpuGroupsPerUnit = 3;
    // Persistent work-groups per compute unit for the GPU variant.
    private const int GpuGroupsPerUnit = 4;
    // The partials scratch is capped so that wide hidden layers on many-CU GPUs still fit.
    private const long MaxPartialBytes = 256L << 20;

    private readonly int _hidden;
    private readonly int _realSize;
    private readonly int _paramCount;
    private readonly int _stride;
    private readonly int _workGroupSize;
    private readonly int _tile;
    private readonly OpenClDeviceInfo _device;
    private readonly bool _profiling;
    private readonly List<(string Kernel, nint Event)> _pendingEvents = [];
    private readonly Dictionary<string, (int Calls, double Milliseconds)> _profile = [];

    private ClContext? _context;
    private ClCommandQueue? _queue;
    private ClProgram? _program;
    private ClKernel? _train, _reduce, _predict;
    private ClBuffer? _params, _grads, _pixels, _labels, _partials, _metrics;
    private int _n, _groups, _samplesPerGroup;
    private bool _disposed;

    public OpenClBackend(int hidden, OpenClBackendOptions? options = null)
    {
        options ??= new OpenClBackendOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(hidden, 1);
        if (!OpenClRuntime.TryProbe(out string reason)) throw new BackendUnavailableException(reason);
        _device = OpenClRuntime.SelectDevice(options.Device);
        Variant = ResolveVariant(options.Variant, _device, nameof(options));
        bool f64 = options.Precision == Precision.F64;
        if (f64 && !_device.SupportsDouble)
            throw new BackendUnavailableException($"OpenCL device {_device.Id} {_device.Name} has no double support (cl_khr_fp64): use float32");
        _hidden = hidden;
        _realSize = f64 ? 8 : 4;
        _paramCount = hidden * In + hidden + Out * hidden + Out;
        _stride = (_paramCount + SliceAlignment - 1) / SliceAlignment * SliceAlignment;
        _profiling = options.Profiling;

        string real = f64 ? "double" : "float";
        string defines = $"-D REAL={real} -D H={hidden}" + (f64 ? " -D USE_F64" : "");
        string[] files;
        if (Variant == OpenClVariant.Cpu)
        {
            int width = _device.PreferredFloatVectorWidth >= 16 && !f64 ? 16 : 8;
            _tile = EnvInt("MNISTNATIVE_OPENCL_CPU_TILE", CpuTile);
            if (_tile is not (8 or 16)) throw new ArgumentException($"MNISTNATIVE_OPENCL_CPU_TILE must be 8 or 16, got {_tile}");
            defines += $" -D VW={width} -D TS={_tile}";
            files = ["common.cl", "forward_backward_cpu.cl", "reduce_update.cl", "predict.cl"];
            _workGroupSize = 1;
        }
        else
        {
            _workGroupSize = (int)Math.Min(256, FloorPowerOfTwo(_device.MaxWorkGroupSize));
            _tile = GpuTile(_device.LocalMemoryBytes, hidden, _realSize, _workGroupSize);
            defines += $" -D VW=4 -D WG={_workGroupSize} -D TILE={_tile}";
            files = ["common.cl", "forward_backward_gpu.cl", "reduce_update.cl", "predict.cl"];
        }

        try
        {
            _context = ClContext.Create(_device.DeviceHandle);
            _queue = ClCommandQueue.Create(_context, _device.DeviceHandle, _profiling);
            _program = ClProgram.Build(_context, _device.DeviceHandle, KernelSource.Program(files, string.IsNullOrEmpty(options.KernelsDirectory) ? null : options.KernelsDirectory), "-cl-std=CL1.2 " + defines);
            _train = ClKernel.Create(_program, Variant == OpenClVariant.Cpu ? "forward_backward_cpu" : "forward_backward_gpu");
            _reduce = ClKernel.Create(_program, "reduce_update");
            _predict = ClKernel.Create(_program, "predict");
            if (Variant == OpenClVariant.Gpu && (long)_train.WorkGroupSize(_device.DeviceHandle) < _workGroupSize)
                throw new BackendUnavailableException($"OpenCL device {_device.Name} cannot run the GPU kernel with {_workGroupSize} work-items per group (limit {_train.WorkGroupSize(_device.DeviceHandle)})");
            _params = Allocate(MemFlags.ReadWrite, (long)_stride * _realSize, "weights");
            _grads = Allocate(MemFlags.ReadWrite, (long)_stride * _realSize, "gradients");
        }
        catch
        {
            Dispose();
            throw;
        }
        Info = new BackendInfo("opencl", options.Precision, _device.ComputeUnits,
            $"OpenCL {_device.Id} {_device.Name} ({_device.PlatformName}), {Variant.ToString().ToLowerInvariant()} kernels");
    }

    public BackendInfo Info { get; }

    private Profiler? _profiler;

    /// <summary>
    /// Receives each kernel's device time ("device: NAME", from OpenCL event profiling) and the host's reads
    /// of metrics and weights. Needs <see cref="OpenClBackendOptions.Profiling"/>; detaching collects what is
    /// still queued.
    /// </summary>
    public Profiler? Profiler
    {
        get => _profiler;
        set
        {
            if (value != null && !_profiling) throw new InvalidOperationException("profiling is off: open the backend with OpenClBackendOptions.Profiling = true");
            if (_profiler != null && !_disposed) HarvestEvents();
            _profiler = value;
        }
    }

    public OpenClVariant Variant { get; }

    /// <summary>"gpu" / "cpu" force a kernel variant; null / "auto" take the GPU kernels on a GPU, else the CPU ones.</summary>
    internal static OpenClVariant ResolveVariant(string? variant, OpenClDeviceInfo device, string parameter) => variant?.ToLowerInvariant() switch
    {
        null or "" or "auto" => device.Type == OpenClDeviceType.Gpu ? OpenClVariant.Gpu : OpenClVariant.Cpu,
        "gpu" => OpenClVariant.Gpu,
        "cpu" => OpenClVariant.Cpu,
        _ => throw new ArgumentException($"unknown OpenCL kernel variant '{variant}' (choose gpu, cpu or auto)", parameter),
    };

    public OpenClDeviceInfo Device => _device;

    /// <summary>Samples per tile: CPU variant TS, GPU variant TILE (chosen from local memory).</summary>
    public int Tile => _tile;

    /// <summary>Work-groups of the fused kernel for the uploaded set (one partial-gradient slice each).</summary>
    public int Groups => _groups;

    public void Upload(LabeledImages train)
    {
        ThrowIfDisposed();
        if (train.Count == 0) throw new ArgumentException("the training set is empty", nameof(train));
        ReleaseData();
        _n = train.Count;
        fixed (byte* pixels = train.Pixels)
            _pixels = Allocate(MemFlags.ReadOnly, train.Pixels.LongLength, "training pixels", pixels);
        fixed (byte* labels = train.Labels)
            _labels = Allocate(MemFlags.ReadOnly, train.Labels.LongLength, "training labels", labels);

        int tiles = (_n + _tile - 1) / _tile;
        long sliceBytes = (long)_stride * _realSize;
        if (Variant == OpenClVariant.Cpu)
        {
            int groups = Math.Clamp(EnvInt("MNISTNATIVE_OPENCL_CPU_GROUPS", _device.ComputeUnits * CpuGroupsPerUnit), 1, tiles);
            _samplesPerGroup = (tiles + groups - 1) / groups * _tile;
            _groups = (_n + _samplesPerGroup - 1) / _samplesPerGroup;
        }
        else
        {
            _groups = (int)Math.Clamp(Math.Min((long)_device.ComputeUnits * GpuGroupsPerUnit, MaxPartialBytes / sliceBytes), 1, tiles);
            _samplesPerGroup = 0;
        }
        _partials = Allocate(MemFlags.ReadWrite, _groups * sliceBytes, "gradient partials");
        _metrics = Allocate(MemFlags.ReadWrite, 2L * _groups * _realSize, "metrics");

        _train!.SetArg(0, _pixels);
        _train.SetArg(1, _labels);
        _train.SetArg(2, _n);
        _train.SetArg(3, _samplesPerGroup);
        _train.SetArg(4, _params!);
        _train.SetArg(5, _partials);
        _train.SetArg(6, _stride);
        _train.SetArg(7, _metrics);
        _reduce!.SetArg(0, _partials);
        _reduce.SetArg(1, _groups);
        _reduce.SetArg(2, _stride);
        _reduce.SetArg(3, _params!);
        _reduce.SetArg(4, _grads!);
        SetReal(_reduce, 5, 1.0 / _n);
    }

    public void SetWeights(MlpParameters weights)
    {
        ThrowIfDisposed();
        CheckShape(weights);
        var values = new double[_stride];
        int o = 0;
        foreach (double[] part in new[] { weights.W[0], weights.B[0], weights.W[1], weights.B[1] })
        {
            part.CopyTo(values, o);
            o += part.Length;
        }
        WriteReals(_params!, values);
    }

    public MlpParameters GetWeights()
    {
        ThrowIfDisposed();
        return Unpack(ReadReals(_params!, _paramCount));
    }

    public StepMetrics Step(double learningRate, bool measure)
    {
        EnqueueForwardBackward();
        EnqueueReduce(learningRate, apply: true);
        if (!measure)
        {
            ClErrors.Check(OpenClRuntime.Api.Flush(_queue!.Raw), "clFlush");
            return default;
        }
        return ReadMetrics();
    }

    public StepMetrics ComputeGradients(MlpParameters gradients)
    {
        CheckShape(gradients);
        EnqueueForwardBackward();
        EnqueueReduce(0, apply: false);
        StepMetrics metrics = ReadMetrics();
        MlpParameters g = Unpack(ReadReals(_grads!, _paramCount));
        for (int l = 0; l < 2; l++)
        {
            g.W[l].CopyTo(gradients.W[l], 0);
            g.B[l].CopyTo(gradients.B[l], 0);
        }
        return metrics;
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        ThrowIfDisposed();
        int n = images.Length / In;
        if (images.Length != n * In) throw new ArgumentException($"images must be rows of {In} bytes, got {images.Length} bytes");
        if (probabilities.Length != n * Out) throw new ArgumentException($"need {n * Out} probabilities for {n} images, got {probabilities.Length}");
        if (n == 0) return;
        ClBuffer pixels, probs;
        fixed (byte* p = images) pixels = Allocate(MemFlags.ReadOnly, images.Length, "images to predict", p);
        using (pixels)
        using (probs = Allocate(MemFlags.WriteOnly, (long)n * Out * _realSize, "probabilities"))
        {
            _predict!.SetArg(0, pixels);
            _predict.SetArg(1, n);
            _predict.SetArg(2, _params!);
            _predict.SetArg(3, probs);
            Enqueue(_predict, RoundUp(n, 64), null);
            ReadReals(probs, n * Out).CopyTo(probabilities);
        }
    }

    /// <summary>Per-kernel device time so far (needs <see cref="OpenClBackendOptions.Profiling"/>); waits for queued work.</summary>
    public IReadOnlyList<KernelTiming> GetKernelProfile()
    {
        ThrowIfDisposed();
        if (!_profiling) throw new InvalidOperationException("profiling is off: open the backend with OpenClBackendOptions.Profiling = true");
        HarvestEvents();
        return _profile.Select(kv => new KernelTiming(kv.Key, kv.Value.Calls, kv.Value.Milliseconds))
            .OrderByDescending(t => t.TotalMilliseconds).ToList();
    }

    public void Synchronize() => Finish();

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
        foreach (var (_, e) in _pendingEvents) OpenClRuntime.Api.ReleaseEvent(e);
        _pendingEvents.Clear();
        // Children before parents: kernels, buffers, program, queue, context.
        _train?.Dispose();
        _reduce?.Dispose();
        _predict?.Dispose();
        ReleaseData();
        _params?.Dispose();
        _grads?.Dispose();
        _program?.Dispose();
        _queue?.Dispose();
        _context?.Dispose();
    }

    private void EnqueueForwardBackward()
    {
        ThrowIfDisposed();
        if (_n == 0) throw new InvalidOperationException("Upload the training set before training");
        if (Variant == OpenClVariant.Cpu)
            Enqueue(_train!, (nuint)_groups, 1);
        else
            Enqueue(_train!, (nuint)(_groups * _workGroupSize), (nuint)_workGroupSize);
    }

    private void EnqueueReduce(double learningRate, bool apply)
    {
        SetReal(_reduce!, 6, learningRate);
        _reduce!.SetArg(7, apply ? 1 : 0);
        Enqueue(_reduce, RoundUp(_paramCount, 64), null);
    }

    private StepMetrics ReadMetrics()
    {
        long t = Profiler.Now();
        double[] m = ReadReals(_metrics!, 2 * _groups);
        _profiler?.Record("transfer: read metrics (waits for the queue)", t);
        double correct = 0, loss = 0;
        for (int g = 0; g < _groups; g++)
        {
            correct += m[2 * g];
            loss += m[2 * g + 1];
        }
        return new StepMetrics((int)Math.Round(correct), loss, _n);
    }

    private void Enqueue(ClKernel kernel, nuint global, nuint? local)
    {
        nint ev = 0;
        nuint l = local ?? 0;
        int code = OpenClRuntime.Api.EnqueueNdrangeKernel(_queue!.Raw, kernel.Raw, 1, null, &global, local.HasValue ? &l : null, 0, null, _profiling ? &ev : null);
        ClErrors.Check(code, $"clEnqueueNDRangeKernel({kernel.Name})");
        if (!_profiling) return;
        _pendingEvents.Add((kernel.Name, ev));
        if (_pendingEvents.Count >= 4096) HarvestEvents();
    }

    private void HarvestEvents()
    {
        if (_pendingEvents.Count == 0) return;
        CL api = OpenClRuntime.Api;
        ClErrors.Check(api.Finish(_queue!.Raw), "clFinish");
        try
        {
            foreach (var (kernel, e) in _pendingEvents)
            {
                ulong start, end;
                ClErrors.Check(api.GetEventProfilingInfo(e, ProfilingInfo.Start, sizeof(ulong), &start, null), "clGetEventProfilingInfo");
                ClErrors.Check(api.GetEventProfilingInfo(e, ProfilingInfo.End, sizeof(ulong), &end, null), "clGetEventProfilingInfo");
                var (calls, ms) = _profile.GetValueOrDefault(kernel);
                _profile[kernel] = (calls + 1, ms + (end - start) / 1e6);
                _profiler?.RecordDevice("device: " + kernel, (long)start, (long)end, thread: 1);
            }
        }
        finally
        {
            foreach (var (_, e) in _pendingEvents) api.ReleaseEvent(e);
            _pendingEvents.Clear();
        }
    }

    private ClBuffer Allocate(MemFlags flags, long bytes, string what, void* hostData = null) =>
        ClTransfers.Allocate(_context!, _device, flags, bytes, what, hostData);

    private void SetReal(ClKernel kernel, uint index, double value) => ClTransfers.SetReal(kernel, index, value, _realSize);

    private void WriteReals(ClBuffer buffer, double[] values) => ClTransfers.WriteReals(_queue!, buffer, values, _realSize);

    private double[] ReadReals(ClBuffer buffer, int count)
    {
        var values = new double[count];
        ClTransfers.ReadReals(_queue!, buffer, values, _realSize);
        return values;
    }

    private MlpParameters Unpack(double[] values)
    {
        var p = MlpParameters.ForHidden(_hidden);
        int o = 0;
        foreach (double[] part in new[] { p.W[0], p.B[0], p.W[1], p.B[1] })
        {
            values.AsSpan(o, part.Length).CopyTo(part);
            o += part.Length;
        }
        return p;
    }

    private void CheckShape(MlpParameters weights)
    {
        if (weights.LayerCount != 2 || weights.Sizes[0] != In || weights.Sizes[1] != _hidden || weights.Sizes[2] != Out)
            throw new ArgumentException($"the OpenCL backend was built for 784-{_hidden}-10, got {string.Join('-', weights.Sizes)}");
    }

    private void ReleaseData()
    {
        _pixels?.Dispose();
        _labels?.Dispose();
        _partials?.Dispose();
        _metrics?.Dispose();
        _pixels = _labels = _partials = _metrics = null;
        _n = 0;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Experiment knobs (docs/opencl-backend.md): an integer environment variable, else the default.</summary>
    private static int EnvInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out int v) && v > 0 ? v : fallback;

    private static nuint RoundUp(int value, int multiple) => (nuint)((value + multiple - 1) / multiple * multiple);

    private static long FloorPowerOfTwo(long v)
    {
        long p = 1;
        while (p * 2 <= v) p *= 2;
        return p;
    }

    /// <summary>The largest sample tile (16 down to 1) whose local arrays fit in the device's local memory.</summary>
    private static int GpuTile(long localBytes, int hidden, int realSize, int workGroupSize)
    {
        for (int tile = 16; tile > 1; tile /= 2)
        {
            long need = (long)tile * (In + 2 * hidden + Out) * realSize + (long)workGroupSize * (realSize + 4);
            if (need + 1024 <= localBytes) return tile;
        }
        return 1;
    }
}

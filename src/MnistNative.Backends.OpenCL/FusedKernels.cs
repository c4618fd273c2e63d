using MnistNative.Core;

namespace MnistNative.Backends.OpenCL;

/// <summary>
/// The fused kernels of a 784-H-10 network on the whole uploaded set (the seed's full-batch step):
/// forward_backward_cpu.cl / forward_backward_gpu.cl run the whole forward and backward pass per tile of samples
/// into per-group gradient partials, reduce_update.cl sums them and takes the gradient-descent step, predict.cl
/// runs inference. The weights live in one packed buffer in the seed's layout [w1 (H,784) | b1 | w2 (10,H) | b2].
/// Everything is created through the <see cref="OpenClAccelerator"/>, which owns and releases it.
/// </summary>
internal sealed unsafe class FusedKernels
{
    private const int In = MlpParameters.InputSize;
    private const int Out = MlpParameters.Classes;
    // Partial slices start on a 16-value boundary: PoCL's vector loads and stores need 64-byte alignment.
    private const int SliceAlignment = 16;
    // The CPU variant's sample tile: 16 rows of 784 reals and the output layer on 16-wide vectors of samples
    // (docs/opencl-backend.md has the measurements behind it).
    private const int CpuTile = 16;
    // Work-items per compute unit for the CPU variant: a few per core balance the uneven last group.
    private const int CpuGroupsPerUnit = 3;
    // Persistent work-groups per compute unit for the GPU variant.
    private const int GpuGroupsPerUnit = 4;
    // The partials scratch is capped so that wide hidden layers on many-CU GPUs still fit.
    private const long MaxPartialBytes = 256L << 20;

    private readonly OpenClAccelerator _cl;
    private readonly OpenClVariant _variant;
    private readonly int _workGroupSize;
    private readonly ClKernel _train, _reduce, _predict;
    private double[] _metricsHost = [];
    private ClBuffer? _partials, _metrics;
    private int _n, _groups;

    public FusedKernels(OpenClAccelerator cl, OpenClVariant variant, int hidden, string? kernelsDirectory)
    {
        _cl = cl;
        _variant = variant;
        Hidden = hidden;
        ParameterCount = hidden * In + hidden + Out * hidden + Out;
        Stride = (ParameterCount + SliceAlignment - 1) / SliceAlignment * SliceAlignment;
        OpenClDeviceInfo device = cl.Device;
        bool f64 = cl.RealSize == 8;
        string defines = $"-D REAL={cl.RealType} -D H={hidden}" + (f64 ? " -D USE_F64" : "");
        string[] files;
        if (variant == OpenClVariant.Cpu)
        {
            int width = device.PreferredFloatVectorWidth >= 16 && !f64 ? 16 : 8;
            Tile = EnvInt("MNISTNATIVE_OPENCL_CPU_TILE", CpuTile);
            if (Tile is not (8 or 16))
                throw new ArgumentException($"MNISTNATIVE_OPENCL_CPU_TILE must be 8 or 16, got {Tile}");
            defines += $" -D VW={width} -D TS={Tile}";
            files = ["common.cl", "forward_backward_cpu.cl", "reduce_update.cl", "predict.cl"];
            _workGroupSize = 1;
        }
        else
        {
            _workGroupSize = (int)Math.Min(256, FloorPowerOfTwo(device.MaxWorkGroupSize));
            Tile = GpuTile(device.LocalMemoryBytes, hidden, cl.RealSize, _workGroupSize);
            defines += $" -D VW=4 -D WG={_workGroupSize} -D TILE={Tile}";
            files = ["common.cl", "forward_backward_gpu.cl", "reduce_update.cl", "predict.cl"];
        }
        ClProgram program = cl.BuildProgram(files, kernelsDirectory, defines);
        _train = cl.CreateKernel(program,
            variant == OpenClVariant.Cpu ? "forward_backward_cpu" : "forward_backward_gpu");
        _reduce = cl.CreateKernel(program, "reduce_update");
        _predict = cl.CreateKernel(program, "predict");
        if (variant == OpenClVariant.Gpu && (long)_train.WorkGroupSize(device.DeviceHandle) < _workGroupSize)
            throw new BackendUnavailableException(
                $"OpenCL device {device.Name} cannot run the GPU kernel with {_workGroupSize} work-items per group " +
                $"(limit {_train.WorkGroupSize(device.DeviceHandle)})");
        Weights = cl.AllocateReals(Stride, "weights");
        Gradients = cl.AllocateReals(Stride, "gradients");
    }

    public int Hidden { get; }

    /// <summary>Reals of the model: w1, b1, w2, b2.</summary>
    public int ParameterCount { get; }

    /// <summary>Reals between two gradient partials: <see cref="ParameterCount"/> rounded up to the alignment.
    /// </summary>
    public int Stride { get; }

    /// <summary>Samples per tile: the CPU variant's TS, the GPU variant's TILE (chosen from local memory).</summary>
    public int Tile { get; }

    /// <summary>Work-groups of the fused kernel for the uploaded set (one partial-gradient slice each).</summary>
    public int Groups => _groups;

    /// <summary>The packed weights [w1 | b1 | w2 | b2].</summary>
    public ClBuffer Weights { get; }

    /// <summary>The mean gradients of the last step, packed like <see cref="Weights"/>.</summary>
    public ClBuffer Gradients { get; }

    /// <summary>Real offsets of w1, b1, w2, b2 in <see cref="Weights"/>.</summary>
    public long Offset(int layer, bool bias) => (layer, bias) switch
    {
        (0, false) => 0,
        (0, true) => (long)Hidden * In,
        (1, false) => (long)Hidden * In + Hidden,
        _ => (long)Hidden * In + Hidden + Out * Hidden,
    };

    /// <summary>Points the kernels at a newly uploaded training set and sizes the partials for it.</summary>
    public void Bind(ClBuffer pixels, ClBuffer labels, int n)
    {
        _cl.Release(_partials);
        _cl.Release(_metrics);
        _partials = _metrics = null;
        int tiles = (n + Tile - 1) / Tile;
        long sliceBytes = (long)Stride * _cl.RealSize;
        int samplesPerGroup;
        if (_variant == OpenClVariant.Cpu)
        {
            int wanted = EnvInt("MNISTNATIVE_OPENCL_CPU_GROUPS", _cl.Device.ComputeUnits * CpuGroupsPerUnit);
            int groups = Math.Clamp(wanted, 1, tiles);
            samplesPerGroup = (tiles + groups - 1) / groups * Tile;
            _groups = (n + samplesPerGroup - 1) / samplesPerGroup;
        }
        else
        {
            long most = Math.Min((long)_cl.Device.ComputeUnits * GpuGroupsPerUnit, MaxPartialBytes / sliceBytes);
            _groups = (int)Math.Clamp(most, 1, tiles);
            samplesPerGroup = 0;
        }
        _partials = _cl.Allocate(_groups * sliceBytes, "gradient partials");
        _metrics = _cl.AllocateReals(2L * _groups, "metrics");
        _metricsHost = new double[2 * _groups];
        _n = n;

        _train.SetArg(0, pixels);
        _train.SetArg(1, labels);
        _train.SetArg(2, n);
        _train.SetArg(3, samplesPerGroup);
        _train.SetArg(4, Weights);
        _train.SetArg(5, _partials);
        _train.SetArg(6, Stride);
        _train.SetArg(7, _metrics);
        _reduce.SetArg(0, _partials);
        _reduce.SetArg(1, _groups);
        _reduce.SetArg(2, Stride);
        _reduce.SetArg(3, Weights);
        _reduce.SetArg(4, Gradients);
        _cl.SetReal(_reduce, 5, 1.0 / n);
    }

    /// <summary>Enqueues the fused forward/backward pass and the reduction into <see cref="Gradients"/>; with
    /// <paramref name="apply"/>, also the step w -= lr * grad.</summary>
    public void Enqueue(double learningRate, bool apply)
    {
        if (_variant == OpenClVariant.Cpu)
            _cl.Enqueue(_train, [(nuint)_groups], [1]);
        else
            _cl.Enqueue(_train, [(nuint)(_groups * _workGroupSize)], [(nuint)_workGroupSize]);
        _cl.SetReal(_reduce, 6, learningRate);
        _reduce.SetArg(7, apply ? 1 : 0);
        _cl.Enqueue(_reduce, [RoundUp(ParameterCount, 64)]);
    }

    /// <summary>The metrics of the last enqueued pass (waits for it).</summary>
    public StepMetrics ReadMetrics()
    {
        double[] m = _metricsHost;
        _cl.ReadReals(_metrics!, m);
        double correct = 0, loss = 0;
        for (int g = 0; g < _groups; g++)
        {
            correct += m[2 * g];
            loss += m[2 * g + 1];
        }
        return new StepMetrics((int)Math.Round(correct), loss, _n);
    }

    /// <summary>Softmax probabilities of n images already on the device.</summary>
    public void Predict(ClBuffer pixels, int n, ClBuffer probabilities)
    {
        _predict.SetArg(0, pixels);
        _predict.SetArg(1, n);
        _predict.SetArg(2, Weights);
        _predict.SetArg(3, probabilities);
        _cl.Enqueue(_predict, [RoundUp(n, 64)]);
    }

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

using MnistNative.Core;
using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

/// <summary>
/// The fused kernels of a 784-H-10 network on the whole uploaded set (the seed's full-batch step):
/// forward_backward_cpu.cl / forward_backward_gpu.cl run the whole forward and backward pass per tile of samples
/// into per-group gradient partials, reduce_update.cl sums them and takes the gradient-descent step, predict.cl
/// runs inference. The weights live in one packed buffer in the seed's layout [w1 (H,784) | b1 | w2 (10,H) | b2].
/// On the CPU variant the layer-1 products can instead run sparse (<see cref="BindSparse"/>): sparse_cpu.cl's
/// forward per block of 8 samples and weight gradient per pixel column, on the set's <see cref="PixelBlocks"/>.
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
    // The sparse layer-1 kernels (sparse_cpu.cl), CPU variant only.
    private readonly ClKernel? _sparseForward, _sparseGradient;
    private double[] _metricsHost = [];
    private ClBuffer? _partials, _metrics;
    /// <summary>Samples per block of the sparse kernels (sparse_cpu.cl's BS: one float8 across samples).</summary>
    public const int SparseBlockSize = 8;

    // The bound PixelBlocks on the device, while the sparse kernels are in use.
    private readonly List<ClBuffer> _sparseBuffers = [];
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
            defines += $" -D VW={width} -D TS={Tile} -D HC={HiddenChunk(hidden, 16)} -D HC2={HiddenChunk(hidden, 12)}";
            files = ["common.cl", "forward_backward_cpu.cl", "sparse_cpu.cl", "reduce_update.cl", "predict.cl"];
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
        if (variant == OpenClVariant.Cpu)
        {
            _sparseForward = cl.CreateKernel(program, "sparse_forward_cpu");
            _sparseGradient = cl.CreateKernel(program, "sparse_weight_gradient_cpu");
        }
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

    /// <summary>Whether the steps run the sparse layer-1 kernels (<see cref="BindSparse"/> was called last).</summary>
    public bool Sparse { get; private set; }

    /// <summary>Whether this variant has the sparse kernels.</summary>
    public bool HasSparse => _sparseForward != null;

    /// <summary>Points the kernels at a newly uploaded training set and sizes the partials for it.</summary>
    public void Bind(ClBuffer pixels, ClBuffer labels, int n)
    {
        ReleaseBound();
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

    /// <summary>
    /// Points the sparse kernels at the training set's <paramref name="blocks"/> (n = blocks.Count samples):
    /// uploads both copies of the entries, the labels in the blocks' order and each work-item's range of blocks
    /// and of pixels, and sizes the partials, which hold b1 .. b2 only (dw1 comes whole from the gradient kernel).
    /// </summary>
    public void BindSparse(PixelBlocks blocks, ReadOnlySpan<byte> labels)
    {
        if (!HasSparse) throw new InvalidOperationException("the GPU variant has no sparse kernels");
        ReleaseBound();
        int n = blocks.Count, blockCount = blocks.BlockCount;
        int wanted = EnvInt("MNISTNATIVE_OPENCL_CPU_GROUPS", _cl.Device.ComputeUnits * CpuGroupsPerUnit);
        int items = Math.Clamp(wanted, 1, Math.Max(1, blockCount));
        // a block's fixed work (output layer, softmax, backward) weighs as much as this many entries
        const int BlockOverhead = 24;
        int[] blockSplit = Split(blockCount, items, b =>
            blocks.BlockStart.Pointer[b + 1] - blocks.BlockStart.Pointer[b] + BlockOverhead);
        int[] columnSplit = Split(In, items, k =>
            blocks.ColumnStart.Pointer[k + 1] - blocks.ColumnStart.Pointer[k] + 1);
        var blockLabels = new byte[blocks.Rows];
        for (int i = 0; i < blocks.Rows; i++)
        {
            int image = blocks.Order.Pointer[i];
            blockLabels[i] = image < 0 ? (byte)255 : labels[image];
        }
        long entries = Math.Max(1, blocks.Entries);
        ClBuffer Upload<T>(NativeBuffer<T> b, long count, string what) where T : unmanaged
        {
            ClBuffer buffer = _cl.Allocate(count * sizeof(T), what, b.Pointer, MemFlags.ReadOnly);
            _sparseBuffers.Add(buffer);
            return buffer;
        }
        ClBuffer FromArray<T>(T[] values, string what) where T : unmanaged
        {
            fixed (T* p = values)
            {
                ClBuffer buffer = _cl.Allocate((long)values.Length * sizeof(T), what, p, MemFlags.ReadOnly);
                _sparseBuffers.Add(buffer);
                return buffer;
            }
        }
        ClBuffer blockStart = Upload(blocks.BlockStart, blockCount + 1, "pixel blocks: block starts");
        ClBuffer blockColumn = Upload(blocks.BlockColumn, entries, "pixel blocks: block columns");
        ClBuffer blockBytes = Upload(blocks.BlockBytes, entries * SparseBlockSize, "pixel blocks: by block");
        ClBuffer columnStart = Upload(blocks.ColumnStart, In + 1, "pixel blocks: column starts");
        ClBuffer columnBlock = Upload(blocks.ColumnBlock, entries, "pixel blocks: column blocks");
        ClBuffer columnBytes = Upload(blocks.ColumnBytes, entries * SparseBlockSize, "pixel blocks: by pixel");
        ClBuffer labelBuffer = FromArray(blockLabels, "pixel blocks: labels");
        ClBuffer blockSplitBuffer = FromArray(blockSplit, "pixel blocks: blocks per work-item");
        ClBuffer columnSplitBuffer = FromArray(columnSplit, "pixel blocks: pixels per work-item");
        ClBuffer dz1 = _cl.AllocateReals((long)blocks.Rows * Hidden, "hidden-layer deltas");
        _sparseBuffers.Add(dz1);

        // per item: the b1 .. b2 sums (reduce_update's slice), then the same per lane of a block pair (sparse_cpu.cl)
        int tail = ParameterCount - (int)Offset(0, bias: true);
        int partialStride = RoundUp(RoundUp(tail, SliceAlignment) + 2 * SparseBlockSize * tail, SliceAlignment);
        _partials = _cl.AllocateReals((long)items * partialStride, "gradient partials");
        _metrics = _cl.AllocateReals(2L * items, "metrics");
        _metricsHost = new double[2 * items];
        _groups = items;
        _n = n;
        Sparse = true;

        ClKernel f = _sparseForward!, w = _sparseGradient!;
        f.SetArg(0, blockSplitBuffer);
        f.SetArg(1, blockStart);
        f.SetArg(2, blockColumn);
        f.SetArg(3, blockBytes);
        f.SetArg(4, labelBuffer);
        f.SetArg(5, Weights);
        f.SetArg(6, dz1);
        f.SetArg(7, _partials);
        f.SetArg(8, partialStride);
        f.SetArg(9, _metrics);
        w.SetArg(0, columnSplitBuffer);
        w.SetArg(1, columnStart);
        w.SetArg(2, columnBlock);
        w.SetArg(3, columnBytes);
        w.SetArg(4, dz1);
        w.SetArg(5, Weights);
        w.SetArg(6, Gradients);
        _cl.SetReal(w, 7, 1.0 / (255.0 * n));
        w.SetArg(10, _partials);
        w.SetArg(11, items);
        w.SetArg(12, partialStride);
        _cl.SetReal(w, 13, 1.0 / n);
    }

    /// <summary>Enqueues the fused forward/backward pass and the reduction into <see cref="Gradients"/>; with
    /// <paramref name="apply"/>, also the step w -= lr * grad.</summary>
    public void Enqueue(double learningRate, bool apply)
    {
        if (Sparse)
        {
            _cl.Enqueue(_sparseForward!, [(nuint)_groups], [1]);
            _cl.SetReal(_sparseGradient!, 8, learningRate);
            _sparseGradient!.SetArg(9, apply ? 1 : 0);
            _cl.Enqueue(_sparseGradient!, [(nuint)_groups], [1]);
            return;
        }
        if (_variant == OpenClVariant.Cpu)
            _cl.Enqueue(_train, [(nuint)_groups], [1]);
        else
            _cl.Enqueue(_train, [(nuint)(_groups * _workGroupSize)], [(nuint)_workGroupSize]);
        _cl.SetReal(_reduce, 6, learningRate);
        _reduce.SetArg(7, apply ? 1 : 0);
        _cl.Enqueue(_reduce, [(nuint)RoundUp(ParameterCount, 64)]);
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
        _cl.Enqueue(_predict, [(nuint)RoundUp(n, 64)]);
    }

    private void ReleaseBound()
    {
        _cl.Release(_partials);
        _cl.Release(_metrics);
        _partials = _metrics = null;
        foreach (ClBuffer b in _sparseBuffers) _cl.Release(b);
        _sparseBuffers.Clear();
        Sparse = false;
    }

    /// <summary>
    /// Cuts 0..count-1 into <paramref name="parts"/> consecutive ranges of about equal total weight: (parts + 1)
    /// bounds, the first 0 and the last count.
    /// </summary>
    internal static int[] Split(int count, int parts, Func<int, long> weight)
    {
        long total = 0;
        for (int i = 0; i < count; i++) total += weight(i);
        var bounds = new int[parts + 1];
        long done = 0;
        int next = 0;
        for (int p = 1; p < parts; p++)
        {
            long target = total * p / parts;
            while (next < count && done + weight(next) / 2 < target) done += weight(next++);
            bounds[p] = next;
        }
        bounds[parts] = count;
        return bounds;
    }

    /// <summary>
    /// The hidden units the sparse kernels keep in registers per pass over the entries: at most
    /// <paramref name="most"/> (16 for the forward's one accumulator per unit, 12 for the gradient's two: with the
    /// pixels and the loaded value they fit the 32 vector registers of AVX-512), in as few passes as that allows,
    /// split evenly so that the last pass repeats few units.
    /// </summary>
    internal static int HiddenChunk(int hidden, int most)
    {
        int passes = (hidden + most - 1) / most;
        return (hidden + passes - 1) / passes;
    }

    /// <summary>Experiment knobs (docs/opencl-backend.md): an integer environment variable, else the default.</summary>
    private static int EnvInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out int v) && v > 0 ? v : fallback;

    private static int RoundUp(int value, int multiple) => (value + multiple - 1) / multiple * multiple;

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

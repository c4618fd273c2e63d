using MnistNative.Core;

namespace MnistNative.Backends.OpenCL;

/// <summary>
/// The per-layer kernels (native/opencl/minibatch.cl, and minibatch_cpu.cl for the CPU variant's matrix kernels):
/// an MLP of any depth on batches of sample indices, each kernel a piece of <c>Reference</c>. A step copies the
/// batch's indices into a preallocated buffer (without waiting) and enqueues the gather of the input rows, per
/// layer the forward pass, softmax + loss + dz, the backward pass and the optimizer update. Every buffer is
/// allocated here once (the training set by the backend), none per step; the <see cref="OpenClAccelerator"/>
/// owns and releases them.
/// </summary>
internal sealed unsafe class LayerKernels
{
    private const int In = MlpParameters.InputSize;
    private const int Out = MlpParameters.Classes;
    // Matrix kernels run 16 x 16 work-groups over 16 x 16 local tiles: 2 KB of local memory in float32,
    // within every device's minimum (16 KB), and 256 work-items, what every GPU and PoCL allow.
    public const int Tile = 16;
    // CPU variant: work-items per compute unit. One item per core would leave a core idle behind the
    // slowest (ragged) item or behind another process on a shared machine; many small items re-read more
    // operands. A few per core balance the two.
    private const int CpuItemsPerUnit = 8;
    private static readonly nuint[] s_tileGroup = [Tile, Tile];
    private static readonly nuint[] s_single = [1, 1];

    private readonly OpenClAccelerator _cl;
    private readonly OpenClVariant _variant;
    private readonly OptimizerSettings _optimizer;
    private readonly int _vectorWidth;
    private readonly int _itemTarget;
    private readonly Layer[] _layers;
    private readonly int[] _stagedIndices; // pinned: the source of the non-blocking index write
    private readonly double[] _metricsHost;
    private readonly ClBuffer _indices, _predictPixels, _identity, _input, _metrics, _probabilities;
    private readonly ClKernel _gather, _gatherPredict, _loss, _softmax;
    private nint _indexWrite; // the event of the last index write; _stagedIndices is busy until it completes

    /// <summary>One layer's device state: parameters, gradients, moments, its output and the output's gradient.
    /// </summary>
    internal sealed class Layer
    {
        public required int NIn, NOut;
        public required ClBuffer W, B, DW, DB, A, DZ;
        public ClBuffer? MW, MB, VW, VB;
        public required ClKernel Forward, BackwardWeights, BackwardBias, UpdateW, UpdateB;
        public ClKernel? BackwardInput;
    }

    public LayerKernels(OpenClAccelerator cl, OpenClVariant variant, IReadOnlyList<int> sizes,
        OptimizerSettings optimizer, int capacity, string? kernelsDirectory)
    {
        _cl = cl;
        _variant = variant;
        _optimizer = optimizer;
        Capacity = capacity;
        if (variant == OpenClVariant.Gpu && cl.Device.MaxWorkGroupSize < Tile * Tile)
            throw new BackendUnavailableException(
                $"OpenCL device {cl.Device.Name} allows {cl.Device.MaxWorkGroupSize} work-items per group; " +
                $"the per-layer kernels need {Tile * Tile}");
        bool f64 = cl.RealSize == 8;
        // VW: the CPU kernels' vector, 64 bytes (one AVX-512 register) in either precision
        _vectorWidth = f64 ? 8 : 16;
        _itemTarget = Math.Max(1, cl.Device.ComputeUnits * CpuItemsPerUnit);
        string defines = $"-D REAL={cl.RealType} -D TILE={Tile} -D VW={_vectorWidth}" + (f64 ? " -D USE_F64" : "");
        string[] files = variant == OpenClVariant.Cpu ? ["minibatch.cl", "minibatch_cpu.cl"] : ["minibatch.cl"];
        ClProgram program = cl.BuildProgram(files, kernelsDirectory, defines);

        long cap = capacity;
        _stagedIndices = GC.AllocateArray<int>(capacity, pinned: true);
        _metricsHost = new double[2 * capacity];
        _indices = cl.Allocate(cap * sizeof(int), "batch indices");
        _predictPixels = cl.Allocate(cap * In, "images to predict");
        _identity = cl.Allocate(cap * sizeof(int), "predict indices");
        var identity = new int[capacity];
        for (int i = 0; i < identity.Length; i++) identity[i] = i;
        fixed (int* p = identity) cl.WriteBytes(_identity, p, cap * sizeof(int));
        _input = cl.AllocateReals(cap * In, "gathered input rows");
        _metrics = cl.AllocateReals(2 * cap, "per-sample metrics");
        _probabilities = cl.AllocateReals(cap * Out, "probabilities");

        _gather = cl.CreateKernel(program, "gather_input");
        _gather.SetArg(0, _input);
        _gather.SetArg(2, _indices);
        _gatherPredict = cl.CreateKernel(program, "gather_input");
        _gatherPredict.SetArg(0, _input);
        _gatherPredict.SetArg(1, _predictPixels);
        _gatherPredict.SetArg(2, _identity);
        _softmax = cl.CreateKernel(program, "softmax");
        _softmax.SetArg(0, _probabilities);

        _layers = new Layer[sizes.Count - 1];
        string suffix = variant == OpenClVariant.Cpu ? "_cpu" : "";
        int moments = optimizer.MomentCount;
        for (int l = 0; l < _layers.Length; l++)
        {
            int nIn = sizes[l], nOut = sizes[l + 1];
            long weights = (long)nOut * nIn;
            string name = $"layer {l + 1}";
            ClBuffer w = cl.AllocateReals(weights, name + " weights"), b = cl.AllocateReals(nOut, name + " biases");
            ClBuffer dw = cl.AllocateReals(weights, name + " weight gradients");
            ClBuffer db = cl.AllocateReals(nOut, name + " bias gradients");
            ClBuffer? mw = moments >= 1 ? cl.AllocateZeros(weights, name + " first moments") : null;
            ClBuffer? mb = moments >= 1 ? cl.AllocateZeros(nOut, name + " first moments") : null;
            ClBuffer? vw = moments >= 2 ? cl.AllocateZeros(weights, name + " second moments") : null;
            ClBuffer? vb = moments >= 2 ? cl.AllocateZeros(nOut, name + " second moments") : null;
            ClBuffer a = cl.AllocateReals(cap * nOut, name + " activations");
            ClBuffer dz = cl.AllocateReals(cap * nOut, name + " activation gradients");
            ClBuffer aIn = l == 0 ? _input : _layers[l - 1].A;

            ClKernel forward = cl.CreateKernel(program, "layer_forward" + suffix);
            forward.SetArg(0, a);
            forward.SetArg(1, aIn);
            forward.SetArg(2, w);
            forward.SetArg(3, b);
            forward.SetArg(5, nIn);
            forward.SetArg(6, nOut);
            forward.SetArg(7, l + 1 < _layers.Length ? 1 : 0);

            ClKernel backwardWeights = cl.CreateKernel(program, "layer_backward_weights" + suffix);
            backwardWeights.SetArg(0, dw);
            backwardWeights.SetArg(1, dz);
            backwardWeights.SetArg(2, aIn);
            backwardWeights.SetArg(4, nIn);
            backwardWeights.SetArg(5, nOut);

            ClKernel backwardBias = cl.CreateKernel(program, "layer_backward_bias");
            backwardBias.SetArg(0, db);
            backwardBias.SetArg(1, dz);
            backwardBias.SetArg(3, nOut);

            ClKernel? backwardInput = null;
            if (l > 0)
            {
                backwardInput = cl.CreateKernel(program, "layer_backward_input" + suffix);
                backwardInput.SetArg(0, _layers[l - 1].DZ);
                backwardInput.SetArg(1, dz);
                backwardInput.SetArg(2, w);
                backwardInput.SetArg(3, aIn);
                backwardInput.SetArg(5, nIn);
                backwardInput.SetArg(6, nOut);
            }
            _layers[l] = new Layer
            {
                NIn = nIn, NOut = nOut, W = w, B = b, DW = dw, DB = db, A = a, DZ = dz,
                MW = mw, MB = mb, VW = vw, VB = vb,
                Forward = forward, BackwardWeights = backwardWeights, BackwardBias = backwardBias,
                BackwardInput = backwardInput,
                UpdateW = CreateUpdate(program, w, dw, mw, vw, weights),
                UpdateB = CreateUpdate(program, b, db, mb, vb, nOut),
            };
        }

        Layer last = _layers[^1];
        _loss = cl.CreateKernel(program, "softmax_cross_entropy_backward");
        _loss.SetArg(0, last.DZ);
        _loss.SetArg(1, _metrics);
        _loss.SetArg(2, last.A);
        _loss.SetArg(4, _indices);
        _softmax.SetArg(1, last.A);
    }

    /// <summary>The most samples one step (or one Predict launch series) takes.</summary>
    public int Capacity { get; }

    public IReadOnlyList<Layer> Layers => _layers;

    /// <summary>Points the kernels at a newly uploaded training set.</summary>
    public void Bind(ClBuffer pixels, ClBuffer labels)
    {
        _gather.SetArg(1, pixels);
        _loss.SetArg(3, labels);
    }

    /// <summary>Uploads the indices and enqueues gather, forward, loss and backward (mean gradients into DW, DB).
    /// </summary>
    public void EnqueueGradients(ReadOnlySpan<int> sampleIndices)
    {
        int n = sampleIndices.Length;
        long t = _cl.Profiler != null ? Profiler.Now() : 0;
        WriteIndices(sampleIndices);
        _cl.Profiler?.Record(Phases.Gather, t); // the host's share; the gather kernel has its device row
        _gather.SetArg(3, n);
        _cl.Enqueue(_gather, [RoundUp(In, Tile), (nuint)n]);
        EnqueueForward(n);
        _loss.SetArg(5, n);
        _cl.SetReal(_loss, 6, 1.0 / n);
        _cl.Enqueue(_loss, [RoundUp(n, 64)]);
        for (int l = _layers.Length - 1; l >= 0; l--)
        {
            Layer y = _layers[l];
            y.BackwardWeights.SetArg(3, n);
            if (_variant == OpenClVariant.Cpu) EnqueueCpuGrid(y.BackwardWeights, 6, y.NIn, 4 * _vectorWidth, y.NOut);
            else EnqueueTiled(y.BackwardWeights, y.NIn, y.NOut);
            y.BackwardBias.SetArg(2, n);
            _cl.Enqueue(y.BackwardBias, [RoundUp(y.NOut, 64)]);
            if (y.BackwardInput == null) continue;
            y.BackwardInput.SetArg(4, n);
            if (_variant == OpenClVariant.Cpu) EnqueueCpuGrid(y.BackwardInput, 7, y.NIn, 4 * _vectorWidth, n);
            else EnqueueTiled(y.BackwardInput, y.NIn, n);
        }
    }

    /// <summary>Enqueues the optimizer's update of every layer from the gradients in DW, DB (step t, 1-based).
    /// </summary>
    public void EnqueueUpdate(double learningRate, long t)
    {
        double step = learningRate, invSqrtBc2 = 0;
        if (_optimizer.Kind == OptimizerKind.Adam)
            (step, invSqrtBc2) = OptimizerMath.AdamScales(learningRate, _optimizer.Beta1, _optimizer.Beta2, t);
        foreach (Layer y in _layers)
        {
            EnqueueUpdate(y.UpdateW, (long)y.NOut * y.NIn, step, invSqrtBc2);
            EnqueueUpdate(y.UpdateB, y.NOut, step, invSqrtBc2);
        }
    }

    /// <summary>The metrics of the last enqueued batch of n samples (waits for it).</summary>
    public StepMetrics ReadMetrics(int n)
    {
        Span<double> m = _metricsHost.AsSpan(0, 2 * n);
        _cl.ReadReals(_metrics, m);
        int correct = 0;
        double loss = 0;
        for (int i = 0; i < n; i++)
        {
            correct += m[2 * i] > 0.5 ? 1 : 0;
            loss += m[2 * i + 1];
        }
        return new StepMetrics(correct, loss, n);
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        int count = images.Length / In;
        for (int start = 0; start < count; start += Capacity)
        {
            int n = Math.Min(Capacity, count - start);
            fixed (byte* p = images.Slice(start * In, n * In)) _cl.WriteBytes(_predictPixels, p, (long)n * In);
            _gatherPredict.SetArg(3, n);
            _cl.Enqueue(_gatherPredict, [RoundUp(In, Tile), (nuint)n]);
            EnqueueForward(n);
            _softmax.SetArg(2, n);
            _cl.Enqueue(_softmax, [RoundUp(n, 64)]);
            _cl.ReadReals(_probabilities, probabilities.Slice(start * Out, n * Out));
        }
    }

    /// <summary>Waits for the last index write (the queue is being torn down or finished).</summary>
    public void ReleaseIndexWrite()
    {
        if (_indexWrite == 0) return;
        nint previous = _indexWrite;
        _indexWrite = 0;
        OpenClAccelerator.WaitAndRelease(previous);
    }

    private ClKernel CreateUpdate(ClProgram program, ClBuffer w, ClBuffer g, ClBuffer? m, ClBuffer? v, long count)
    {
        ClKernel k;
        switch (_optimizer.Kind)
        {
            case OptimizerKind.Gd:
                k = _cl.CreateKernel(program, "gd_update");
                k.SetArg(0, w); k.SetArg(1, g); k.SetArg(2, (int)count);
                _cl.SetReal(k, 4, _optimizer.WeightDecay);
                break;
            case OptimizerKind.Momentum:
                k = _cl.CreateKernel(program, "momentum_update");
                k.SetArg(0, w); k.SetArg(1, g); k.SetArg(2, m!); k.SetArg(3, (int)count);
                _cl.SetReal(k, 5, _optimizer.WeightDecay);
                _cl.SetReal(k, 6, _optimizer.Momentum);
                break;
            default:
                k = _cl.CreateKernel(program, "adam_update");
                k.SetArg(0, w); k.SetArg(1, g); k.SetArg(2, m!); k.SetArg(3, v!); k.SetArg(4, (int)count);
                _cl.SetReal(k, 5, _optimizer.WeightDecay);
                _cl.SetReal(k, 6, _optimizer.Beta1);
                _cl.SetReal(k, 7, _optimizer.Beta2);
                _cl.SetReal(k, 10, _optimizer.Epsilon);
                break;
        }
        return k;
    }

    private void EnqueueForward(int n)
    {
        foreach (Layer y in _layers)
        {
            y.Forward.SetArg(4, n);
            if (_variant == OpenClVariant.Cpu) EnqueueCpuGrid(y.Forward, 8, y.NOut, 4, n);
            else EnqueueTiled(y.Forward, y.NOut, n);
        }
    }

    private void EnqueueUpdate(ClKernel kernel, long count, double step, double invSqrtBc2)
    {
        switch (_optimizer.Kind)
        {
            case OptimizerKind.Gd: _cl.SetReal(kernel, 3, step); break;
            case OptimizerKind.Momentum: _cl.SetReal(kernel, 4, step); break;
            default: _cl.SetReal(kernel, 8, step); _cl.SetReal(kernel, 9, invSqrtBc2); break;
        }
        _cl.Enqueue(kernel, [RoundUp(count, 64)]);
    }

    /// <summary>
    /// Copies the indices into the pinned staging array and enqueues a non-blocking write of them. The array
    /// is reused, so the previous write (queued a step ago, long since started) must have finished first.
    /// </summary>
    private void WriteIndices(ReadOnlySpan<int> sampleIndices)
    {
        ReleaseIndexWrite();
        sampleIndices.CopyTo(_stagedIndices);
        fixed (int* p = _stagedIndices)
            _indexWrite = _cl.WriteBytesAsync(_indices, p, (long)sampleIndices.Length * sizeof(int));
    }

    private void EnqueueTiled(ClKernel kernel, long x, long y) =>
        _cl.Enqueue(kernel, [RoundUp(x, Tile), RoundUp(y, Tile)], s_tileGroup);

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
        _cl.Enqueue(kernel, [(nuint)((x + xPer - 1) / xPer), (nuint)((y + yPer - 1) / yPer)], s_single);
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

    private static nuint RoundUp(long value, int multiple) => (nuint)((value + multiple - 1) / multiple * multiple);
}

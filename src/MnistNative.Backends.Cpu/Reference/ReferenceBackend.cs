using System.Numerics;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Reference;

/// <summary>
/// The clean reference backend: an MLP of any depth (sizes [784, h1, ..., 10], ReLU between layers, softmax and
/// mean cross-entropy at the end) trained with <see cref="Reference"/>'s per-layer pairs over whole batches, in
/// float64 or float32, every optimizer through <see cref="OptimizerMath"/>. Every faster backend is tested against
/// it. A whole-set step runs on the uploaded set in its own order, which is the seed's full-batch step term for
/// term; a sampled step gathers its rows first.
/// </summary>
public sealed partial class ReferenceBackend<T> : ITrainingBackend where T : IFloatingPointIeee754<T>
{
    private const int In = MlpParameters.InputSize;
    private const int Classes = MlpParameters.Classes;

    private readonly int[] _sizes;
    private readonly int _layers;
    private readonly T[][] _w, _b, _dw, _db;
    private readonly T[][][] _mw, _mb; // [moment][layer]
    private readonly string[] _forwardPhase, _backwardPhase;
    private T[] _xAll = [];            // the uploaded set, scaled: (count, 784)
    private byte[] _yAll = [];
    private int _count;
    private long _steps;

    // per-batch scratch, grown to the largest batch seen: x and y of a sampled batch; z[l] and a[l] (n, sizes[l+1]);
    // dz[l] (n, sizes[l+1]); da (n, widest hidden layer)
    private int _capacity;
    private T[] _x = [], _da = [];
    private byte[] _y = [];
    private T[][] _z, _a, _dz;

    public ReferenceBackend(IReadOnlyList<int> sizes, OptimizerSettings optimizer)
    {
        if (sizes.Count < 2 || sizes[0] != In || sizes[^1] != Classes)
            throw new ArgumentException($"sizes must run from {In} to {Classes}, got {string.Join('-', sizes)}");
        foreach (int s in sizes) ArgumentOutOfRangeException.ThrowIfLessThan(s, 1, nameof(sizes));
        optimizer.Validate();
        _sizes = sizes.ToArray();
        _layers = _sizes.Length - 1;
        Optimizer = optimizer;
        _w = new T[_layers][]; _b = new T[_layers][]; _dw = new T[_layers][]; _db = new T[_layers][];
        _mw = new T[optimizer.MomentCount][][]; _mb = new T[optimizer.MomentCount][][];
        for (int k = 0; k < _mw.Length; k++) { _mw[k] = new T[_layers][]; _mb[k] = new T[_layers][]; }
        _z = new T[_layers][]; _a = new T[_layers][]; _dz = new T[_layers][];
        _forwardPhase = new string[_layers]; _backwardPhase = new string[_layers];
        for (int l = 0; l < _layers; l++)
        {
            _w[l] = new T[_sizes[l + 1] * _sizes[l]]; _dw[l] = new T[_w[l].Length];
            _b[l] = new T[_sizes[l + 1]]; _db[l] = new T[_b[l].Length];
            for (int k = 0; k < _mw.Length; k++) { _mw[k][l] = new T[_w[l].Length]; _mb[k][l] = new T[_b[l].Length]; }
            _z[l] = []; _a[l] = []; _dz[l] = [];
            _forwardPhase[l] = $"{Phases.Forward} layer {l + 1}";
            _backwardPhase[l] = $"{Phases.Backward} layer {l + 1}";
        }
        Info = new BackendInfo("scalar", typeof(T) == typeof(double) ? Precision.F64 : Precision.F32, 1,
            "CPU, scalar reference loops");
    }

    public BackendInfo Info { get; }
    public IReadOnlyList<int> Sizes => _sizes;
    public OptimizerSettings Optimizer { get; }
    public int MaxBatch => int.MaxValue;
    public KernelChoice? KernelChoice { get; private set; }
    public Profiler? Profiler { get; set; }

    public void Upload(LabeledImages train)
    {
        _count = train.Count;
        _xAll = new T[train.Pixels.Length];
        Reference.ScalePixels<T>(_xAll, train.Pixels);
        _yAll = train.Labels;
        double density = Core.KernelChoice.MeasureDensity(train.Pixels);
        KernelChoice = new KernelChoice(KernelMode.Dense, "the reference runs dense loops", density,
            FlopCount.TrainingStep(_count, _sizes[1]));
    }

    public void SetWeights(MlpParameters weights)
    {
        if (!weights.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException(
                $"weights are {string.Join('-', weights.Sizes)}, the backend is {string.Join('-', _sizes)}");
        for (int l = 0; l < _layers; l++) { Convert(weights.W[l], _w[l]); Convert(weights.B[l], _b[l]); }
    }

    public MlpParameters GetWeights() => ToParameters(_w, _b);

    public OptimizerState GetOptimizerState() =>
        new(_steps, Enumerable.Range(0, _mw.Length).Select(k => ToParameters(_mw[k], _mb[k])).ToArray());

    public void SetOptimizerState(OptimizerState state)
    {
        if (state.Moments.Length != _mw.Length)
            throw new ArgumentException(
                $"the optimizer state has {state.Moments.Length} moment buffers, {Optimizer.Kind} keeps {_mw.Length}");
        _steps = state.Steps;
        for (int k = 0; k < _mw.Length; k++)
            for (int l = 0; l < _layers; l++)
            {
                Convert(state.Moments[k].W[l], _mw[k][l]);
                Convert(state.Moments[k].B[l], _mb[k][l]);
            }
    }

    public StepMetrics Step(TrainingBatch batch, double learningRate, bool measure)
    {
        StepMetrics m = Gradients(batch);
        long t = Profiler is null ? 0 : Profiler.Now();
        _steps++;
        for (int l = 0; l < _layers; l++)
        {
            OptimizerMath.Apply<T>(Optimizer, learningRate, _steps, _w[l], _dw[l],
                Moment(_mw, 0, l), Moment(_mw, 1, l));
            OptimizerMath.Apply<T>(Optimizer, learningRate, _steps, _b[l], _db[l],
                Moment(_mb, 0, l), Moment(_mb, 1, l));
        }
        Profiler?.Record(Phases.Update, t);
        return measure ? m : default;
    }

    public StepMetrics ComputeGradients(TrainingBatch batch, MlpParameters gradients)
    {
        if (!gradients.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException(
                $"gradients are {string.Join('-', gradients.Sizes)}, the backend is {string.Join('-', _sizes)}");
        StepMetrics m = Gradients(batch);
        for (int l = 0; l < _layers; l++) { Convert(_dw[l], gradients.W[l]); Convert(_db[l], gradients.B[l]); }
        return m;
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        int n = PredictArguments.ImageCount(images, probabilities);
        var x = new T[images.Length];
        Reference.ScalePixels<T>(x, images);
        var z = new T[_layers][];
        T[] input = x;
        for (int l = 0; l < _layers; l++)
        {
            z[l] = new T[n * _sizes[l + 1]];
            Reference.LinearForward<T>(z[l], input, _w[l], _b[l], n, _sizes[l], _sizes[l + 1]);
            if (l + 1 == _layers) break;
            input = new T[z[l].Length];
            Reference.ReluForward<T>(input, z[l]);
        }
        var probs = new T[n * Classes];
        Reference.SoftmaxCrossEntropyForward<T>(probs, z[^1], default, n, Classes);
        for (int i = 0; i < probs.Length; i++) probabilities[i] = double.CreateChecked(probs[i]);
    }

    public void Dispose() { }

    /// <summary>The mean gradients over the batch into _dw, _db, and the metrics of its forward pass.</summary>
    private StepMetrics Gradients(TrainingBatch batch)
    {
        if (_count == 0) throw new InvalidOperationException("Upload the training set before training");
        int n = batch.Count(_count);
        if (n < 1) throw new ArgumentException("a training step needs at least one sample");
        EnsureScratch(n);
        Profiler? profiler = Profiler;
        ReadOnlySpan<T> x = _xAll;
        ReadOnlySpan<byte> y = _yAll;
        if (!batch.IsWholeSet)
        {
            long t0 = profiler is null ? 0 : Profiler.Now();
            ReadOnlySpan<int> indices = batch.Indices;
            for (int i = 0; i < n; i++)
            {
                int s = indices[i];
                if ((uint)s >= (uint)_count)
                    throw new ArgumentOutOfRangeException(nameof(batch),
                        $"sample {s} is not among the {_count} uploaded");
                _xAll.AsSpan(s * In, In).CopyTo(_x.AsSpan(i * In, In));
                _y[i] = _yAll[s];
            }
            x = _x.AsSpan(0, n * In);
            y = _y.AsSpan(0, n);
            profiler?.Record(Phases.Gather, t0);
        }

        ReadOnlySpan<T> input = x;
        for (int l = 0; l < _layers; l++)
        {
            long t0 = profiler is null ? 0 : Profiler.Now();
            Span<T> z = _z[l].AsSpan(0, n * _sizes[l + 1]);
            Reference.LinearForward<T>(z, input, _w[l], _b[l], n, _sizes[l], _sizes[l + 1]);
            if (l + 1 < _layers)
            {
                Span<T> a = _a[l].AsSpan(0, z.Length);
                Reference.ReluForward<T>(a, z);
                input = a;
            }
            profiler?.Record(_forwardPhase[l], t0);
        }

        long t = profiler is null ? 0 : Profiler.Now();
        Span<T> probs = _a[_layers - 1].AsSpan(0, n * Classes);
        StepMetrics metrics = Reference.SoftmaxCrossEntropyForward<T>(probs, _z[_layers - 1], y, n, Classes);
        Reference.SoftmaxCrossEntropyBackward<T>(_dz[_layers - 1], probs, y, n, Classes);
        profiler?.Record(Phases.SoftmaxLoss, t);

        T scale = T.One / T.CreateChecked(n);
        for (int l = _layers - 1; l >= 0; l--)
        {
            long t0 = profiler is null ? 0 : Profiler.Now();
            int nIn = _sizes[l], nOut = _sizes[l + 1];
            ReadOnlySpan<T> layerInput = l == 0 ? x : _a[l - 1].AsSpan(0, n * nIn);
            Span<T> da = l == 0 ? default : _da.AsSpan(0, n * nIn);
            Reference.LinearBackward<T>(da, _dw[l], _db[l], _dz[l].AsSpan(0, n * nOut), layerInput, _w[l], n, nIn, nOut,
                scale);
            if (l > 0) Reference.ReluBackward<T>(_dz[l - 1].AsSpan(0, n * nIn), da, _z[l - 1].AsSpan(0, n * nIn));
            profiler?.Record(_backwardPhase[l], t0);
        }
        return metrics;
    }

    private void EnsureScratch(int n)
    {
        if (n <= _capacity) return;
        _capacity = n;
        _x = new T[n * In];
        _y = new byte[n];
        int widest = 0;
        for (int l = 0; l < _layers; l++)
        {
            int width = n * _sizes[l + 1];
            _z[l] = new T[width]; _a[l] = new T[width]; _dz[l] = new T[width];
            if (l + 1 < _layers) widest = Math.Max(widest, _sizes[l + 1]);
        }
        _da = new T[n * widest];
    }

    private static Span<T> Moment(T[][][] moments, int k, int l) => k < moments.Length ? moments[k][l] : default;

    private MlpParameters ToParameters(T[][] w, T[][] b)
    {
        var p = new MlpParameters(_sizes);
        for (int l = 0; l < _layers; l++) { Convert(w[l], p.W[l]); Convert(b[l], p.B[l]); }
        return p;
    }

    private static void Convert(ReadOnlySpan<double> from, Span<T> to)
    {
        for (int i = 0; i < from.Length; i++) to[i] = T.CreateChecked(from[i]);
    }

    private static void Convert(ReadOnlySpan<T> from, Span<double> to)
    {
        for (int i = 0; i < from.Length; i++) to[i] = double.CreateChecked(from[i]);
    }
}

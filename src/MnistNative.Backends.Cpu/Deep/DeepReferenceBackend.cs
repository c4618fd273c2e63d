using System.Numerics;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Deep;

/// <summary>
/// The clean reference for mini-batch training of an MLP of any depth (sizes [784, h1, ..., 10], ReLU between
/// layers, softmax and mean cross-entropy at the end): plain loops, one sample at a time, in float64 or float32.
/// It is the oracle of <see cref="DeepSimdBackend{TW, TVec}"/>. Weights keep the seed's orientation, W[l]
/// (out, in) row-major; pixels are scaled by 1/255 as the seed does.
/// </summary>
public sealed class DeepReferenceBackend<T> : IMiniBatchBackend where T : IFloatingPointIeee754<T>
{
    private readonly int[] _sizes;
    private readonly T[][] _w, _b, _dw, _db;
    private readonly T[][][] _mw, _mb; // [moment][layer]
    private readonly T[][] _z, _a, _dz; // per layer scratch for one sample
    private readonly T _pixelScale = T.One / T.CreateChecked(255);
    private byte[] _pixels = [];
    private byte[] _labels = [];
    private long _t;

    public DeepReferenceBackend(IReadOnlyList<int> sizes, OptimizerSettings optimizer)
    {
        if (sizes.Count < 2 || sizes[0] != MlpParameters.InputSize || sizes[^1] != MlpParameters.Classes)
            throw new ArgumentException($"sizes must run from {MlpParameters.InputSize} to {MlpParameters.Classes}, got {string.Join('-', sizes)}");
        optimizer.Validate();
        _sizes = sizes.ToArray();
        Optimizer = optimizer;
        int layers = _sizes.Length - 1;
        _w = new T[layers][]; _b = new T[layers][]; _dw = new T[layers][]; _db = new T[layers][];
        _mw = new T[optimizer.MomentCount][][]; _mb = new T[optimizer.MomentCount][][];
        for (int k = 0; k < _mw.Length; k++) { _mw[k] = new T[layers][]; _mb[k] = new T[layers][]; }
        _z = new T[layers + 1][]; _a = new T[layers + 1][]; _dz = new T[layers + 1][];
        for (int l = 0; l <= layers; l++) { _z[l] = new T[_sizes[l]]; _a[l] = new T[_sizes[l]]; _dz[l] = new T[_sizes[l]]; }
        for (int l = 0; l < layers; l++)
        {
            _w[l] = new T[_sizes[l + 1] * _sizes[l]]; _dw[l] = new T[_w[l].Length];
            _b[l] = new T[_sizes[l + 1]]; _db[l] = new T[_b[l].Length];
            for (int k = 0; k < _mw.Length; k++) { _mw[k][l] = new T[_w[l].Length]; _mb[k][l] = new T[_b[l].Length]; }
        }
        Info = new BackendInfo("scalar", typeof(T) == typeof(double) ? Precision.F64 : Precision.F32, 1, "CPU (reference loops)");
    }

    public BackendInfo Info { get; }
    public IReadOnlyList<int> Sizes => _sizes;
    public OptimizerSettings Optimizer { get; }
    public int MaxBatch => int.MaxValue;

    public void Upload(LabeledImages train)
    {
        _pixels = train.Pixels;
        _labels = train.Labels;
    }

    public void SetWeights(MlpParameters weights)
    {
        if (!weights.Sizes.AsSpan().SequenceEqual(_sizes))
            throw new ArgumentException($"weights are {string.Join('-', weights.Sizes)}, the backend is {string.Join('-', _sizes)}");
        for (int l = 0; l < _w.Length; l++) { Copy(weights.W[l], _w[l]); Copy(weights.B[l], _b[l]); }
    }

    public MlpParameters GetWeights() => ToParameters(_w, _b);

    public OptimizerState GetOptimizerState() =>
        new(_t, Enumerable.Range(0, _mw.Length).Select(k => ToParameters(_mw[k], _mb[k])).ToArray());

    public void SetOptimizerState(OptimizerState state)
    {
        if (state.Moments.Length != _mw.Length) throw new ArgumentException($"the optimizer state has {state.Moments.Length} moment buffers, {Optimizer.Kind} keeps {_mw.Length}");
        _t = state.Steps;
        for (int k = 0; k < _mw.Length; k++)
            for (int l = 0; l < _w.Length; l++) { Copy(state.Moments[k].W[l], _mw[k][l]); Copy(state.Moments[k].B[l], _mb[k][l]); }
    }

    public StepMetrics StepBatch(ReadOnlySpan<int> sampleIndices, double learningRate, bool measure)
    {
        StepMetrics m = Gradients(sampleIndices);
        _t++;
        for (int l = 0; l < _w.Length; l++)
        {
            OptimizerMath.Apply<T>(Optimizer, learningRate, _t, _w[l], _dw[l], Moment(_mw, 0, l), Moment(_mw, 1, l));
            OptimizerMath.Apply<T>(Optimizer, learningRate, _t, _b[l], _db[l], Moment(_mb, 0, l), Moment(_mb, 1, l));
        }
        return measure ? m : default;
    }

    private static Span<T> Moment(T[][][] moments, int k, int l) => k < moments.Length ? moments[k][l] : default;

    public StepMetrics ComputeGradients(ReadOnlySpan<int> sampleIndices, MlpParameters gradients)
    {
        StepMetrics m = Gradients(sampleIndices);
        for (int l = 0; l < _w.Length; l++)
        {
            for (int i = 0; i < _dw[l].Length; i++) gradients.W[l][i] = double.CreateChecked(_dw[l][i]);
            for (int i = 0; i < _db[l].Length; i++) gradients.B[l][i] = double.CreateChecked(_db[l][i]);
        }
        return m;
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        int n = images.Length / MlpParameters.InputSize;
        for (int s = 0; s < n; s++)
        {
            Forward(images.Slice(s * MlpParameters.InputSize, MlpParameters.InputSize));
            T[] p = _a[^1];
            for (int c = 0; c < MlpParameters.Classes; c++) probabilities[s * MlpParameters.Classes + c] = double.CreateChecked(p[c]);
        }
    }

    /// <summary>Mean gradients over the samples into _dw, _db; the metrics of the forward passes.</summary>
    private StepMetrics Gradients(ReadOnlySpan<int> sampleIndices)
    {
        for (int l = 0; l < _w.Length; l++) { Array.Clear(_dw[l]); Array.Clear(_db[l]); }
        T invN = T.One / T.CreateChecked(sampleIndices.Length);
        int correct = 0;
        double lossSum = 0;
        foreach (int s in sampleIndices)
        {
            Forward(_pixels.AsSpan(s * MlpParameters.InputSize, MlpParameters.InputSize));
            int label = _labels[s];
            T[] p = _a[^1];
            if (ArgMax(p) == label) correct++;
            lossSum -= Math.Log(double.CreateChecked(p[label]));
            // softmax + cross-entropy: dz = (p - onehot) / n
            T[] dzOut = _dz[^1];
            for (int c = 0; c < p.Length; c++) dzOut[c] = (p[c] - (c == label ? T.One : T.Zero)) * invN;
            for (int l = _w.Length - 1; l >= 0; l--) LayerBackward(l);
        }
        return new StepMetrics(correct, lossSum, sampleIndices.Length);
    }

    private void Forward(ReadOnlySpan<byte> image)
    {
        for (int k = 0; k < image.Length; k++) _a[0][k] = T.CreateChecked(image[k]) * _pixelScale;
        for (int l = 0; l < _w.Length; l++) LayerForward(l);
        Softmax(_z[^1], _a[^1]);
    }

    // a[l] (in), w[l] (out, in), b[l] (out) -> z[l+1] (out); a[l+1] = relu(z[l+1]) for hidden layers
    private void LayerForward(int l)
    {
        int nIn = _sizes[l], nOut = _sizes[l + 1];
        T[] a = _a[l], w = _w[l], z = _z[l + 1];
        for (int j = 0; j < nOut; j++)
        {
            T sum = _b[l][j];
            for (int k = 0; k < nIn; k++) sum += w[j * nIn + k] * a[k];
            z[j] = sum;
        }
        if (l + 1 < _w.Length)
            for (int j = 0; j < nOut; j++) _a[l + 1][j] = T.Max(z[j], T.Zero);
    }

    // dz[l+1] (out), a[l] (in) -> dw[l] += dz a^T, db[l] += dz, dz[l] = (w^T dz) * relu'(z[l]) for l > 0
    private void LayerBackward(int l)
    {
        int nIn = _sizes[l], nOut = _sizes[l + 1];
        T[] dz = _dz[l + 1], a = _a[l], w = _w[l], dw = _dw[l];
        for (int j = 0; j < nOut; j++)
        {
            _db[l][j] += dz[j];
            for (int k = 0; k < nIn; k++) dw[j * nIn + k] += dz[j] * a[k];
        }
        if (l == 0) return;
        for (int k = 0; k < nIn; k++)
        {
            T sum = T.Zero;
            for (int j = 0; j < nOut; j++) sum += w[j * nIn + k] * dz[j];
            _dz[l][k] = _z[l][k] > T.Zero ? sum : T.Zero;
        }
    }

    private static void Softmax(T[] z, T[] p)
    {
        T max = z[0];
        for (int c = 1; c < z.Length; c++) max = T.Max(max, z[c]);
        T sum = T.Zero;
        for (int c = 0; c < z.Length; c++) { p[c] = T.Exp(z[c] - max); sum += p[c]; }
        for (int c = 0; c < z.Length; c++) p[c] /= sum;
    }

    private static int ArgMax(T[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private MlpParameters ToParameters(T[][] w, T[][] b)
    {
        var p = new MlpParameters(_sizes);
        for (int l = 0; l < w.Length; l++)
        {
            for (int i = 0; i < w[l].Length; i++) p.W[l][i] = double.CreateChecked(w[l][i]);
            for (int i = 0; i < b[l].Length; i++) p.B[l][i] = double.CreateChecked(b[l][i]);
        }
        return p;
    }

    private static void Copy(double[] from, T[] to)
    {
        for (int i = 0; i < from.Length; i++) to[i] = T.CreateChecked(from[i]);
    }

    public void Dispose() { }
}

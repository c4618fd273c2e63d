using System.Numerics;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Reference;

/// <summary>
/// The clean reference: the seed notebook's math as plain loops over row-major arrays, in float64 or
/// float32. Every faster backend is tested against it. Shapes follow the seed with samples as rows:
/// x (n,784), z1/a1 (n,h), z2/probs (n,10); w1 (h,784), b1 (h), w2 (10,h), b2 (10).
/// </summary>
public sealed class ReferenceBackend<T> : IFullBatchBackend, IProfiledBackend where T : unmanaged, IFloatingPointIeee754<T>
{
    private const int In = MlpParameters.InputSize;
    private const int Out = MlpParameters.Classes;

    private readonly int _h;
    private T[] _x = [];
    private byte[] _y = [];
    private int _n;
    private readonly T[] _w1, _b1, _w2, _b2;
    private readonly T[] _dw1, _db1, _dw2, _db2;
    private T[] _z1 = [], _a1 = [], _z2 = [], _probs = [], _dz2 = [];

    public ReferenceBackend(int hidden)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(hidden, 1);
        _h = hidden;
        _w1 = new T[_h * In]; _b1 = new T[_h]; _w2 = new T[Out * _h]; _b2 = new T[Out];
        _dw1 = new T[_h * In]; _db1 = new T[_h]; _dw2 = new T[Out * _h]; _db2 = new T[Out];
        Info = new BackendInfo("scalar", typeof(T) == typeof(double) ? Precision.F64 : Precision.F32, 1, "CPU, scalar reference loops");
    }

    public BackendInfo Info { get; }

    public Profiler? Profiler { get; set; }

    public void Upload(LabeledImages train)
    {
        _n = train.Count;
        _x = ScalePixels(train.Pixels);
        _y = train.Labels;
        _z1 = new T[_n * _h]; _a1 = new T[_n * _h];
        _z2 = new T[_n * Out]; _probs = new T[_n * Out]; _dz2 = new T[_n * Out];
    }

    public void SetWeights(MlpParameters weights)
    {
        if (weights.LayerCount != 2 || weights.Sizes[0] != In || weights.Sizes[1] != _h || weights.Sizes[2] != Out)
            throw new ArgumentException($"the scalar backend was built for 784-{_h}-10, got {string.Join('-', weights.Sizes)}");
        Convert(weights.W[0], _w1); Convert(weights.B[0], _b1);
        Convert(weights.W[1], _w2); Convert(weights.B[1], _b2);
    }

    public MlpParameters GetWeights()
    {
        var p = MlpParameters.ForHidden(_h);
        Convert(_w1, p.W[0]); Convert(_b1, p.B[0]);
        Convert(_w2, p.W[1]); Convert(_b2, p.B[1]);
        return p;
    }

    public StepMetrics Step(double learningRate, bool measure)
    {
        StepMetrics m = ForwardBackward();
        long t = Profiler.Now();
        T lr = T.CreateChecked(learningRate);
        Update(_w1, _dw1, lr); Update(_b1, _db1, lr);
        Update(_w2, _dw2, lr); Update(_b2, _db2, lr);
        Profiler?.Record("update", t);
        return measure ? m : default;
    }

    public StepMetrics ComputeGradients(MlpParameters gradients)
    {
        StepMetrics m = ForwardBackward();
        Convert(_dw1, gradients.W[0]); Convert(_db1, gradients.B[0]);
        Convert(_dw2, gradients.W[1]); Convert(_db2, gradients.B[1]);
        return m;
    }

    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        int n = images.Length / In;
        if (images.Length != n * In) throw new ArgumentException($"images must be rows of {In} bytes, got {images.Length} bytes");
        if (probabilities.Length != n * Out) throw new ArgumentException($"need {n * Out} probabilities for {n} images, got {probabilities.Length}");
        T[] x = ScalePixels(images);
        var z1 = new T[n * _h]; var a1 = new T[n * _h]; var z2 = new T[n * Out];
        HiddenForward(z1, a1, x, _w1, _b1, n, _h);
        OutputForward(z2, a1, _w2, _b2, n, _h);
        var probs = new T[n * Out];
        Softmax(probs, z2, n);
        for (int i = 0; i < probs.Length; i++) probabilities[i] = double.CreateChecked(probs[i]);
    }

    public void Dispose() { }

    private StepMetrics ForwardBackward()
    {
        if (_n == 0) throw new InvalidOperationException("Upload the training set before training");
        long t = Profiler.Now();
        HiddenForward(_z1, _a1, _x, _w1, _b1, _n, _h);
        OutputForward(_z2, _a1, _w2, _b2, _n, _h);
        Softmax(_probs, _z2, _n);
        Profiler?.Record("forward", t);
        t = Profiler.Now();
        StepMetrics m = CrossEntropyMetrics(_z2, _y, _n);
        Profiler?.Record("metrics", t);
        t = Profiler.Now();
        OutputBackward(_dz2, _dw2, _db2, _probs, _y, _a1, _n, _h);
        HiddenBackward(_dw1, _db1, _dz2, _w2, _z1, _x, _n, _h);
        Profiler?.Record("backward", t);
        return m;
    }

    // z1 = x w1^T + b1; a1 = relu(z1)        x (n,784), w1 (h,784), b1 (h) -> z1, a1 (n,h)
    internal static void HiddenForward(Span<T> z1, Span<T> a1, ReadOnlySpan<T> x, ReadOnlySpan<T> w1, ReadOnlySpan<T> b1, int n, int h)
    {
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<T> xi = x.Slice(i * In, In);
            for (int j = 0; j < h; j++)
            {
                ReadOnlySpan<T> wj = w1.Slice(j * In, In);
                T sum = T.Zero;
                for (int k = 0; k < In; k++) sum += wj[k] * xi[k];
                T z = sum + b1[j];
                z1[i * h + j] = z;
                a1[i * h + j] = T.Max(z, T.Zero);
            }
        }
    }

    // z2 = a1 w2^T + b2                       a1 (n,h), w2 (10,h), b2 (10) -> z2 (n,10)
    internal static void OutputForward(Span<T> z2, ReadOnlySpan<T> a1, ReadOnlySpan<T> w2, ReadOnlySpan<T> b2, int n, int h)
    {
        for (int i = 0; i < n; i++)
            for (int c = 0; c < Out; c++)
            {
                T sum = T.Zero;
                for (int j = 0; j < h; j++) sum += w2[c * h + j] * a1[i * h + j];
                z2[i * Out + c] = sum + b2[c];
            }
    }

    // probs = softmax(z2) per row, shifted by the row's max as the seed does
    internal static void Softmax(Span<T> probs, ReadOnlySpan<T> z2, int n)
    {
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<T> z = z2.Slice(i * Out, Out);
            T max = z[0];
            for (int c = 1; c < Out; c++) max = T.Max(max, z[c]);
            T sum = T.Zero;
            for (int c = 0; c < Out; c++) sum += T.Exp(z[c] - max);
            for (int c = 0; c < Out; c++) probs[i * Out + c] = T.Exp(z[c] - max) / sum;
        }
    }

    // Correct predictions (argmax of z2, first on ties) and summed cross-entropy -log softmax(z2)[y],
    // computed as logsumexp(z2) - z2[y] so that it stays finite when a probability rounds to zero.
    internal static StepMetrics CrossEntropyMetrics(ReadOnlySpan<T> z2, ReadOnlySpan<byte> y, int n)
    {
        int correct = 0;
        double lossSum = 0;
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<T> z = z2.Slice(i * Out, Out);
            int best = 0;
            for (int c = 1; c < Out; c++) if (z[c] > z[best]) best = c;
            if (best == y[i]) correct++;
            double max = double.CreateChecked(z[best]), sum = 0;
            for (int c = 0; c < Out; c++) sum += Math.Exp(double.CreateChecked(z[c]) - max);
            lossSum += Math.Log(sum) + max - double.CreateChecked(z[y[i]]);
        }
        return new StepMetrics(correct, lossSum, n);
    }

    // dz2 = probs - onehot(y); dw2 = dz2^T a1 / n; db2 = sum(dz2) / n     -> dz2 (n,10), dw2 (10,h), db2 (10)
    internal static void OutputBackward(Span<T> dz2, Span<T> dw2, Span<T> db2, ReadOnlySpan<T> probs, ReadOnlySpan<byte> y, ReadOnlySpan<T> a1, int n, int h)
    {
        dw2.Clear();
        db2.Clear();
        for (int i = 0; i < n; i++)
            for (int c = 0; c < Out; c++)
            {
                T d = probs[i * Out + c] - (y[i] == c ? T.One : T.Zero);
                dz2[i * Out + c] = d;
                db2[c] += d;
                for (int j = 0; j < h; j++) dw2[c * h + j] += d * a1[i * h + j];
            }
        T scale = T.One / T.CreateChecked(n);
        Scale(dw2, scale);
        Scale(db2, scale);
    }

    // dz1 = (dz2 w2) * relu'(z1); dw1 = dz1^T x / n; db1 = sum(dz1) / n    -> dw1 (h,784), db1 (h)
    internal static void HiddenBackward(Span<T> dw1, Span<T> db1, ReadOnlySpan<T> dz2, ReadOnlySpan<T> w2, ReadOnlySpan<T> z1, ReadOnlySpan<T> x, int n, int h)
    {
        dw1.Clear();
        db1.Clear();
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<T> xi = x.Slice(i * In, In);
            for (int j = 0; j < h; j++)
            {
                if (z1[i * h + j] <= T.Zero) continue; // relu'(z) = 0: this unit passes no gradient
                T d = T.Zero;
                for (int c = 0; c < Out; c++) d += w2[c * h + j] * dz2[i * Out + c];
                db1[j] += d;
                Span<T> dwj = dw1.Slice(j * In, In);
                for (int k = 0; k < In; k++) dwj[k] += d * xi[k];
            }
        }
        T scale = T.One / T.CreateChecked(n);
        Scale(dw1, scale);
        Scale(db1, scale);
    }

    // w -= lr * dw
    internal static void Update(Span<T> w, ReadOnlySpan<T> dw, T lr)
    {
        for (int i = 0; i < w.Length; i++) w[i] -= lr * dw[i];
    }

    private static void Scale(Span<T> v, T s)
    {
        for (int i = 0; i < v.Length; i++) v[i] *= s;
    }

    private static T[] ScalePixels(ReadOnlySpan<byte> pixels)
    {
        var x = new T[pixels.Length];
        T inv = T.CreateChecked(255.0);
        for (int i = 0; i < pixels.Length; i++) x[i] = T.CreateChecked(pixels[i]) / inv;
        return x;
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

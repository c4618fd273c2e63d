using System.Numerics;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Reference;

/// <summary>
/// The math of training, once, as plain loops (llm.c's clean reference): a forward/backward pair per layer kind,
/// arguments in the order outputs, inputs, dimensions; gradients carry a <c>d</c> prefix. Every faster kernel
/// (the SIMD tile and per-layer kernels, the OpenCL kernels) names the function here that it mirrors.
/// Arrays are row-major with samples as rows: x (n, in), z and a (n, out); weights in the seed's orientation,
/// w (out, in), b (out). Gradients flowing back are per sample, unscaled (p - onehot(y) at the output); the mean
/// over the batch is the <c>scale</c> (1/n) that <see cref="LinearBackward{T}"/> applies to dw and db once, at the
/// end, which is the summation order of the seed's full-batch reference (seed parity to 1e-14 in float64).
/// </summary>
public static class Reference
{
    /// <summary>Pixels to the network's input: x = byte / 255 (a division, not a multiplication by 1/255).</summary>
    public static void ScalePixels<T>(Span<T> x, ReadOnlySpan<byte> pixels) where T : IFloatingPointIeee754<T>
    {
        T scale = T.CreateChecked(255.0);
        for (int i = 0; i < pixels.Length; i++) x[i] = T.CreateChecked(pixels[i]) / scale;
    }

    /// <summary>z = x w^T + b: z[i, j] = (sum over k ascending of w[j, k] x[i, k]) + b[j].
    /// x (n, nIn), w (nOut, nIn), b (nOut) -> z (n, nOut).</summary>
    public static void LinearForward<T>(Span<T> z, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> b,
        int n, int nIn, int nOut) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<T> xi = x.Slice(i * nIn, nIn);
            for (int j = 0; j < nOut; j++)
            {
                ReadOnlySpan<T> wj = w.Slice(j * nIn, nIn);
                T sum = T.Zero;
                for (int k = 0; k < nIn; k++) sum += wj[k] * xi[k];
                z[i * nOut + j] = sum + b[j];
            }
        }
    }

    /// <summary>
    /// The gradients of <see cref="LinearForward{T}"/> from the output gradient dz (n, nOut):
    /// dw = scale * dz^T x (nOut, nIn) and db = scale * sum over samples of dz (nOut), each summed over the samples
    /// in order and scaled once at the end; and, when <paramref name="dx"/> is not empty, the input gradient
    /// dx = dz w (n, nIn), dx[i, k] = sum over j ascending of w[j, k] dz[i, j].
    /// </summary>
    public static void LinearBackward<T>(Span<T> dx, Span<T> dw, Span<T> db, ReadOnlySpan<T> dz, ReadOnlySpan<T> x,
        ReadOnlySpan<T> w, int n, int nIn, int nOut, T scale) where T : IFloatingPointIeee754<T>
    {
        dw.Clear();
        db.Clear();
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<T> xi = x.Slice(i * nIn, nIn);
            for (int j = 0; j < nOut; j++)
            {
                T d = dz[i * nOut + j];
                db[j] += d;
                Span<T> dwj = dw.Slice(j * nIn, nIn);
                for (int k = 0; k < nIn; k++) dwj[k] += d * xi[k];
            }
        }
        for (int i = 0; i < dw.Length; i++) dw[i] *= scale;
        for (int i = 0; i < db.Length; i++) db[i] *= scale;
        if (dx.IsEmpty) return;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < nIn; k++)
            {
                T sum = T.Zero;
                for (int j = 0; j < nOut; j++) sum += w[j * nIn + k] * dz[i * nOut + j];
                dx[i * nIn + k] = sum;
            }
    }

    /// <summary>a = max(z, 0).</summary>
    public static void ReluForward<T>(Span<T> a, ReadOnlySpan<T> z) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < z.Length; i++) a[i] = T.Max(z[i], T.Zero);
    }

    /// <summary>dz = da where z &gt; 0, else 0 (the unit passed nothing forward, so it passes nothing back).</summary>
    public static void ReluBackward<T>(Span<T> dz, ReadOnlySpan<T> da, ReadOnlySpan<T> z)
        where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < z.Length; i++) dz[i] = z[i] > T.Zero ? da[i] : T.Zero;
    }

    /// <summary>
    /// probs = softmax(z) per row (shifted by the row's max, as the seed does); when <paramref name="y"/> is not
    /// empty, also the metrics: correct predictions (<see cref="ArgMax{T}"/> of z) and the summed cross-entropy,
    /// the one loss formula of every backend: (max + log(sum over c of exp(z[c] - max))) - z[y], in float64, which
    /// stays finite when a probability rounds to zero.  z (n, classes) -> probs (n, classes).
    /// </summary>
    public static StepMetrics SoftmaxCrossEntropyForward<T>(Span<T> probs, ReadOnlySpan<T> z, ReadOnlySpan<byte> y,
        int n, int classes) where T : IFloatingPointIeee754<T>
    {
        int correct = 0;
        double lossSum = 0;
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<T> zi = z.Slice(i * classes, classes);
            T max = zi[0];
            for (int c = 1; c < classes; c++) max = T.Max(max, zi[c]);
            T sum = T.Zero;
            for (int c = 0; c < classes; c++) sum += T.Exp(zi[c] - max);
            for (int c = 0; c < classes; c++) probs[i * classes + c] = T.Exp(zi[c] - max) / sum;
            if (y.IsEmpty) continue;
            if (ArgMax(zi) == y[i]) correct++;
            lossSum += CrossEntropy(zi, y[i]);
        }
        return y.IsEmpty ? default : new StepMetrics(correct, lossSum, n);
    }

    /// <summary>One sample's loss, in float64: (max + log(sum exp(z - max))) - z[label].</summary>
    public static double CrossEntropy<T>(ReadOnlySpan<T> z, int label) where T : IFloatingPointIeee754<T>
    {
        double max = double.CreateChecked(z[ArgMax(z)]), sum = 0;
        for (int c = 0; c < z.Length; c++) sum += Math.Exp(double.CreateChecked(z[c]) - max);
        return (max + Math.Log(sum)) - double.CreateChecked(z[label]);
    }

    /// <summary>The gradient of the summed cross-entropy over the logits, per sample: dz = probs - onehot(y)
    /// (the batch mean is <see cref="LinearBackward{T}"/>'s scale).  probs (n, classes) -> dz (n, classes).</summary>
    public static void SoftmaxCrossEntropyBackward<T>(Span<T> dz, ReadOnlySpan<T> probs, ReadOnlySpan<byte> y,
        int n, int classes) where T : IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
            for (int c = 0; c < classes; c++)
                dz[i * classes + c] = probs[i * classes + c] - (y[i] == c ? T.One : T.Zero);
    }

    /// <summary>The index of the largest value, the first one on ties (numpy's argmax); 0 for an empty span.</summary>
    public static int ArgMax<T>(ReadOnlySpan<T> v) where T : IComparisonOperators<T, T, bool>
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MnistNative.Inference;

/// <summary>
/// Layer 1 of a model of any depth in 16-bit integers over pixel pairs, and the per-image bound that says when its
/// answer is certain (<see cref="PairedFirstLayerPath"/>).
///
/// Weights: q[p,j] = round(w[p,j] / c_j), one scale per unit, c_j = max_p |w[p,j]| / 32767. A row holds, for pixels
/// 2k and 2k+1, one 32-bit word per unit (q[2k,j] low, q[2k+1,j] high), so one vpmaddwd against the raw pixel pair
/// (r_2k, r_2k+1) adds both products into an int32 lane: exact integer sums, 16 units x 2 pixels per instruction,
/// half the bytes of a float row per pixel. A pair is skipped when both its pixels are 0. |q| &lt;= 32767 keeps
/// the sums below 2^31 for any image whose pixel values add up to at most 65,538 (the brightest of the 10,000 MNIST
/// test images sums to 65,413, the median 25,867); a brighter image takes the float path.
///
/// Bound, per image, in exact arithmetic against the float32 model on x_p = fl(r_p / 255) (u = 2^-24,
/// g(n) = n u / (1 - n u)): the pass computes h~_j = fl(s_j fl(sum_p r_p q[p,j]) + b_j) with s_j = fl(c_j / 255), that
/// is the exact layer with weights w'[p,j] = 255 s_j q[p,j] on inputs r_p / 255, plus two roundings. With
/// rho[p,j] = w[p,j] - w'[p,j], R_p = max_j |rho[p,j]| and A_p = max_j max(|w[p,j]|, |w'[p,j]|), each unit deviates by
/// at most e = sum_p x_p R_p + u a (the second term: x_p against r_p / 255), where a = sum_p x_p A_p bounds the size of
/// every weighted sum; the integer sum is exact, so the only roundings are its conversion and the scale-and-bias FMA.
/// The recursion of <see cref="Threshold"/> carries that through the float32 layers.
/// </summary>
internal sealed unsafe class PairedFirstLayer
{
    private const double QMax = 32767;
    private const double Unit = 1.0 / (1 << 24);

    /// <summary>The largest sum of an image's raw pixel values whose integer sums cannot overflow.</summary>
    public const int MaxPixelSum = (int)(int.MaxValue / QMax);

    private readonly uint[] _weightMemory; // pinned
    private readonly float[] _tableMemory; // pinned

    /// <summary>(392 pairs, outPad) words, 64-byte aligned.</summary>
    public readonly uint* Weights;
    /// <summary>s_j, outPad floats (0 in the padding), 64-byte aligned.</summary>
    public readonly float* Scale;
    /// <summary>Per pair k: max(R_2k, R_2k+1) and max(A_2k, A_2k+1), rounded up (see the class comment).</summary>
    public readonly float* ResidualMax, WeightMax;
    private readonly double[] _rowSum, _biasMax;
    private readonly int[] _inputs;

    private PairedFirstLayer(uint[] weightMemory, uint* weights, float[] tableMemory, float* scale, float* residualMax,
        float* weightMax, double[] rowSum, double[] biasMax, int[] inputs)
    {
        _weightMemory = weightMemory; Weights = weights;
        _tableMemory = tableMemory; Scale = scale; ResidualMax = residualMax; WeightMax = weightMax;
        _rowSum = rowSum; _biasMax = biasMax; _inputs = inputs;
    }

    public const int Pairs = MnistClassifier.PixelCount / 2;

    /// <summary>
    /// Quantizes layer 1 of a model with layers (W^T padded, bias) or returns null when a bound is not finite (weights
    /// so large that float32 sums could overflow).
    /// </summary>
    public static PairedFirstLayer? Build(DenseLayer[] layers)
    {
        DenseLayer first = layers[0];
        int outPad = first.OutPad, units = first.Out;
        float* w1t = first.Wt;
        var weightMemory = GC.AllocateArray<uint>(Pairs * outPad + 16, pinned: true);
        var tableMemory = GC.AllocateArray<float>(outPad + 2 * Pairs + 64, pinned: true);
        uint* weights = (uint*)Align(ref MemoryMarshal.GetArrayDataReference(weightMemory));
        float* scale = (float*)Align(ref MemoryMarshal.GetArrayDataReference(tableMemory));
        float* residualMax = scale + outPad, weightMax = residualMax + Pairs;
        var residual = new double[MnistClassifier.PixelCount];
        var largest = new double[MnistClassifier.PixelCount];
        for (int j = 0; j < units; j++)
        {
            double max = 0;
            for (int p = 0; p < MnistClassifier.PixelCount; p++)
                max = Math.Max(max, Math.Abs((double)w1t[(long)p * outPad + j]));
            float s = (float)(max / QMax / 255);
            double step = 255.0 * s; // exact: 8 + 24 bits
            for (int p = 0; p < MnistClassifier.PixelCount; p++)
            {
                double w = w1t[(long)p * outPad + j];
                double q = s == 0 ? 0 : Math.Clamp(Math.Round(w / step), -QMax, QMax);
                uint bits = (ushort)(short)q;
                weights[(long)(p / 2) * outPad + j] |= p % 2 == 0 ? bits : bits << 16;
                residual[p] = Math.Max(residual[p], Math.Abs(w - step * q));
                largest[p] = Math.Max(largest[p], Math.Max(Math.Abs(w), Math.Abs(step * q)));
            }
            scale[j] = s;
        }
        for (int k = 0; k < Pairs; k++)
        {
            residualMax[k] = RoundUp(Math.Max(residual[2 * k], residual[2 * k + 1]));
            weightMax[k] = RoundUp(Math.Max(largest[2 * k], largest[2 * k + 1]));
        }
        var rowSum = new double[layers.Length];
        var biasMax = new double[layers.Length];
        var inputs = new int[layers.Length];
        for (int l = 0; l < layers.Length; l++)
        {
            DenseLayer layer = layers[l];
            inputs[l] = layer.In;
            for (int k = 0; k < layer.Out; k++)
            {
                double sum = 0;
                for (int j = 0; j < layer.In; j++) sum += Math.Abs((double)layer.Wt[(long)j * layer.OutPad + k]);
                rowSum[l] = Math.Max(rowSum[l], sum);
                biasMax[l] = Math.Max(biasMax[l], Math.Abs((double)layer.Bias[k]));
            }
        }
        var result = new PairedFirstLayer(weightMemory, weights, tableMemory, scale, residualMax, weightMax, rowSum,
            biasMax, inputs);
        double e = 0, a = 0; // the widest image: every pixel at 1
        for (int k = 0; k < Pairs; k++) { e += 2 * residualMax[k]; a += 2 * weightMax[k]; }
        double threshold = result.Threshold(e, a, Pairs);
        return double.IsFinite(threshold) && threshold < float.MaxValue / 4 ? result : null;
    }

    /// <summary>
    /// The lead the pass's top logit needs over every other for its answer to stand, for an image with sums
    /// e = sum_p x_p R_p, a = sum_p x_p A_p (computed in float32) over n kept pairs: 2 (E_L + F_L), where layer 1
    /// deviates by E_1 = e + u a + g(2) (a + e + B_1) and is at most M_1 = a + B_1 + E_1 in size (B_l = max |b_l|),
    /// and a later layer with In_l inputs and largest absolute row sum R_l has E_l = R_l E_{l-1} + g(In_l+2) (B_l +
    /// R_l M_{l-1}) (ReLU moves no two values further apart) and M_l = B_l + R_l M_{l-1} + E_l. F_L, the float
    /// path's own deviation, follows the same recursion with no quantization and F_1 = g(2n+2) (a + B_1) (its sum
    /// runs over up to 2n kept pixels). If the lead is larger, the exact
    /// model's argmax and the float path's are both the pass's class.
    /// </summary>
    public double Threshold(double e, double a, int n)
    {
        e *= 1 + Gamma(n + 4); // the float sums and scaling that gave e and a
        a *= 1 + Gamma(n + 4);
        double error = e + Unit * a + Gamma(2) * (a + e + _biasMax[0]);
        double own = Gamma(2 * n + 2) * (a + _biasMax[0]);
        double size = a + _biasMax[0] + error;
        for (int l = 1; l < _inputs.Length; l++)
        {
            double rounding = Gamma(_inputs[l] + 2) * (_biasMax[l] + _rowSum[l] * size);
            error = _rowSum[l] * error + rounding;
            own = _rowSum[l] * own + rounding;
            size = _biasMax[l] + _rowSum[l] * size + error;
        }
        return 2 * (error + own) * (1 + 1e-6);
    }

    /// <summary>As <see cref="Threshold"/>, rounded up to a float.</summary>
    public float ThresholdFloat(float e, float a, int n) => RoundUp(Threshold(e, a, n));

    private static double Gamma(int n) => n * Unit / (1 - n * Unit);

    private static float RoundUp(double v)
    {
        float f = (float)v;
        return f < v ? MathF.BitIncrement(f) : f;
    }

    private static nint Align<T>(ref T first) => ((nint)Unsafe.AsPointer(ref first) + 63) & ~(nint)63;
}

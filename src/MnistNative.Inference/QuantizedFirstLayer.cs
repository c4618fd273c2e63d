using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MnistNative.Inference;

/// <summary>
/// Layer 1 of a model of any depth in 16-bit integers, and the per-image bound that says when its answer is certain.
///
/// Weights: q[p,j] = round(w[p,j] / c_j) with one scale per output unit, c_j = max_p |w[p,j]| / 32767, so
/// |q| &lt;= 32767 and a W1t row takes half the bytes of the float one (the 784-384 layer: 602 KB instead of 1.2 MB,
/// which with the later layers fits a 1 MiB L2). The kernel computes h~_j = c_j * sum_i x_i q[p_i,j] + b_j in
/// float32 over the kept pixels x_i = fl(r_i / 255) (the float path's inputs), and the later layers stay float32.
///
/// Bound, per image, in exact arithmetic (u = 2^-24, g(n) = n u / (1 - n u)): with the residual r[p,j] = w[p,j] -
/// c_j q[p,j], Rmax_p = max_j |r[p,j]| and Wmax_p = max_j |w[p,j]|, the image's e = sum_i x_i Rmax_{p_i} bounds the
/// quantization error of every unit and a = sum_i x_i Wmax_{p_i} the size of every weighted sum. Layer 1 then
/// deviates from the exact float32 model by at most E_1 = e + g(n+2) (a + e + B_1) and its values are at most
/// M_1 = a + B_1 + E_1 (B_l = max |b_l|); a later layer with inputs In_l and largest absolute row sum R_l adds
/// rounding g(In_l+2) (B_l + R_l M_{l-1}) to R_l E_{l-1} (ReLU moves no two values further apart), and
/// M_l = B_l + R_l M_{l-1} + E_l. The float path's own deviation F_L follows the same recursion with e = 0.
/// If the integer pass's top logit leads every other by more than 2 (E_L + F_L), the exact model's argmax and the
/// float path's are both that class: the answer stands. Otherwise (near ties) the image is run again on the float
/// path. So the pass changes how fast an answer comes, never which answer.
/// </summary>
internal sealed unsafe class QuantizedFirstLayer
{
    private const double QMax = 32767;
    private const double Unit = 1.0 / (1 << 24);

    private readonly short[] _weightMemory; // pinned
    private readonly float[] _tableMemory;  // pinned

    /// <summary>q (784, outPad) in W1t's layout, 64-byte aligned.</summary>
    public readonly short* Weights;
    /// <summary>c_j, outPad floats (0 in the padding), 64-byte aligned.</summary>
    public readonly float* Scale;
    /// <summary>Rmax_p then Wmax_p for the 784 pixels (see the class comment).</summary>
    public readonly float* ResidualMax, WeightMax;
    private readonly double[] _rowSum;   // R_l for layers 2..L (index l - 1)
    private readonly double[] _biasMax;  // B_l for layers 1..L (index l - 1)
    private readonly int[] _inputs;      // In_l

    private QuantizedFirstLayer(short[] weightMemory, short* weights, float[] tableMemory, float* scale, float* residualMax,
        float* weightMax, double[] rowSum, double[] biasMax, int[] inputs)
    {
        _weightMemory = weightMemory; Weights = weights;
        _tableMemory = tableMemory; Scale = scale; ResidualMax = residualMax; WeightMax = weightMax;
        _rowSum = rowSum; _biasMax = biasMax; _inputs = inputs;
    }

    /// <summary>
    /// Quantizes w1t (784, outPad: W1 transposed, rows padded) of a model whose layers l have weights wt[l] (In, outPad[l])
    /// and biases bias[l]; null when a bound is not finite (weights so large that float32 sums could overflow).
    /// </summary>
    public static QuantizedFirstLayer? Build(nint[] wt, nint[] bias, int[] inputs, int[] outputs, int[] outPads)
    {
        const int Pixels = MnistClassifier.PixelCount;
        int outPad = outPads[0], units = outputs[0];
        var weightMemory = GC.AllocateArray<short>(Pixels * outPad + 32, pinned: true);
        var tableMemory = GC.AllocateArray<float>(outPad + 2 * Pixels + 64, pinned: true);
        short* weights = (short*)Align(ref MemoryMarshal.GetArrayDataReference(weightMemory));
        float* scale = (float*)Align(ref MemoryMarshal.GetArrayDataReference(tableMemory));
        float* residualMax = scale + outPad, weightMax = residualMax + Pixels;
        float* w1t = (float*)wt[0];
        var residual = new double[Pixels];
        var largest = new double[Pixels];
        for (int j = 0; j < units; j++)
        {
            double max = 0;
            for (int p = 0; p < Pixels; p++) max = Math.Max(max, Math.Abs((double)w1t[(long)p * outPad + j]));
            float c = (float)(max / QMax);
            for (int p = 0; p < Pixels; p++)
            {
                double w = w1t[(long)p * outPad + j];
                double q = c == 0 ? 0 : Math.Clamp(Math.Round(w / c), -QMax, QMax);
                weights[(long)p * outPad + j] = (short)q;
                residual[p] = Math.Max(residual[p], Math.Abs(w - (double)c * q));
                largest[p] = Math.Max(largest[p], Math.Abs(w));
            }
            scale[j] = c;
        }
        for (int p = 0; p < Pixels; p++)
        {
            // rounded up, so that the float sums over them stay bounds
            residualMax[p] = RoundUp(residual[p]);
            weightMax[p] = RoundUp(largest[p]);
        }
        int layers = inputs.Length;
        var rowSum = new double[layers];
        var biasMax = new double[layers];
        for (int l = 0; l < layers; l++)
        {
            for (int k = 0; k < outputs[l]; k++)
            {
                double sum = 0;
                for (int j = 0; j < inputs[l]; j++) sum += Math.Abs((double)((float*)wt[l])[(long)j * outPads[l] + k]);
                rowSum[l] = Math.Max(rowSum[l], sum);
                biasMax[l] = Math.Max(biasMax[l], Math.Abs((double)((float*)bias[l])[k]));
            }
        }
        var layer = new QuantizedFirstLayer(weightMemory, weights, tableMemory, scale, residualMax, weightMax, rowSum,
            biasMax, (int[])inputs.Clone());
        // the widest image: every pixel at 1
        double e = 0, a = 0;
        for (int p = 0; p < Pixels; p++) { e += residualMax[p]; a += weightMax[p]; }
        double threshold = layer.Threshold(e, a, Pixels);
        return double.IsFinite(threshold) && threshold < float.MaxValue / 4 ? layer : null;
    }

    /// <summary>
    /// The lead the integer pass's top logit needs over every other for its answer to stand, for an image with
    /// quantization sum e, size sum a (see the class comment) and n kept pixels.
    /// </summary>
    public double Threshold(double e, double a, int n)
    {
        double g = Gamma(n + 2);
        e *= 1 + g; // the float sums that gave e and a
        a *= 1 + g;
        double error = e + g * (a + e + _biasMax[0]);
        double own = g * (a + _biasMax[0]);
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

    /// <summary>As <see cref="Threshold(double, double, int)"/>, rounded up to a float.</summary>
    public float ThresholdFloat(float e, float a, int n) => RoundUp(Threshold(e, a, n));

    private static double Gamma(int n) => n * Unit / (1 - n * Unit);

    private static float RoundUp(double v)
    {
        float f = (float)v;
        return f < v ? MathF.BitIncrement(f) : f;
    }

    private static nint Align<T>(ref T first) => ((nint)Unsafe.AsPointer(ref first) + 63) & ~(nint)63;
}

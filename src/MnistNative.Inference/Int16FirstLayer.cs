using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MnistNative.Inference;

/// <summary>
/// Layer 1 of a 784 -> H &lt;= 10 -> 10 model in 16-bit integers, and the bound that says when its answer is certain.
///
/// Each hidden unit j gets a scale c_j = max_p |w1[j,p]| / (255 * 32767) and weights
/// q[j,p] = round(w1[j,p] / (255 c_j)), |q| &lt;= 32767. With raw pixels r_p (0..255, exact in int16), vpmaddwd sums
/// r_p * q[j,p] exactly in int32, and h~_j = c_j * sum + b1_j approximates the float32 model's
/// h_j = sum (r_p / 255) w1[j,p] + b1_j (exact arithmetic) within
///   E_j = sum_p |w1[j,p] - 255 c_j q[j,p]|       (quantization; x_p = r_p / 255 is at most 1)
///       + 2^-20 (784 max_p |w1[j,p]| + |b1_j|)   (float rounding of the conversion, folds, scale, bias).
/// ReLU moves no value further apart, so each logit z~_k = b2_k + sum_j w2[k,j] relu(h~_j), computed in float32, is
/// within D_k = sum_j |w2[k,j]| E_j + 2^-19 (|b2_k| + sum_j |w2[k,j]| (784 max_p |w1[j,p]| + |b1_j| + E_j)) of the
/// exact logit (the second term bounds the rounding of 10 float FMAs on values of at most that size).
///
/// If one class k leads every other by more than <see cref="Threshold"/> = 2 max_k D_k, it is the exact model's argmax
/// and the answer is returned; otherwise (near ties: 37 of the 10,000 MNIST test images for the seed's model, whose
/// threshold is 0.034 while the largest logit error seen is 0.0002) the caller runs the float32 kernels. So the
/// integer pass changes how fast an answer comes, not which answer: it can differ from the float32 kernels only where
/// their own rounding decides a tie within ~1e-5.
/// </summary>
internal sealed unsafe class Int16FirstLayer
{
    public const int Units = 10;     // accumulators in the kernel; models with fewer hidden units get zero rows
    public const int Stride = 784;   // shorts per row: 1,568 bytes, a multiple of 32, so every row
                                     // stays 32-byte aligned
    private const double QMax = 32767;

    private readonly short[] _weightMemory; // pinned
    private readonly float[] _scaleMemory;  // pinned

    /// <summary>Rows in kernel order (see <see cref="UnitOfRow"/>), 64-byte aligned.</summary>
    public readonly short* Weights;
    /// <summary>c_j for units 0..9 in order, then zeros: 16 floats, 64-byte aligned.</summary>
    public readonly float* Scale;
    /// <summary>2 max_k D_k: the lead a class needs for the integer pass's answer to stand.</summary>
    public readonly float Threshold;

    /// <summary>
    /// Row i of <see cref="Weights"/> feeds accumulator i, and the kernel's horizontal adds leave accumulator i's sum
    /// in lane UnitOfRow^-1: rows are stored in this unit order so that the sums come out as units 0..9.
    /// </summary>
    public static ReadOnlySpan<int> UnitOfRow => [0, 4, 1, 5, 2, 6, 3, 7, 8, 9];

    private Int16FirstLayer(short[] weightMemory, short* weights, float[] scaleMemory, float* scale, float threshold)
    {
        _weightMemory = weightMemory; Weights = weights;
        _scaleMemory = scaleMemory; Scale = scale;
        Threshold = threshold;
    }

    /// <summary>
    /// Quantizes w1t (784, 16: W1 transposed, rows padded) for hidden units 0..hidden-1, or returns null when the bound
    /// is not finite (weights so large that float32 sums could overflow), in which case only the float kernels run.
    /// b1, b2: padded biases; w2t (hidden, 16): W2 transposed.
    /// </summary>
    public static Int16FirstLayer? Build(float* w1t, float* b1, int hidden, float* w2t, float* b2)
    {
        if (hidden > Units)
            throw new ArgumentOutOfRangeException(nameof(hidden), hidden, $"at most {Units} hidden units");
        const int Pixels = MnistClassifier.PixelCount, Lane = ForwardKernels.Lane;
        var weightMemory = GC.AllocateArray<short>(Units * Stride + 32, pinned: true);
        var scaleMemory = GC.AllocateArray<float>(Lane + 16, pinned: true);
        short* weights = (short*)Align(ref MemoryMarshal.GetArrayDataReference(weightMemory));
        float* scale = (float*)Align(ref MemoryMarshal.GetArrayDataReference(scaleMemory));

        Span<double> error = stackalloc double[Units], size = stackalloc double[Units];
        ReadOnlySpan<int> unitOfRow = UnitOfRow;
        for (int row = 0; row < Units; row++)
        {
            int j = unitOfRow[row];
            if (j >= hidden) continue; // a zero row, scale 0: h_j = relu(0 + 0) = 0 as the float kernels' padding
            double max = 0;
            for (int p = 0; p < Pixels; p++) max = Math.Max(max, Math.Abs((double)w1t[p * Lane + j]));
            float c = (float)(max / (255 * QMax));
            double step = 255.0 * c, quantization = 0;
            for (int p = 0; p < Pixels; p++)
            {
                double w = w1t[p * Lane + j];
                double q = c == 0 ? 0 : Math.Clamp(Math.Round(w / step), -QMax, QMax);
                weights[row * Stride + p] = (short)q;
                quantization += Math.Abs(w - step * q);
            }
            scale[j] = c;
            size[j] = Pixels * max + Math.Abs((double)b1[j]);
            error[j] = quantization + Math.ScaleB(size[j], -20);
        }

        double worst = 0;
        for (int k = 0; k < MnistClassifier.ClassCount; k++)
        {
            double d = 0, magnitude = Math.Abs((double)b2[k]);
            for (int j = 0; j < hidden; j++)
            {
                double w = Math.Abs((double)w2t[j * Lane + k]);
                d += w * error[j];
                magnitude += w * (size[j] + error[j]);
            }
            worst = Math.Max(worst, d + Math.ScaleB(magnitude, -19));
        }
        double threshold = 2 * worst * (1 + 1e-6); // rounded up past the float conversion below
        if (!double.IsFinite(threshold) || threshold >= float.MaxValue) return null;
        return new Int16FirstLayer(weightMemory, weights, scaleMemory, scale, (float)threshold);
    }

    private static nint Align<T>(ref T first) => ((nint)Unsafe.AsPointer(ref first) + 63) & ~(nint)63;
}

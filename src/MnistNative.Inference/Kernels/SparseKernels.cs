using System.Numerics;
using System.Runtime.CompilerServices;

namespace MnistNative.Inference;

/// <summary>
/// The kernels of the sparse column form (see <see cref="ForwardKernels"/>), each written once over a SIMD width
/// (<see cref="IVectorWidth{TVector}"/>: <see cref="Width512"/>, <see cref="Width256"/>, <see cref="Width128"/>)
/// beside the scalar reference it mirrors. Call them with the width and its vector type:
/// <c>SparseKernels.Accumulate&lt;Width512, Vector512&lt;float&gt;&gt;</c>.
/// </summary>
internal static unsafe class SparseKernels
{
    private const float PixelScale = 1f / 255f;

    /// <summary>Compaction writes whole vectors past the last kept entry: idx, val need these spare slots.</summary>
    public const int Slack = 16;

    // pixels (784 bytes) -> idx, val (n): the nonzero pixels and their values scaled by 1/255. Mirrors
    // CompactPixelsScalar.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactPixels<W, TV>(byte* pixels, int* idx, float* val)
        where W : struct, IVectorWidth<TV> where TV : struct
    {
        TV scale = W.Broadcast(PixelScale);
        int n = 0;
        for (int c = 0; c < MnistClassifier.PixelCount; c += W.Count) // 784 is a multiple of every Count
            n += W.CompactNonZero(W.Multiply(W.WidenBytes(pixels + c), scale), c, idx + n, val + n);
        return n;
    }

    // The reference for CompactPixels.
    public static int CompactPixelsScalar(byte* pixels, int* idx, float* val)
    {
        int n = 0;
        for (int k = 0; k < MnistClassifier.PixelCount; k++)
        {
            if (pixels[k] == 0) continue;
            idx[n] = k;
            val[n] = pixels[k] * PixelScale;
            n++;
        }
        return n;
    }

    // a (len floats) -> idx, val (n): the nonzero entries. Mirrors CompactFloatsScalar.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactFloats<W, TV>(float* a, int len, int* idx, float* val)
        where W : struct, IVectorWidth<TV> where TV : struct
    {
        int n = 0, c = 0;
        for (; c + W.Count <= len; c += W.Count) n += W.CompactNonZero(W.Load(a + c), c, idx + n, val + n);
        for (; c < len; c++)
        {
            // branch-free tail: write always, advance only past a nonzero
            idx[n] = c;
            val[n] = a[c];
            n += a[c] != 0f ? 1 : 0;
        }
        return n;
    }

    // The reference for CompactFloats.
    public static int CompactFloatsScalar(float* a, int len, int* idx, float* val)
    {
        int n = 0;
        for (int c = 0; c < len; c++)
        {
            if (a[c] == 0f) continue;
            idx[n] = c;
            val[n] = a[c];
            n++;
        }
        return n;
    }

    // out (outPad) = bias + sum_i val[i] * wt[idx[i], :]      wt (in, outPad), bias (outPad), outPad a multiple of 16.
    // Mirrors AccumulateScalar. Four output vectors per pass give four independent FMA chains; the columns left
    // over (fewer than four vectors, e.g. the 16 of a 10-unit layer) take one vector at a time with the inputs
    // spread over four accumulators instead, so the FMA latency never serialises the loop.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate<W, TV>(float* output, float* wt, float* bias, int outPad, int* idx, float* val, int n)
        where W : struct, IVectorWidth<TV> where TV : struct
    {
        int v = W.Count, c = 0;
        for (; c + 4 * v <= outPad; c += 4 * v)
        {
            TV a0 = W.Load(bias + c), a1 = W.Load(bias + c + v);
            TV a2 = W.Load(bias + c + 2 * v), a3 = W.Load(bias + c + 3 * v);
            for (int i = 0; i < n; i++)
            {
                float* w = wt + (nint)idx[i] * outPad + c;
                TV x = W.Broadcast(val[i]);
                a0 = W.MultiplyAdd(W.Load(w), x, a0);
                a1 = W.MultiplyAdd(W.Load(w + v), x, a1);
                a2 = W.MultiplyAdd(W.Load(w + 2 * v), x, a2);
                a3 = W.MultiplyAdd(W.Load(w + 3 * v), x, a3);
            }
            W.Store(a0, output + c); W.Store(a1, output + c + v);
            W.Store(a2, output + c + 2 * v); W.Store(a3, output + c + 3 * v);
        }
        for (; c < outPad; c += v)
        {
            TV a0 = W.Load(bias + c), a1 = W.Zero, a2 = W.Zero, a3 = W.Zero;
            float* w = wt + c;
            int i = 0;
            for (; i + 4 <= n; i += 4)
            {
                a0 = W.MultiplyAdd(W.Load(w + (nint)idx[i] * outPad), W.Broadcast(val[i]), a0);
                a1 = W.MultiplyAdd(W.Load(w + (nint)idx[i + 1] * outPad), W.Broadcast(val[i + 1]), a1);
                a2 = W.MultiplyAdd(W.Load(w + (nint)idx[i + 2] * outPad), W.Broadcast(val[i + 2]), a2);
                a3 = W.MultiplyAdd(W.Load(w + (nint)idx[i + 3] * outPad), W.Broadcast(val[i + 3]), a3);
            }
            for (; i < n; i++) a0 = W.MultiplyAdd(W.Load(w + (nint)idx[i] * outPad), W.Broadcast(val[i]), a0);
            W.Store(W.Add(W.Add(a0, a1), W.Add(a2, a3)), output + c);
        }
    }

    // The reference for Accumulate: out[j] = b[j] + sum_i val[i] * wt[idx[i], j].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AccumulateScalar(float* output, float* wt, float* bias, int outPad, int* idx, float* val, int n)
    {
        for (int j = 0; j < outPad; j++) output[j] = bias[j];
        for (int i = 0; i < n; i++)
        {
            float* w = wt + (nint)idx[i] * outPad;
            float x = val[i];
            for (int j = 0; j < outPad; j++) output[j] += w[j] * x;
        }
    }

    // a (outPad) -> max(a, 0), outPad a multiple of 16. Mirrors ReluScalar.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Relu<W, TV>(float* a, int outPad) where W : struct, IVectorWidth<TV> where TV : struct
    {
        for (int c = 0; c < outPad; c += W.Count) W.Store(W.Max(W.Load(a + c), W.Zero), a + c);
    }

    // The reference for Relu.
    public static void ReluScalar(float* a, int outPad)
    {
        for (int c = 0; c < outPad; c++) a[c] = Math.Max(a[c], 0f);
    }

    // z (16 floats: 10 logits, then padding) -> the first index of the largest logit, as numpy's argmax; 0 when
    // no logit equals the largest (NaN logits, from a model whose sums overflow). Mirrors ArgMaxScalar.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ArgMax10<W, TV>(float* z) where W : struct, IVectorWidth<TV> where TV : struct
    {
        float* valid = ClassLanes;
        TV top = W.Broadcast(float.NegativeInfinity), negativeInfinity = top;
        for (int c = 0; c < 16; c += W.Count)
            top = W.Max(top, W.Select(W.Load(valid + c), W.Load(z + c), negativeInfinity));
        float max = W.MaxAcross(top);
        uint hit = 0;
        for (int c = 0; c < 16; c += W.Count) hit |= W.EqualsMask(W.Load(z + c), max) << c;
        int first = BitOperations.TrailingZeroCount(hit);
        return first < MnistClassifier.ClassCount ? first : 0;
    }

    // The reference for ArgMax10 (len 10) and the argmax of any length: the first index of the largest value.
    public static int ArgMaxScalar(float* z, int len)
    {
        int best = 0;
        float max = z[0];
        for (int j = 1; j < len; j++)
            if (z[j] > max) { max = z[j]; best = j; }
        return best;
    }

    // 16 floats: all bits set in lanes 0..9 (the classes), 0 in the padding lanes
    private static readonly float* ClassLanes = BuildClassLanes();

    private static float* BuildClassLanes()
    {
        // lives as long as the process
        var lanes = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(16 * sizeof(float), 64);
        for (int j = 0; j < 16; j++) lanes[j] = j < MnistClassifier.ClassCount
            ? BitConverter.Int32BitsToSingle(-1) : 0f;
        return lanes;
    }
}

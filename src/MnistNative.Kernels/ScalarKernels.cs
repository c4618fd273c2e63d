namespace MnistNative.Kernels;

/// <summary>
/// The scalar references of <see cref="VectorKernels{TW, TVec}"/>: plain loops, one per kernel, that say what the
/// kernel computes; the kernel tests compare each vector kernel with its reference here over lengths 0..n and
/// unaligned starts, and the inference core runs them where no SIMD width is available.
/// </summary>
public static unsafe class ScalarKernels
{
    /// <summary>A pixel byte times this is its value in [0, 1] (the multiply the SIMD compaction does).</summary>
    public const float PixelScale = 1f / 255f;

    /// <summary>The non-zero entries of a (len floats), in order: their indices into idx and values into val;
    /// returns their count. -0 is a zero.</summary>
    public static int CompactNonzero(float* a, int len, int* idx, float* val)
    {
        int count = 0;
        for (int k = 0; k < len; k++)
        {
            if (a[k] == 0f) continue;
            idx[count] = k;
            val[count++] = a[k];
        }
        return count;
    }

    /// <summary>The non-zero pixels (len bytes), in order: their indices into idx and values times
    /// <see cref="PixelScale"/> into val; returns their count.</summary>
    public static int CompactPixels(byte* pixels, int len, int* idx, float* val)
    {
        int count = 0;
        for (int k = 0; k < len; k++)
        {
            if (pixels[k] == 0) continue;
            idx[count] = k;
            val[count++] = pixels[k] * PixelScale;
        }
        return count;
    }

    /// <summary>
    /// One row of a sparse product: dst[c] = init[c] + sum over the entries e &lt; n, in order, of val[e] *
    /// m[rows[e] * stride + c], one fused multiply-add per term, for c in [0, width). With (rows, val) a sample's
    /// non-zero inputs and m = w^T (in, out) it is a row of a layer's forward pass (bias as init); with (rows, val)
    /// an input unit's samples and m = dz it is a row of the weight gradient dw^T. dst may be init.
    /// </summary>
    public static void SparseAccumulate(float* dst, float* init, float* m, nint stride, int* rows, float* val, int n,
        int width)
    {
        for (int c = 0; c < width; c++) dst[c] = init[c];
        for (int e = 0; e < n; e++)
        {
            float* r = m + rows[e] * stride;
            float x = val[e];
            for (int c = 0; c < width; c++) dst[c] = MathF.FusedMultiplyAdd(x, r[c], dst[c]);
        }
    }

    /// <summary>a[k] = max(a[k], 0) for k &lt; len, as maxps computes it: 0 for a NaN or a zero of either sign.
    /// </summary>
    public static void Relu(float* a, int len)
    {
        for (int k = 0; k < len; k++) a[k] = a[k] > 0f ? a[k] : 0f;
    }

    /// <summary>The index of the largest of v[0..len), the first on ties (numpy's argmax); 0 when len is 0.
    /// </summary>
    public static int ArgMax(float* v, int len)
    {
        int best = 0;
        for (int i = 1; i < len; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}

using System.Numerics;
using System.Runtime.CompilerServices;

namespace MnistNative.Kernels;

/// <summary>
/// The small kernels the SIMD training backend and the inference core share, written once over the width
/// (<see cref="IVectorWidth{TVec}"/>: <see cref="Width512"/>, <see cref="Width256"/>, <see cref="Width128"/>);
/// each names its scalar reference in <see cref="ScalarKernels"/>, and the kernel tests compare them over lengths
/// 0..n and unaligned starts. Call them with the width and its vector type:
/// <c>VectorKernels&lt;Width512, Vector512&lt;float&gt;&gt;.CompactNonzero(...)</c>.
/// </summary>
public static unsafe class VectorKernels<TW, TVec>
    where TW : struct, IVectorWidth<TVec>
    where TVec : unmanaged
{
    /// <summary>
    /// The non-zero entries of a (len floats): indices into idx, values into val, in order; returns their count
    /// (mirrors <see cref="ScalarKernels.CompactNonzero"/>). idx and val need room for len entries: the whole-vector
    /// stores of <see cref="IVectorWidth{TVec}.CompactNonzero"/> end before k + Count &lt;= len. A vector at a time
    /// (vcompressps at 512 bits, a left-pack permute below), then a branch-free scalar tail: about half the ReLU
    /// outputs are zero, in no pattern a predictor learns.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactNonzero(float* a, int len, int* idx, float* val)
    {
        int count = 0, k = 0;
        for (; k + TW.Count <= len; k += TW.Count)
            count += TW.CompactNonzero(TW.Load(a + k), k, idx + count, val + count);
        // the slot past the last kept entry is written and then overwritten or ignored, so the loop has no branch; it
        // stays below len because count <= k
        for (; k < len; k++)
        {
            float x = a[k];
            idx[count] = k;
            val[count] = x;
            count += x != 0f ? 1 : 0;
        }
        return count;
    }

    /// <summary>
    /// The non-zero pixels (len bytes): indices into idx, values scaled by <see cref="ScalarKernels.PixelScale"/>
    /// into val, in order; returns their count (mirrors <see cref="ScalarKernels.CompactPixels"/>). idx and val need
    /// room for len entries.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactPixels(byte* pixels, int len, int* idx, float* val)
    {
        TVec scale = TW.Create(ScalarKernels.PixelScale);
        int count = 0, k = 0;
        for (; k + TW.Count <= len; k += TW.Count)
            count += TW.CompactNonzero(TW.Multiply(TW.LoadBytes(pixels + k), scale), k, idx + count, val + count);
        for (; k < len; k++)
        {
            idx[count] = k;
            val[count] = pixels[k] * ScalarKernels.PixelScale;
            count += pixels[k] != 0 ? 1 : 0;
        }
        return count;
    }

    /// <summary>
    /// dst (4 vectors) = init (4 vectors) + sum over e &lt; n of val[e] * m[rows[e] * stride + (0 .. 4 vectors)]
    /// (mirrors <see cref="ScalarKernels.SparseAccumulate"/> bitwise: one FMA per term in entry order). The inner
    /// loop of the per-layer forward (rows: input units of a sample, m: w^T) and weight gradient (rows: samples of
    /// an input unit, m: dz). A small method of its own so that the JIT keeps every pointer in a register: inlined
    /// into the phase methods, with their many live values, it reloaded three spilled pointers and recomputed the row
    /// address per entry.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void SparseAccumulate4(float* dst, float* init, float* m, nint stride, int* rows, float* val, int n)
    {
        int vc = TW.Count;
        TVec a0 = TW.Load(init), a1 = TW.Load(init + vc), a2 = TW.Load(init + 2 * vc), a3 = TW.Load(init + 3 * vc);
        for (int e = 0; e < n; e++)
        {
            TVec x = TW.Create(val[e]);
            float* r = m + rows[e] * stride;
            a0 = TW.MultiplyAdd(x, TW.Load(r), a0);
            a1 = TW.MultiplyAdd(x, TW.Load(r + vc), a1);
            a2 = TW.MultiplyAdd(x, TW.Load(r + 2 * vc), a2);
            a3 = TW.MultiplyAdd(x, TW.Load(r + 3 * vc), a3);
        }
        TW.Store(dst, a0); TW.Store(dst + vc, a1); TW.Store(dst + 2 * vc, a2); TW.Store(dst + 3 * vc, a3);
    }

    /// <summary><see cref="SparseAccumulate4"/> for one vector (mirrors <see cref="ScalarKernels.SparseAccumulate"/>
    /// bitwise).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void SparseAccumulate1(float* dst, float* init, float* m, nint stride, int* rows, float* val, int n)
    {
        TVec a0 = TW.Load(init);
        for (int e = 0; e < n; e++) a0 = TW.MultiplyAdd(TW.Create(val[e]), TW.Load(m + rows[e] * stride), a0);
        TW.Store(dst, a0);
    }

    /// <summary>
    /// A whole row of a sparse product, width a multiple of Count: dst[c] = init[c] + sum over e &lt; n of val[e] *
    /// m[rows[e] * stride + c] (mirrors <see cref="ScalarKernels.SparseAccumulate"/>). Four vectors at a time by
    /// <see cref="SparseAccumulate4"/> (four independent FMA chains, bitwise the reference); the columns left over
    /// (fewer than four vectors, e.g. the 16 of a 10-unit layer) take one vector at a time with the entries spread
    /// over four accumulators instead, so the FMA latency never serialises the loop: those columns sum in another
    /// order and match the reference to rounding. The inference core's layer forward pass.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SparseAccumulate(float* dst, float* init, float* m, nint stride, int* rows, float* val, int n,
        int width)
    {
        int vc = TW.Count, c = 0;
        for (; c + 4 * vc <= width; c += 4 * vc) SparseAccumulate4(dst + c, init + c, m + c, stride, rows, val, n);
        for (; c < width; c += vc)
        {
            TVec a0 = TW.Load(init + c), a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero;
            float* col = m + c;
            int e = 0;
            for (; e + 4 <= n; e += 4)
            {
                a0 = TW.MultiplyAdd(TW.Create(val[e]), TW.Load(col + rows[e] * stride), a0);
                a1 = TW.MultiplyAdd(TW.Create(val[e + 1]), TW.Load(col + rows[e + 1] * stride), a1);
                a2 = TW.MultiplyAdd(TW.Create(val[e + 2]), TW.Load(col + rows[e + 2] * stride), a2);
                a3 = TW.MultiplyAdd(TW.Create(val[e + 3]), TW.Load(col + rows[e + 3] * stride), a3);
            }
            for (; e < n; e++) a0 = TW.MultiplyAdd(TW.Create(val[e]), TW.Load(col + rows[e] * stride), a0);
            TW.Store(dst + c, TW.Add(TW.Add(a0, a1), TW.Add(a2, a3)));
        }
    }

    /// <summary>a[k] = max(a[k], 0) for k &lt; len (mirrors <see cref="ScalarKernels.Relu"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Relu(float* a, int len)
    {
        int k = 0;
        for (; k + TW.Count <= len; k += TW.Count) TW.Store(a + k, TW.Max(TW.Load(a + k), TW.Zero));
        ScalarKernels.Relu(a + k, len - k);
    }

    /// <summary>
    /// z (16 floats: 10 logits, then padding whatever its values) -> the first index of the largest logit
    /// (mirrors <see cref="ScalarKernels.ArgMax"/> with len 10); 0 when no logit equals the largest found (NaN
    /// logits). Masks, a max across lanes and the first set bit of the equality mask, no branch per logit.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ArgMax10(float* z)
    {
        float* valid = ClassLanes.Mask;
        TVec negativeInfinity = TW.Create(float.NegativeInfinity), top = negativeInfinity;
        for (int c = 0; c < ClassLanes.Padded; c += TW.Count)
            top = TW.Max(top, TW.Select(TW.Load(valid + c), TW.Load(z + c), negativeInfinity));
        float max = TW.MaxAcross(top);
        uint hit = 0;
        for (int c = 0; c < ClassLanes.Padded; c += TW.Count) hit |= TW.EqualsMask(TW.Load(z + c), max) << c;
        int first = BitOperations.TrailingZeroCount(hit);
        return first < ClassLanes.Classes ? first : 0;
    }
}

/// <summary>The lane mask of <see cref="VectorKernels{TW, TVec}.ArgMax10"/>: 16 floats, all bits set in lanes 0..9
/// (the classes), 0 in the padding lanes.</summary>
public static unsafe class ClassLanes
{
    public const int Classes = 10, Padded = 16;

    public static readonly float* Mask = Build();

    private static float* Build()
    {
        // lives as long as the process
        var lanes = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(Padded * sizeof(float), 64);
        for (int j = 0; j < Padded; j++) lanes[j] = j < Classes ? BitConverter.Int32BitsToSingle(-1) : 0f;
        return lanes;
    }
}

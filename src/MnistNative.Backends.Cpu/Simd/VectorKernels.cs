using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The small kernels both paths of the SIMD backend share, written once over the width
/// (<see cref="IVectorWidth{TVec}"/>); each names its scalar reference in <see cref="Reference.Reference"/>, and
/// the kernel tests compare them over lengths 0..n and unaligned starts.
/// </summary>
internal static unsafe class VectorKernels<TW, TVec>
    where TW : struct, IVectorWidth<TVec>
    where TVec : unmanaged
{
    /// <summary>
    /// The non-zero entries of a (len floats): indices into idx, values into val, in order; returns their count
    /// (mirrors Reference.CompactNonzero). idx and val need room for len entries. At 512 bits, 16 at a time with
    /// the register form of vcompressps / vpcompressd (the memory form is microcoded on AMD), then a scalar tail;
    /// otherwise branch-free scalar code (about half the ReLU outputs are zero, in no pattern a predictor learns).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactNonzero(float* a, int len, int* idx, float* val)
    {
        int count = 0, k = 0;
        if (typeof(TVec) == typeof(Vector512<float>) && Avx512F.IsSupported)
        {
            Vector512<int> lane = Vector512<int>.Indices;
            for (; k + 16 <= len; k += 16)
            {
                Vector512<float> x = Vector512.Load(a + k);
                Vector512<float> keep = ~Vector512.Equals(x, Vector512<float>.Zero);
                Vector512.Store(Avx512F.Compress(Vector512<int>.Zero, keep.AsInt32(), lane + Vector512.Create(k)),
                    idx + count);
                Vector512.Store(Avx512F.Compress(Vector512<float>.Zero, keep, x), val + count);
                count += BitOperations.PopCount(keep.ExtractMostSignificantBits());
            }
        }
        // the tail (or all of a): the slot past the last kept entry is written and then overwritten or ignored, so
        // the loop has no branch; it stays below len because count <= k
        for (; k < len; k++)
        {
            float x = a[k];
            idx[count] = k;
            val[count] = x;
            count += x != 0 ? 1 : 0;
        }
        return count;
    }

    /// <summary>The index of the largest of v[0..len), the first on ties; 0 when len is 0 (mirrors
    /// Reference.ArgMax). Ten logits are too few for lanes to pay.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ArgMax(float* v, int len)
    {
        int best = 0;
        for (int i = 1; i < len; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    /// <summary>
    /// dst (4 vectors) = init (4 vectors) + sum over e &lt; n of val[e] * m[rows[e] * stride + (0 .. 4 vectors)]
    /// (mirrors Reference.SparseAccumulate, one FMA per term in entry order). The inner loop of the per-layer
    /// forward (rows: input units of a sample, m: w^T) and weight gradient (rows: samples of an input unit, m: dz).
    /// A small method of its own so that the JIT keeps every pointer in a register: inlined into the phase methods,
    /// with their many live values, it reloaded three spilled pointers and recomputed the row address per entry.
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

    /// <summary><see cref="SparseAccumulate4"/> for one vector (mirrors Reference.SparseAccumulate).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void SparseAccumulate1(float* dst, float* init, float* m, nint stride, int* rows, float* val, int n)
    {
        TVec a0 = TW.Load(init);
        for (int e = 0; e < n; e++) a0 = TW.MultiplyAdd(TW.Create(val[e]), TW.Load(m + rows[e] * stride), a0);
        TW.Store(dst, a0);
    }
}

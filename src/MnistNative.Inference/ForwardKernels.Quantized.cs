using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Inference;

/// <summary>
/// Layer 1 of a model of any depth from 16-bit weights (<see cref="QuantizedFirstLayer"/>), AVX-512: the sparse
/// column form of <see cref="AccumulateScalar"/> with each W1t row read as int16 and widened to float32 in registers
/// (vpmovsxwd, vcvtdq2ps) before the FMA. On Zen 4 the widening runs beside the FMAs, and a row costs half the
/// bytes, so the rows of W1t that a batch touches stay in L2.
/// </summary>
internal static unsafe partial class ForwardKernels
{
    // out (outPad) = bias + scale * sum_i val[i] * q[idx[i], :]      q (in, outPad) int16, scale and bias (outPad)
    // Mirrors AccumulateScalar with wt = scale * q.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AccumulateInt16(float* output, short* q, float* scale, float* bias, int outPad, int* idx, float* val, int n)
    {
        int c = 0;
        for (; c + 64 <= outPad; c += 64)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int i = 0; i < n; i++)
            {
                short* w = q + (nint)idx[i] * outPad + c;
                Vector512<float> x = Vector512.Create(val[i]);
                a0 = Avx512F.FusedMultiplyAdd(Widen(w), x, a0);
                a1 = Avx512F.FusedMultiplyAdd(Widen(w + 16), x, a1);
                a2 = Avx512F.FusedMultiplyAdd(Widen(w + 32), x, a2);
                a3 = Avx512F.FusedMultiplyAdd(Widen(w + 48), x, a3);
            }
            Vector512.Store(Avx512F.FusedMultiplyAdd(a0, Vector512.LoadAligned(scale + c), Vector512.LoadAligned(bias + c)), output + c);
            Vector512.Store(Avx512F.FusedMultiplyAdd(a1, Vector512.LoadAligned(scale + c + 16), Vector512.LoadAligned(bias + c + 16)), output + c + 16);
            Vector512.Store(Avx512F.FusedMultiplyAdd(a2, Vector512.LoadAligned(scale + c + 32), Vector512.LoadAligned(bias + c + 32)), output + c + 32);
            Vector512.Store(Avx512F.FusedMultiplyAdd(a3, Vector512.LoadAligned(scale + c + 48), Vector512.LoadAligned(bias + c + 48)), output + c + 48);
        }
        for (; c < outPad; c += 16)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            short* w = q + c;
            int i = 0;
            for (; i + 4 <= n; i += 4)
            {
                a0 = Avx512F.FusedMultiplyAdd(Widen(w + (nint)idx[i] * outPad), Vector512.Create(val[i]), a0);
                a1 = Avx512F.FusedMultiplyAdd(Widen(w + (nint)idx[i + 1] * outPad), Vector512.Create(val[i + 1]), a1);
                a2 = Avx512F.FusedMultiplyAdd(Widen(w + (nint)idx[i + 2] * outPad), Vector512.Create(val[i + 2]), a2);
                a3 = Avx512F.FusedMultiplyAdd(Widen(w + (nint)idx[i + 3] * outPad), Vector512.Create(val[i + 3]), a3);
            }
            for (; i < n; i++)
                a0 = Avx512F.FusedMultiplyAdd(Widen(w + (nint)idx[i] * outPad), Vector512.Create(val[i]), a0);
            Vector512.Store(Avx512F.FusedMultiplyAdd((a0 + a1) + (a2 + a3), Vector512.LoadAligned(scale + c), Vector512.LoadAligned(bias + c)), output + c);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen(short* w) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector256.LoadAligned(w)));

    // (e, a) = (sum_i val[i] * residualMax[idx[i]], sum_i val[i] * weightMax[idx[i]]): the per-image sums of the
    // QuantizedFirstLayer bound, 8 entries per gather.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static (float E, float A) BoundSums(float* residualMax, float* weightMax, int* idx, float* val, int n)
    {
        Vector256<float> e = default, a = default;
        int i = 0;
        for (; i + 8 <= n; i += 8)
        {
            Vector256<int> rows = Vector256.Load(idx + i);
            Vector256<float> x = Vector256.Load(val + i);
            e = Fma.MultiplyAdd(Avx2.GatherVector256(residualMax, rows, 4), x, e);
            a = Fma.MultiplyAdd(Avx2.GatherVector256(weightMax, rows, 4), x, a);
        }
        float se = Vector256.Sum(e), sa = Vector256.Sum(a);
        for (; i < n; i++)
        {
            se += val[i] * residualMax[idx[i]];
            sa += val[i] * weightMax[idx[i]];
        }
        return (se, sa);
    }

    /// <summary>The first index of the largest of z[0..len) if it leads every other by more than threshold, else -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CertifiedArgMax(float* z, int len, float threshold)
    {
        int best = ArgMax(z, len);
        float top = z[best];
        for (int j = 0; j < len; j++)
            if (j != best && !(top - z[j] > threshold)) return -1;
        return best;
    }
}

using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Inference;

/// <summary>
/// Layer 1 over pixel pairs in 16-bit integers (<see cref="PairedFirstLayer"/>), AVX-512BW: compaction of the pairs
/// with ink, then vpmaddwd of each kept pair's raw values against its row of (q[2k,j], q[2k+1,j]) words.
/// </summary>
internal static unsafe partial class ForwardKernels
{
    /// <summary>Whether <see cref="CompactPixelPairs"/> and <see cref="AccumulatePairs"/> run here.</summary>
    public static bool CanRunPairs => Avx512BW.IsSupported && Avx512F.IsSupported;

    // pixels (784 bytes) -> pair (n), value (n): the pairs (2k, 2k+1) with a nonzero pixel, k and the word
    // r_2k | r_2k+1 << 16, in order. Mirrors CompactPixelsScalar over pairs. Writes whole vectors up to 15 slots
    // past n.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactPixelPairs(byte* pixels, int* pair, uint* value)
    {
        int n = 0;
        for (int c = 0; c < 768; c += 32)
            n = KeepPairs(Avx512BW.ConvertToVector512UInt16(Vector256.Load(pixels + c)).AsUInt32(), c / 2, pair,
                value, n);
        // the last 16 pixels: a 16-byte load, no read past the image
        Vector256<ushort> last = Avx2.ConvertToVector256Int16(Vector128.Load(pixels + 768)).AsUInt16();
        return KeepPairs(Vector512.Create(last, Vector256<ushort>.Zero).AsUInt32(), 384, pair, value, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int KeepPairs(Vector512<uint> words, int first, int* pair, uint* value, int n)
    {
        Vector512<uint> keep = ~Vector512.Equals(words, Vector512<uint>.Zero);
        Vector512.Store(Avx512F.Compress(Vector512<int>.Zero, keep.AsInt32(),
            Vector512<int>.Indices + Vector512.Create(first)), pair + n);
        Vector512.Store(Avx512F.Compress(Vector512<uint>.Zero, keep, words), value + n);
        return n + BitOperations.PopCount(keep.ExtractMostSignificantBits());
    }

    // out (outPad) = bias + scale * sum_i (r_2k q[2k, :] + r_2k+1 q[2k+1, :]) over the kept pairs k = pair[i],
    // words (392, outPad). The int32 sums are exact (PairedFirstLayer keeps them below 2^31). Mirrors
    // ScalarKernels.SparseAccumulate with m = 255 scale q and val = r / 255, in VectorKernels.SparseAccumulate's
    // passes.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AccumulatePairs(float* output, uint* words, float* scale, float* bias, int outPad, int* pair,
        uint* value, int n)
    {
        int c = 0;
        for (; c + 64 <= outPad; c += 64)
        {
            Vector512<int> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int i = 0; i < n; i++)
            {
                uint* w = words + (nint)pair[i] * outPad + c;
                Vector512<short> x = Vector512.Create(value[i]).AsInt16();
                a0 += Avx512BW.MultiplyAddAdjacent(Vector512.LoadAligned(w).AsInt16(), x);
                a1 += Avx512BW.MultiplyAddAdjacent(Vector512.LoadAligned(w + 16).AsInt16(), x);
                a2 += Avx512BW.MultiplyAddAdjacent(Vector512.LoadAligned(w + 32).AsInt16(), x);
                a3 += Avx512BW.MultiplyAddAdjacent(Vector512.LoadAligned(w + 48).AsInt16(), x);
            }
            StoreScaled(a0, scale + c, bias + c, output + c);
            StoreScaled(a1, scale + c + 16, bias + c + 16, output + c + 16);
            StoreScaled(a2, scale + c + 32, bias + c + 32, output + c + 32);
            StoreScaled(a3, scale + c + 48, bias + c + 48, output + c + 48);
        }
        for (; c < outPad; c += 16)
        {
            Vector512<int> a0 = default, a1 = default;
            uint* w = words + c;
            int i = 0;
            for (; i + 2 <= n; i += 2)
            {
                a0 += Avx512BW.MultiplyAddAdjacent(Vector512.LoadAligned(w + (nint)pair[i] * outPad).AsInt16(),
                    Vector512.Create(value[i]).AsInt16());
                a1 += Avx512BW.MultiplyAddAdjacent(Vector512.LoadAligned(w + (nint)pair[i + 1] * outPad).AsInt16(),
                    Vector512.Create(value[i + 1]).AsInt16());
            }
            if (i < n)
                a0 += Avx512BW.MultiplyAddAdjacent(Vector512.LoadAligned(w + (nint)pair[i] * outPad).AsInt16(),
                    Vector512.Create(value[i]).AsInt16());
            StoreScaled(a0 + a1, scale + c, bias + c, output + c);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreScaled(Vector512<int> sum, float* scale, float* bias, float* output) =>
        Vector512.Store(Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum), Vector512.LoadAligned(scale),
            Vector512.LoadAligned(bias)), output);

    // Over the kept pairs: (e, a) of PairedFirstLayer's bound, sum_i (r_2k + r_2k+1) / 255 times residualMax[k] and
    // weightMax[k], and the sum of the pixel values (for the overflow check).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float BoundSums(float* residualMax, float* weightMax, int* pair, uint* value, int n, out float a,
        out int pixelSum)
    {
        float e0 = 0, e1 = 0, a0 = 0, a1 = 0;
        int sum = 0, i = 0;
        for (; i + 2 <= n; i += 2)
        {
            int s0 = (int)((value[i] & 0xFFFF) + (value[i] >> 16));
            int s1 = (int)((value[i + 1] & 0xFFFF) + (value[i + 1] >> 16));
            sum += s0 + s1;
            e0 += s0 * residualMax[pair[i]]; a0 += s0 * weightMax[pair[i]];
            e1 += s1 * residualMax[pair[i + 1]]; a1 += s1 * weightMax[pair[i + 1]];
        }
        if (i < n)
        {
            int s0 = (int)((value[i] & 0xFFFF) + (value[i] >> 16));
            sum += s0;
            e0 += s0 * residualMax[pair[i]]; a0 += s0 * weightMax[pair[i]];
        }
        pixelSum = sum;
        a = (a0 + a1) * (1f / 255f);
        return (e0 + e1) * (1f / 255f);
    }

    /// <summary>
    /// The first index of the largest of the 10 logits if it leads every other by more than threshold, else -1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CertifiedArgMax10(float* z, float threshold)
    {
        int best = VectorKernels<Width512, Vector512<float>>.ArgMax10(z);
        float top = z[best];
        for (int j = 0; j < MnistClassifier.ClassCount; j++)
            if (j != best && !(top - z[j] > threshold)) return -1;
        return best;
    }
}

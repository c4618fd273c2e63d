using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Inference;

/// <summary>
/// The integer first pass of the seed's shape (784 -> H &lt;= 10 -> 10 from bytes; see <see cref="Int16FirstLayer"/>):
/// layer 1 as a dense 16-bit dot product, vpmaddwd (16 pixel-weight products summed in pairs into 8 int32 lanes)
/// over 16-pixel chunks, then float32 layer 2 with the certificate.
///
/// Dense beats the sparse float kernel here because one vpmaddwd does 16 multiply-adds where a float FMA row does
/// one pixel's 10 (in 16 lanes), and only the chunks from the first to the last with ink are visited (34 of 49 on
/// average over the MNIST test set). In a probe with the images in cache, layer 1 took 71 ns, where the sparse float
/// kernel took ~127 ns for the whole image. Vector256 only: on the 2-core Zen 4 it ran as fast as the Vector512
/// form (both 71 ns; 512-bit ops are split in two there), so one kernel serves AVX2 and AVX-512 machines and the
/// x86-64-v3 NativeAOT library.
/// </summary>
internal static unsafe partial class ForwardKernels
{
    /// <summary>Whether <see cref="HiddenInt16"/> and <see cref="OutputCertified"/> run here.</summary>
    public static bool CanRunInt16 => Avx2.IsSupported && Fma.IsSupported;

    // h (16 floats, 64-byte aligned) = relu(b1 + c * sum_p r_p q[., p]) with the rows of Int16FirstLayer.
    // Each accumulator lane sums 2 products per chunk, 98 in all: |sum| <= 98 * 255 * 32767 < 2^30, and one fold of two
    // lanes stays below 2^31; the rest of the reduction runs in float (see Int16FirstLayer for the error bound).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void HiddenInt16(byte* pixels, short* weights, float* scale, float* b1, float* h)
    {
        const int S = Int16FirstLayer.Stride;
        Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default;
        Vector256<int> a5 = default, a6 = default, a7 = default, a8 = default, a9 = default;
        // the chunks with ink: MNIST's top and bottom rows are blank
        int first = 0, last = MnistClassifier.PixelCount - 16;
        while (first <= last && Vector128.Load(pixels + first) == Vector128<byte>.Zero) first += 16;
        while (last > first && Vector128.Load(pixels + last) == Vector128<byte>.Zero) last -= 16;
        for (int c = first; c <= last; c += 16)
        {
            Vector256<short> v = Avx2.ConvertToVector256Int16(Vector128.Load(pixels + c));
            short* w = weights + c;
            a0 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w));
            a1 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + S));
            a2 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 2 * S));
            a3 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 3 * S));
            a4 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 4 * S));
            a5 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 5 * S));
            a6 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 6 * S));
            a7 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 7 * S));
            a8 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 8 * S));
            a9 += Avx2.MultiplyAddAdjacent(v, Vector256.LoadAligned(w + 9 * S));
        }
        // Fold(a, b) = [a.lo + a.hi | b.lo + b.hi]; two rounds of vhaddps leave accumulators 0, 2, 4, 6, 1, 3, 5, 7 in
        // lanes 0..7 (so the rows are stored in Int16FirstLayer.UnitOfRow order) and 8, 9 in lanes 0 and 4 of r.
        Vector256<float> x = Avx.HorizontalAdd(Fold(a0, a1), Fold(a2, a3));
        Vector256<float> y = Avx.HorizontalAdd(Fold(a4, a5), Fold(a6, a7));
        Vector256<float> r =
            Avx.HorizontalAdd(Avx.HorizontalAdd(Fold(a8, a9), Vector256<float>.Zero), Vector256<float>.Zero);
        Vector256<float> low = Avx.HorizontalAdd(x, y);
        Vector256<float> high = Avx2.PermuteVar8x32(r, Vector256.Create(0, 4, 1, 1, 1, 1, 1, 1)); // lanes 2..7: 0
        low = Fma.MultiplyAdd(low, Vector256.LoadAligned(scale), Vector256.LoadAligned(b1));
        high = Fma.MultiplyAdd(high, Vector256.LoadAligned(scale + 8), Vector256.LoadAligned(b1 + 8));
        Vector256.StoreAligned(Vector256.Max(low, Vector256<float>.Zero), h);
        Vector256.StoreAligned(Vector256.Max(high, Vector256<float>.Zero), h + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Fold(Vector256<int> a, Vector256<int> b) =>
        Avx.ConvertToVector256Single(Avx2.Permute2x128(a, b, 0x20) + Avx2.Permute2x128(a, b, 0x31));

    // Layer 2 (as OutputSmall256) and the certificate: the class whose logit leads every other by more than
    // threshold, or -1 (a near tie, or NaN logits) for the caller to settle with the float kernels. The lead is
    // compared as fl(top - z_k) > threshold, which rounding cannot make true when the exact difference is not.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int OutputCertified(float* w2t, float* b2, int hidden, float* h, float threshold)
    {
        var (z, y) = Logits256(w2t, b2, hidden, h);
        Vector256<float> top = Vector256.Create(Max10(z, y));
        Vector256<float> t = Vector256.Create(threshold);
        uint near = (~Vector256.GreaterThan(top - z, t)).ExtractMostSignificantBits()
            | ((~Vector256.GreaterThan(top - y, t)).ExtractMostSignificantBits() & 3) << 8;
        return BitOperations.PopCount(near) == 1 ? BitOperations.TrailingZeroCount(near) : -1;
    }
}

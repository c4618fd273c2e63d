using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Inference;

/// <summary>Which inner kernel a classifier runs; chosen once at load from what the CPU supports.</summary>
public enum InferenceKernel
{
    /// <summary>Plain C# loops; runs anywhere.</summary>
    Scalar,
    /// <summary>Vector256 with FMA (AVX2 + FMA).</summary>
    Avx2,
    /// <summary>Vector512 with FMA (AVX-512F).</summary>
    Avx512,
}

/// <summary>
/// The forward pass of one image, layer by layer, in the "sparse column" form:
/// out = b + sum over the NONZERO inputs k of in[k] * W^T[k, :].
/// Weights are stored transposed, W^T (in, outPad) with outPad a multiple of 16 floats (one 64-byte line),
/// so one input contributes whole aligned vectors to all outputs at once.
///
/// Skipping zero inputs is exact: weights are validated finite at load, so a skipped term in[k] * w is
/// +-0 and adding it changes nothing (at most the sign of a zero sum, which ReLU, argmax and softmax do not
/// see). About 80% of MNIST pixels are zero and ReLU zeroes about half the hidden units, so the single-image
/// path does ~150 instead of 784 vector FMAs for the first layer. The summation order differs from the
/// seed's dense dot product, which shows only as float32 rounding.
///
/// The kernels and the classifier's loops that call them are marked AggressiveOptimization: under tiered
/// compilation they would otherwise run as unoptimised tier-0 code until call counting starts (100 ms after
/// the last tier-0 compile), so a short-lived process's batches ran at half speed (measured: the first six
/// 10,000-image batches 31.7, then 2.6-2.8 ms each, against 1.35 ms once tiered up).
/// </summary>
internal static unsafe partial class ForwardKernels
{
    public const int Lane = 16; // floats per 64-byte line: outPad granularity

    public static InferenceKernel Best { get; } =
        Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? InferenceKernel.Avx512
        : Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported ? InferenceKernel.Avx2
        : InferenceKernel.Scalar;

    public static bool IsSupported(InferenceKernel k) => k switch
    {
        InferenceKernel.Scalar => true,
        InferenceKernel.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        InferenceKernel.Avx512 => Avx512F.IsSupported,
        _ => false,
    };

    /// <summary>Compaction writes whole vectors past the last kept entry: idx and val need this many spare slots.</summary>
    public const int CompactSlack = 16;

    // pixels (784 bytes) -> idx, val (n): the nonzero pixels and their values scaled by 1/255, with the
    // instructions of the classifier's kernel (so that each kernel's tests cover its own compaction)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactPixels(InferenceKernel kernel, byte* pixels, int* idx, float* val)
    {
        if (kernel == InferenceKernel.Avx512) return CompactPixels512(pixels, idx, val);
        if (kernel == InferenceKernel.Avx2) return CompactPixels256(pixels, idx, val);
        const float Scale = 1f / 255f;
        int n = 0;
        for (int c = 0; c < MnistClassifier.PixelCount; c += 16)
        {
            uint mask = ~Vector128.Equals(Vector128.Load(pixels + c), Vector128<byte>.Zero).ExtractMostSignificantBits() & 0xFFFF;
            while (mask != 0)
            {
                int k = c + BitOperations.TrailingZeroCount(mask);
                idx[n] = k;
                val[n] = pixels[k] * Scale;
                n++;
                mask &= mask - 1;
            }
        }
        return n;
    }

    // AVX2 has no compress instruction: per 8 pixels, widen, compare, and left-pack the kept lanes with one
    // vpermd whose index vector comes from a table indexed by the 8-bit keep mask (LeftPack); store whole
    // vectors and advance by the mask's popcount. Branch-free: the scalar bit loop it replaces mispredicted
    // at the end of nearly every 16-pixel chunk (the C ABI, built for x86-64-v3, runs this path).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int CompactPixels256(byte* pixels, int* idx, float* val)
    {
        Vector256<int> lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        Vector256<float> scale = Vector256.Create(1f / 255f);
        byte* table = LeftPack;
        int n = 0;
        for (int c = 0; c < MnistClassifier.PixelCount; c += 8)
        {
            Vector256<int> p = Avx2.ConvertToVector256Int32(pixels + c);
            uint keep = ~Vector256.Equals(p, Vector256<int>.Zero).ExtractMostSignificantBits() & 0xFF;
            Vector256<int> order = Avx2.ConvertToVector256Int32(table + keep * 8);
            Vector256.Store(Avx2.PermuteVar8x32(lane + Vector256.Create(c), order), idx + n);
            Vector256.Store(Avx2.PermuteVar8x32(Avx.ConvertToVector256Single(p) * scale, order), val + n);
            n += BitOperations.PopCount(keep);
        }
        return n;
    }

    // LeftPack[m * 8 + i]: the lane of the i-th set bit of the 8-bit mask m (the rest 0), for CompactPixels256
    private static readonly byte* LeftPack = BuildLeftPack();

    private static byte* BuildLeftPack()
    {
        byte* t = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(256 * 8); // lives as long as the process
        for (int m = 0; m < 256; m++)
            for (int b = 0, i = 0; b < 8; b++)
                if ((m & (1 << b)) != 0) t[m * 8 + i++] = (byte)b;
        return t;
    }

    // Branch-free: per 16 pixels, widen, compare, compress the kept indices and values to the front of a
    // register (register-form vpcompressd: the memory form is microcoded on AMD) and store whole vectors.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int CompactPixels512(byte* pixels, int* idx, float* val)
    {
        Vector512<int> lane = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        Vector512<float> scale = Vector512.Create(1f / 255f);
        int n = 0;
        for (int c = 0; c < MnistClassifier.PixelCount; c += 16)
        {
            Vector512<int> v = Avx512F.ConvertToVector512Int32(Vector128.Load(pixels + c));
            Vector512<int> keep = ~Vector512.Equals(v, Vector512<int>.Zero);
            Vector512.Store(Avx512F.Compress(Vector512<int>.Zero, keep, lane + Vector512.Create(c)), idx + n);
            Vector512.Store(Avx512F.Compress(Vector512<float>.Zero, keep.AsSingle(), Avx512F.ConvertToVector512Single(v) * scale), val + n);
            n += BitOperations.PopCount(keep.ExtractMostSignificantBits());
        }
        return n;
    }

    /// <summary>Bytes of scratch <see cref="CompactPixelsBytes"/> and <see cref="CompactPixelsSmall"/> need for their two byte arrays.</summary>
    public const int ByteScratch = 2 * ByteStride;
    private const int ByteStride = MnistClassifier.PixelCount + 16; // + one Vector128 of slack for the widening reads

    /// <summary>Whether <see cref="CompactPixelsBytes"/> runs here (AVX-512 VBMI2: vpcompressb).</summary>
    public static bool CanCompactBytes => Avx512Vbmi2.IsSupported && Avx512BW.IsSupported;

    // pixels (784 bytes) -> idx (n), val (n): as CompactPixels, in two cheap passes.
    // Pass 1 (CompactBytes) packs the kept pixels as bytes; pass 2 widens 16 kept entries at a time.
    // Writes whole vectors up to 15 entries past n (idx, val: CompactSlack) and uses ByteScratch bytes of tmp.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactPixelsBytes(byte* pixels, byte* tmp, int* idx, float* val)
    {
        byte* lo = tmp, pv = tmp + ByteStride;
        var segments = new Segments(CompactBytes(pixels, lo, pv, out int n));
        Vector512<float> scale = Vector512.Create(1f / 255f);
        for (int i = 0; i < n; i += 16)
        {
            Vector512.Store(Avx512F.ConvertToVector512Int32(Vector128.Load(lo + i)) - (segments.Next() << 8), idx + i);
            Vector512.Store(Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(pv + i))) * scale, val + i);
        }
        return n;
    }

    // pixels (784 bytes) -> entries (n) for HiddenSmall, one 32-bit entry per kept pixel: the low half is the
    // pixel's W1t row times 8 (the row's byte offset is that times 8: one scaled address), the high half the
    // raw byte value as a bfloat16. That is exact: an integer up to 255 has at most 8 significant bits, so the
    // low 16 bits of its float32 are zero and (entry & 0xFFFF0000) is the value as a float; HiddenSmall applies
    // the 1/255 once, to the sum. Against 8-byte (offset, scaled float) entries, pass 2 writes half as much
    // with no interleaving, and the kernel reads two entries per load (A/B in docs/inference-benchmarks.md).
    // Writes whole vectors up to 15 entries past n; those are zero-valued entries of row 768 (see CompactBytes),
    // so HiddenSmall may run over them. Uses ByteScratch bytes of tmp.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactPixelsSmall(byte* pixels, byte* tmp, uint* entries)
    {
        byte* lo = tmp, pv = tmp + ByteStride;
        var segments = new Segments(CompactBytes(pixels, lo, pv, out int n));
        for (int i = 0; i < n; i += 16)
        {
            Vector512<int> row8 = (Avx512F.ConvertToVector512Int32(Vector128.Load(lo + i)) - (segments.Next() << 8)) << 3;
            Vector512<int> value = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(pv + i))).AsInt32();
            Vector512.Store((value | row8).AsUInt32(), entries + i);
        }
        return n;
    }

    // Pass 1, per 64 pixels (13 steps instead of 49): one byte compare and two register-form vpcompressb, of
    // the pixels and of the low byte of their index. The high byte of the index is the 256-pixel segment; as the
    // entries come in index order, pass 2 recovers it from the counts at the segment ends, returned in lanes
    // 0..2 (see Segments). Zeroes the 16 bytes of lo and pv after the last entry, so the whole vectors pass 2
    // reads past n are value 0, row 768. lo, pv: ByteStride bytes each.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> CompactBytes(byte* pixels, byte* lo, byte* pv, out int count)
    {
        Vector512<int> segmentEnds = Vector512<int>.Zero;
        int n = 0;
        for (int segment = 0; segment < 3; segment++)
        {
            for (int c = segment * 256; c < segment * 256 + 256; c += 64)
            {
                Vector512<byte> p = Vector512.Load(pixels + c);
                Vector512<byte> keep = ~Vector512.Equals(p, Vector512<byte>.Zero);
                Vector512.Store(Avx512Vbmi2.Compress(Vector512<byte>.Zero, keep, Vector512<byte>.Indices + Vector512.Create((byte)c)), lo + n);
                Vector512.Store(Avx512Vbmi2.Compress(Vector512<byte>.Zero, keep, p), pv + n);
                n += BitOperations.PopCount(keep.ExtractMostSignificantBits());
            }
            segmentEnds = segmentEnds.WithElement(segment, n);
        }
        {
            // pixels 768..783: low bytes 0..15 of segment 3
            Vector128<byte> p = Vector128.Load(pixels + 768);
            Vector128<byte> keep = ~Vector128.Equals(p, Vector128<byte>.Zero);
            Vector128.Store(Avx512Vbmi2.VL.Compress(Vector128<byte>.Zero, keep, Vector128<byte>.Indices), lo + n);
            Vector128.Store(Avx512Vbmi2.VL.Compress(Vector128<byte>.Zero, keep, p), pv + n);
            n += BitOperations.PopCount(keep.ExtractMostSignificantBits());
        }
        Vector128.Store(Vector128<byte>.Zero, lo + n);
        Vector128.Store(Vector128<byte>.Zero, pv + n);
        count = n;
        return segmentEnds;
    }

    // Pass 2's view of the segment ends: Next() gives, for the next 16 entries, minus their 256-pixel segment
    // (each compare is -1 where the entry lies at or past that segment's end).
    private struct Segments(Vector512<int> ends)
    {
        private readonly Vector512<int> _end0 = Vector512.Create(ends.GetElement(0)), _end1 = Vector512.Create(ends.GetElement(1)),
            _end2 = Vector512.Create(ends.GetElement(2));
        private Vector512<int> _position = Vector512<int>.Indices;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<int> Next()
        {
            Vector512<int> p = _position;
            _position = p + Vector512.Create(16);
            return Vector512.GreaterThanOrEqual(p, _end0) + Vector512.GreaterThanOrEqual(p, _end1) + Vector512.GreaterThanOrEqual(p, _end2);
        }
    }

    // The seed's shape (one hidden layer of at most 16 units, byte pixels), layer 1: h (16) = relu(b1 + (1/255) *
    // sum v * W1t[row]) over the entries of CompactPixelsSmall. The entry loop runs to the next multiple of 4
    // (the entries past n are zero-valued) with two entries per 8-byte load. h: 16 floats, 64-byte aligned.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void HiddenSmall(float* w1t, float* b1, uint* entries, int n, float* h)
    {
        byte* w = (byte*)w1t;
        Vector512<float> a0 = Vector512<float>.Zero, a1 = Vector512<float>.Zero, a2 = Vector512<float>.Zero, a3 = Vector512<float>.Zero;
        ulong* e = (ulong*)entries, end = (ulong*)(entries + ((n + 3) & ~3));
        for (; e < end; e += 2)
        {
            ulong pair0 = e[0], pair1 = e[1];
            a0 = Avx512F.FusedMultiplyAdd(Row(w, (uint)pair0), ValueOf((uint)pair0), a0);
            a1 = Avx512F.FusedMultiplyAdd(Row(w, (uint)(pair0 >> 32)), ValueOf((uint)(pair0 >> 32)), a1);
            a2 = Avx512F.FusedMultiplyAdd(Row(w, (uint)pair1), ValueOf((uint)pair1), a2);
            a3 = Avx512F.FusedMultiplyAdd(Row(w, (uint)(pair1 >> 32)), ValueOf((uint)(pair1 >> 32)), a3);
        }
        Vector512<float> hidden = Avx512F.FusedMultiplyAdd((a0 + a1) + (a2 + a3), Vector512.Create(1f / 255f), Vector512.LoadAligned(b1));
        Vector512.StoreAligned(Vector512.Max(hidden, Vector512<float>.Zero), h);
    }

    // Layer 2 of the seed's shape: logits = b2 + sum_j h[j] * W2t[j, :] over all hidden units (a zero unit adds
    // +-0), then the first index of the largest of the 10 logits (numpy's argmax) without a scalar compare chain.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int OutputSmall(float* w2t, float* b2, int hidden, float* h)
    {
        Vector512<float> z0 = Vector512.LoadAligned(b2), z1 = Vector512<float>.Zero;
        int j = 0;
        for (; j + 2 <= hidden; j += 2)
        {
            z0 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w2t + j * 16), Vector512.Create(h[j]), z0);
            z1 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w2t + (j + 1) * 16), Vector512.Create(h[j + 1]), z1);
        }
        if (j < hidden) z0 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w2t + j * 16), Vector512.Create(h[j]), z0);
        return ArgMax10(z0 + z1);
    }

    // the W1t row of an entry (its low half is the row's byte offset / 8)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Row(byte* w1t, uint entry) => Vector512.LoadAligned((float*)(w1t + (nuint)(ushort)entry * 8));

    // the raw pixel value of an entry in all 16 lanes (one vpbroadcastd from the register)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ValueOf(uint entry) => Vector512.Create(entry & 0xFFFF0000u).AsSingle();

    // First lane of the largest of lanes 0..9 (the padding lanes are ignored).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ArgMax10(Vector512<float> z)
    {
        Vector512<float> valid = Vector512.Create(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0).AsSingle();
        z = Vector512.ConditionalSelect(valid, z, Vector512.Create(float.NegativeInfinity));
        Vector256<float> m8 = Vector256.Max(z.GetLower(), z.GetUpper());
        Vector128<float> m4 = Vector128.Max(m8.GetLower(), m8.GetUpper());
        m4 = Vector128.Max(m4, Sse.Shuffle(m4, m4, 0b01_00_11_10));
        m4 = Vector128.Max(m4, Sse.Shuffle(m4, m4, 0b10_11_00_01));
        ulong hit = Vector512.Equals(z, Vector512.Create(m4.ToScalar())).ExtractMostSignificantBits();
        int first = BitOperations.TrailingZeroCount(hit);
        return first < 10 ? first : 0; // NaN logits (a model whose sums overflow) match nothing: 0, as ArgMax
    }

    // a (len floats) -> idx, val (n): the nonzero entries
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactFloats(InferenceKernel kernel, float* a, int len, int* idx, float* val)
    {
        int n = 0, c = 0;
        if (kernel == InferenceKernel.Avx512)
        {
            Vector512<int> lane = Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            for (; c + 16 <= len; c += 16)
            {
                Vector512<float> v = Vector512.Load(a + c);
                Vector512<float> keep = ~Vector512.Equals(v, Vector512<float>.Zero);
                Vector512.Store(Avx512F.Compress(Vector512<int>.Zero, keep.AsInt32(), lane + Vector512.Create(c)), idx + n);
                Vector512.Store(Avx512F.Compress(Vector512<float>.Zero, keep, v), val + n);
                n += BitOperations.PopCount(keep.ExtractMostSignificantBits());
            }
        }
        if (kernel == InferenceKernel.Avx2)
        {
            // left-pack 8 at a time through the LeftPack table, as CompactPixels256
            Vector256<int> lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
            byte* table = LeftPack;
            for (; c + 8 <= len; c += 8)
            {
                Vector256<float> v = Vector256.Load(a + c);
                uint keep = ~Vector256.Equals(v, Vector256<float>.Zero).ExtractMostSignificantBits() & 0xFF;
                Vector256<int> order = Avx2.ConvertToVector256Int32(table + keep * 8);
                Vector256.Store(Avx2.PermuteVar8x32(lane + Vector256.Create(c), order), idx + n);
                Vector256.Store(Avx2.PermuteVar8x32(v, order), val + n);
                n += BitOperations.PopCount(keep);
            }
        }
        for (; c < len; c++)
        {
            // branch-free tail: write always, advance only past a nonzero
            idx[n] = c;
            val[n] = a[c];
            n += a[c] != 0f ? 1 : 0;
        }
        return n;
    }

    // out (outPad) = bias + sum_i val[i] * wt[idx[i], :]      wt (in, outPad), bias (outPad)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Accumulate(InferenceKernel kernel, float* output, float* wt, float* bias, int outPad, int* idx, float* val, int n)
    {
        if (kernel == InferenceKernel.Avx512) Accumulate512(output, wt, bias, outPad, idx, val, n);
        else if (kernel == InferenceKernel.Avx2) Accumulate256(output, wt, bias, outPad, idx, val, n);
        else AccumulateScalar(output, wt, bias, outPad, idx, val, n);
    }

    // Mirrors AccumulateScalar. Four output vectors per pass give four independent FMA chains; a lone
    // vector (outPad 16, e.g. the seed's 10 hidden units) splits the inputs over four accumulators instead,
    // so the 4-cycle FMA latency never serialises the loop.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate512(float* output, float* wt, float* bias, int outPad, int* idx, float* val, int n)
    {
        int c = 0;
        for (; c + 64 <= outPad; c += 64)
        {
            Vector512<float> a0 = Vector512.LoadAligned(bias + c), a1 = Vector512.LoadAligned(bias + c + 16);
            Vector512<float> a2 = Vector512.LoadAligned(bias + c + 32), a3 = Vector512.LoadAligned(bias + c + 48);
            for (int i = 0; i < n; i++)
            {
                float* w = wt + (nint)idx[i] * outPad + c;
                Vector512<float> x = Vector512.Create(val[i]);
                a0 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w), x, a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + 16), x, a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + 32), x, a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + 48), x, a3);
            }
            Vector512.Store(a0, output + c); Vector512.Store(a1, output + c + 16);
            Vector512.Store(a2, output + c + 32); Vector512.Store(a3, output + c + 48);
        }
        for (; c < outPad; c += 16)
        {
            Vector512<float> a0 = Vector512.LoadAligned(bias + c), a1 = Vector512<float>.Zero;
            Vector512<float> a2 = Vector512<float>.Zero, a3 = Vector512<float>.Zero;
            float* w = wt + c;
            int i = 0;
            for (; i + 4 <= n; i += 4)
            {
                a0 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + (nint)idx[i] * outPad), Vector512.Create(val[i]), a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + (nint)idx[i + 1] * outPad), Vector512.Create(val[i + 1]), a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + (nint)idx[i + 2] * outPad), Vector512.Create(val[i + 2]), a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + (nint)idx[i + 3] * outPad), Vector512.Create(val[i + 3]), a3);
            }
            for (; i < n; i++)
                a0 = Avx512F.FusedMultiplyAdd(Vector512.LoadAligned(w + (nint)idx[i] * outPad), Vector512.Create(val[i]), a0);
            Vector512.Store((a0 + a1) + (a2 + a3), output + c);
        }
    }

    // Mirrors Accumulate512 with two 256-bit halves per 64-byte line.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate256(float* output, float* wt, float* bias, int outPad, int* idx, float* val, int n)
    {
        int c = 0;
        for (; c + 32 <= outPad; c += 32)
        {
            Vector256<float> a0 = Vector256.LoadAligned(bias + c), a1 = Vector256.LoadAligned(bias + c + 8);
            Vector256<float> a2 = Vector256.LoadAligned(bias + c + 16), a3 = Vector256.LoadAligned(bias + c + 24);
            for (int i = 0; i < n; i++)
            {
                float* w = wt + (nint)idx[i] * outPad + c;
                Vector256<float> x = Vector256.Create(val[i]);
                a0 = Fma.MultiplyAdd(Vector256.LoadAligned(w), x, a0);
                a1 = Fma.MultiplyAdd(Vector256.LoadAligned(w + 8), x, a1);
                a2 = Fma.MultiplyAdd(Vector256.LoadAligned(w + 16), x, a2);
                a3 = Fma.MultiplyAdd(Vector256.LoadAligned(w + 24), x, a3);
            }
            Vector256.Store(a0, output + c); Vector256.Store(a1, output + c + 8);
            Vector256.Store(a2, output + c + 16); Vector256.Store(a3, output + c + 24);
        }
        for (; c < outPad; c += 16)
        {
            // one 64-byte line = two halves; inputs alternate between two accumulator pairs
            Vector256<float> lo0 = Vector256.LoadAligned(bias + c), hi0 = Vector256.LoadAligned(bias + c + 8);
            Vector256<float> lo1 = Vector256<float>.Zero, hi1 = Vector256<float>.Zero;
            float* w = wt + c;
            int i = 0;
            for (; i + 2 <= n; i += 2)
            {
                float* w0 = w + (nint)idx[i] * outPad, w1 = w + (nint)idx[i + 1] * outPad;
                Vector256<float> x0 = Vector256.Create(val[i]), x1 = Vector256.Create(val[i + 1]);
                lo0 = Fma.MultiplyAdd(Vector256.LoadAligned(w0), x0, lo0);
                hi0 = Fma.MultiplyAdd(Vector256.LoadAligned(w0 + 8), x0, hi0);
                lo1 = Fma.MultiplyAdd(Vector256.LoadAligned(w1), x1, lo1);
                hi1 = Fma.MultiplyAdd(Vector256.LoadAligned(w1 + 8), x1, hi1);
            }
            if (i < n)
            {
                float* w0 = w + (nint)idx[i] * outPad;
                Vector256<float> x0 = Vector256.Create(val[i]);
                lo0 = Fma.MultiplyAdd(Vector256.LoadAligned(w0), x0, lo0);
                hi0 = Fma.MultiplyAdd(Vector256.LoadAligned(w0 + 8), x0, hi0);
            }
            Vector256.Store(lo0 + lo1, output + c);
            Vector256.Store(hi0 + hi1, output + c + 8);
        }
    }

    // The reference for the vector kernels: out[j] = b[j] + sum_i val[i] * wt[idx[i], j].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AccumulateScalar(float* output, float* wt, float* bias, int outPad, int* idx, float* val, int n)
    {
        for (int j = 0; j < outPad; j++) output[j] = bias[j];
        for (int i = 0; i < n; i++)
        {
            float* w = wt + (nint)idx[i] * outPad;
            float x = val[i];
            for (int j = 0; j < outPad; j++) output[j] += w[j] * x;
        }
    }

    // a (len) -> max(a, 0); the padding beyond len is already 0 (zero weights and bias)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Relu(float* a, int outPad)
    {
        for (int c = 0; c < outPad; c += 8)
            Vector256.Store(Vector256.Max(Vector256.Load(a + c), Vector256<float>.Zero), a + c);
    }

    /// <summary>First index of the largest value, as numpy's argmax.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ArgMax(float* z, int len)
    {
        int best = 0;
        float max = z[0];
        for (int j = 1; j < len; j++)
            if (z[j] > max) { max = z[j]; best = j; }
        return best;
    }

    /// <summary>Softmax shifted by the max, as the seed does.</summary>
    public static void Softmax(float* z, int len, Span<float> probs)
    {
        float max = z[ArgMax(z, len)];
        float sum = 0f;
        for (int j = 0; j < len; j++) { float e = MathF.Exp(z[j] - max); probs[j] = e; sum += e; }
        float inv = 1f / sum;
        for (int j = 0; j < len; j++) probs[j] *= inv;
    }
}

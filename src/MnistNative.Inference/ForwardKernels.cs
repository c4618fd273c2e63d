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
    /// <summary>Vector128 (SSE4.1): the general kernels' 128-bit tier, for x86 machines without AVX2.</summary>
    Sse41,
}

/// <summary>
/// The kernels of particular shapes and instruction sets: the seed's fused small-model kernels, the integer first
/// layers, the VBMI2 byte compaction, softmax. The general kernels, written once over a width, are the shared
/// <see cref="VectorKernels{TW, TVec}"/> (MnistNative.Kernels); the paths that call them in ForwardPaths.cs.
///
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

    /// <summary>
    /// Compaction writes whole vectors past the last kept entry: idx and val need this many spare slots.
    /// </summary>
    public const int CompactSlack = 16;

    public static InferenceKernel Best { get; } =
        Width512.IsSupported && Vector512.IsHardwareAccelerated ? InferenceKernel.Avx512
        : Width256.IsSupported ? InferenceKernel.Avx2
        : Width128.IsSupported ? InferenceKernel.Sse41
        : InferenceKernel.Scalar;

    public static bool IsSupported(InferenceKernel k) => k switch
    {
        InferenceKernel.Scalar => true,
        InferenceKernel.Sse41 => Width128.IsSupported,
        InferenceKernel.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        InferenceKernel.Avx512 => Avx512F.IsSupported,
        _ => false,
    };

    /// <summary>
    /// Bytes of scratch <see cref="CompactPixelsBytes"/> and <see cref="CompactPixelsSmall"/> need for their two
    /// byte arrays.
    /// </summary>
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
            Vector512.Store(
                Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(pv + i))) * scale,
                val + i);
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
            Vector512<int> row8 =
                (Avx512F.ConvertToVector512Int32(Vector128.Load(lo + i)) - (segments.Next() << 8)) << 3;
            Vector512<int> value =
                Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(pv + i))).AsInt32();
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
                Vector512.Store(Avx512Vbmi2.Compress(Vector512<byte>.Zero, keep,
                    Vector512<byte>.Indices + Vector512.Create((byte)c)), lo + n);
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
        private readonly Vector512<int> _end0 = Vector512.Create(ends.GetElement(0)),
            _end1 = Vector512.Create(ends.GetElement(1)), _end2 = Vector512.Create(ends.GetElement(2));
        private Vector512<int> _position = Vector512<int>.Indices;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<int> Next()
        {
            Vector512<int> p = _position;
            _position = p + Vector512.Create(16);
            return Vector512.GreaterThanOrEqual(p, _end0) + Vector512.GreaterThanOrEqual(p, _end1)
                + Vector512.GreaterThanOrEqual(p, _end2);
        }
    }

    // The seed's shape (one hidden layer of at most 16 units, byte pixels), layer 1: h (16) = relu(b1 + (1/255) *
    // sum v * W1t[row]) over the entries of CompactPixelsSmall. The entry loop runs to the next multiple of 4
    // (the entries past n are zero-valued) with two entries per 8-byte load. h: 16 floats, 64-byte aligned.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void HiddenSmall(float* w1t, float* b1, uint* entries, int n, float* h)
    {
        byte* w = (byte*)w1t;
        Vector512<float> a0 = Vector512<float>.Zero, a1 = Vector512<float>.Zero;
        Vector512<float> a2 = Vector512<float>.Zero, a3 = Vector512<float>.Zero;
        ulong* e = (ulong*)entries, end = (ulong*)(entries + ((n + 3) & ~3));
        for (; e < end; e += 2)
        {
            ulong pair0 = e[0], pair1 = e[1];
            a0 = Avx512F.FusedMultiplyAdd(Row(w, (uint)pair0), ValueOf((uint)pair0), a0);
            a1 = Avx512F.FusedMultiplyAdd(Row(w, (uint)(pair0 >> 32)), ValueOf((uint)(pair0 >> 32)), a1);
            a2 = Avx512F.FusedMultiplyAdd(Row(w, (uint)pair1), ValueOf((uint)pair1), a2);
            a3 = Avx512F.FusedMultiplyAdd(Row(w, (uint)(pair1 >> 32)), ValueOf((uint)(pair1 >> 32)), a3);
        }
        Vector512<float> hidden =
            Avx512F.FusedMultiplyAdd((a0 + a1) + (a2 + a3), Vector512.Create(1f / 255f), Vector512.LoadAligned(b1));
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
        Vector512.StoreAligned(z0 + z1, h); // h is spent: the logits go through the one 10-way argmax
        return VectorKernels<Width512, Vector512<float>>.ArgMax10(h);
    }

    // the W1t row of an entry (its low half is the row's byte offset / 8)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Row(byte* w1t, uint entry) =>
        Vector512.LoadAligned((float*)(w1t + (nuint)(ushort)entry * 8));

    // the raw pixel value of an entry in all 16 lanes (one vpbroadcastd from the register)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ValueOf(uint entry) => Vector512.Create(entry & 0xFFFF0000u).AsSingle();

    /// <summary>Softmax shifted by the max, as the seed does.</summary>
    public static void Softmax(float* z, int len, Span<float> probs)
    {
        float max = z[ScalarKernels.ArgMax(z, len)];
        float sum = 0f;
        for (int j = 0; j < len; j++) { float e = MathF.Exp(z[j] - max); probs[j] = e; sum += e; }
        float inv = 1f / sum;
        for (int j = 0; j < len; j++) probs[j] *= inv;
    }
}

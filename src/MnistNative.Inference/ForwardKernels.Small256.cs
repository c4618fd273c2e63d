using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Inference;

/// <summary>
/// The small-model float kernel (784 -> H &lt;= 16 -> 10 from bytes) with AVX2 + FMA only: what the x86-64-v3
/// NativeAOT library and AVX2-only machines run for 11-16 hidden units and for the near ties the integer first pass
/// leaves (ForwardKernels.Int16.cs). Same entries and arithmetic as the AVX-512 one (CompactPixelsSmall,
/// HiddenSmall, OutputSmall): 32-bit (W1t row * 8, raw value as bfloat16) entries, the 1/255 applied once to the sum.
/// </summary>
internal static unsafe partial class ForwardKernels
{
    /// <summary>
    /// Whether <see cref="CompactPixelsSmall256"/>, <see cref="HiddenSmall256"/> and <see cref="OutputSmall256"/>
    /// run here.
    /// </summary>
    public static bool CanRunSmall256 => Avx2.IsSupported && Fma.IsSupported && Popcnt.IsSupported;

    // pixels (784 bytes) -> entries (n), as CompactPixelsSmall but in one pass: AVX2 has no compress, so each
    // 8-pixel group builds its 8 entries in a register (value bits | row * 8) and left-packs the kept ones with
    // one vpermd whose lane order comes from Width256.LeftPack[keep mask]. A 64-pixel chunk with no ink (MNIST's
    // top and bottom rows) is skipped after one compare; that branch goes the same way for nearly every MNIST
    // image.
    // Writes whole vectors up to 8 entries past n; those are zero-valued entries of row 768.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int CompactPixelsSmall256(byte* pixels, uint* entries)
    {
        int n = 0;
        for (int c = 0; c < 768; c += 64)
        {
            ulong keep = ~(Vector256.Equals(Vector256.Load(pixels + c), Vector256<byte>.Zero)
                    .ExtractMostSignificantBits()
                | (ulong)Vector256.Equals(Vector256.Load(pixels + c + 32), Vector256<byte>.Zero)
                    .ExtractMostSignificantBits() << 32);
            if (keep != 0) n = PackGroups(pixels, c, 8, keep, entries, n);
        }
        n = PackGroups(pixels, 768, 2,
            ~Vector128.Equals(Vector128.Load(pixels + 768), Vector128<byte>.Zero).ExtractMostSignificantBits() & 0xFFFF,
            entries, n);
        Vector256.Store(Vector256.Create(768u << 3), entries + n);
        return n;
    }

    // groups 8-pixel groups from pixel c on, keep: one bit per pixel
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PackGroups(byte* pixels, int c, int groups, ulong keep, uint* entries, int n)
    {
        byte* table = Width256.LeftPack;
        Vector256<int> row8 = (Vector256<int>.Indices + Vector256.Create(c)) << 3;
        for (int g = 0; g < groups; g++)
        {
            uint keep8 = (uint)(keep >> (8 * g)) & 0xFF;
            Vector256<int> e = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(pixels + c + 8 * g)).AsInt32()
                | row8;
            Vector256.Store(Avx2.PermuteVar8x32(e, Avx2.ConvertToVector256Int32(table + keep8 * 8)).AsUInt32(),
                entries + n);
            n += BitOperations.PopCount(keep8);
            row8 += Vector256.Create(8 << 3);
        }
        return n;
    }

    // As HiddenSmall with two 8-float halves per row: 8 accumulators (4 entries x 2 halves) keep both FMA
    // pipes busy; the entry loop runs to the next multiple of 4 over the zero-valued padding entries. The value
    // is broadcast from memory and masked (vpbroadcastd + vpand: no move from a general register), the row
    // offset read as the entry's low 16 bits: 15% faster than unpacking each entry in registers (kernel probe).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void HiddenSmall256(float* w1t, float* b1, uint* entries, int n, float* h)
    {
        byte* w = (byte*)w1t;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        Vector256<uint> valueBits = Vector256.Create(0xFFFF0000u);
        for (uint* e = entries, end = entries + ((n + 3) & ~3); e < end; e += 4)
        {
            Vector256<float> v0 = (Vector256.Create(e[0]) & valueBits).AsSingle();
            Vector256<float> v1 = (Vector256.Create(e[1]) & valueBits).AsSingle();
            Vector256<float> v2 = (Vector256.Create(e[2]) & valueBits).AsSingle();
            Vector256<float> v3 = (Vector256.Create(e[3]) & valueBits).AsSingle();
            ushort* rows = (ushort*)e;
            float* r0 = (float*)(w + (nuint)rows[0] * 8), r1 = (float*)(w + (nuint)rows[2] * 8);
            float* r2 = (float*)(w + (nuint)rows[4] * 8), r3 = (float*)(w + (nuint)rows[6] * 8);
            a0 = Fma.MultiplyAdd(Vector256.LoadAligned(r0), v0, a0);
            c0 = Fma.MultiplyAdd(Vector256.LoadAligned(r0 + 8), v0, c0);
            a1 = Fma.MultiplyAdd(Vector256.LoadAligned(r1), v1, a1);
            c1 = Fma.MultiplyAdd(Vector256.LoadAligned(r1 + 8), v1, c1);
            a2 = Fma.MultiplyAdd(Vector256.LoadAligned(r2), v2, a2);
            c2 = Fma.MultiplyAdd(Vector256.LoadAligned(r2 + 8), v2, c2);
            a3 = Fma.MultiplyAdd(Vector256.LoadAligned(r3), v3, a3);
            c3 = Fma.MultiplyAdd(Vector256.LoadAligned(r3 + 8), v3, c3);
        }
        Vector256<float> scale = Vector256.Create(1f / 255f);
        Vector256.Store(Avx.Max(Fma.MultiplyAdd((a0 + a1) + (a2 + a3), scale, Vector256.LoadAligned(b1)),
            Vector256<float>.Zero), h);
        Vector256.Store(Avx.Max(Fma.MultiplyAdd((c0 + c1) + (c2 + c3), scale, Vector256.LoadAligned(b1 + 8)),
            Vector256<float>.Zero), h + 8);
    }

    // As OutputSmall
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int OutputSmall256(float* w2t, float* b2, int hidden, float* h)
    {
        var (z, y) = Logits256(w2t, b2, hidden, h);
        Vector256.Store(z, h); // h is spent: the logits go through the one 10-way argmax
        Vector256.Store(y, h + 8);
        return VectorKernels<Width256, Vector256<float>>.ArgMax10(h);
    }

    // Layer 2 of the seed's shape with Vector256: logits 0..7 (Low) and 8..15 (High, 10..15 padding), two
    // accumulators each. Also the float layer 2 of the integer first pass (OutputCertified).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<float> Low, Vector256<float> High) Logits256(float* w2t, float* b2, int hidden, float* h)
    {
        Vector256<float> z0 = Vector256.LoadAligned(b2), y0 = Vector256.LoadAligned(b2 + 8), z1 = default, y1 = default;
        int j = 0;
        for (; j + 2 <= hidden; j += 2)
        {
            Vector256<float> hj = Vector256.Create(h[j]), hk = Vector256.Create(h[j + 1]);
            z0 = Fma.MultiplyAdd(Vector256.LoadAligned(w2t + j * 16), hj, z0);
            y0 = Fma.MultiplyAdd(Vector256.LoadAligned(w2t + j * 16 + 8), hj, y0);
            z1 = Fma.MultiplyAdd(Vector256.LoadAligned(w2t + (j + 1) * 16), hk, z1);
            y1 = Fma.MultiplyAdd(Vector256.LoadAligned(w2t + (j + 1) * 16 + 8), hk, y1);
        }
        if (j < hidden)
        {
            Vector256<float> hj = Vector256.Create(h[j]);
            z0 = Fma.MultiplyAdd(Vector256.LoadAligned(w2t + j * 16), hj, z0);
            y0 = Fma.MultiplyAdd(Vector256.LoadAligned(w2t + j * 16 + 8), hj, y0);
        }
        return (z0 + z1, y0 + y1);
    }

    // The largest of logits 0..7 (z) and 8..9 (lanes 0..1 of y).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Max10(Vector256<float> z, Vector256<float> y)
    {
        y = Vector256.ConditionalSelect(Vector256.Create(-1, -1, 0, 0, 0, 0, 0, 0).AsSingle(), y,
            Vector256.Create(float.NegativeInfinity));
        Vector256<float> m8 = Avx.Max(z, y);
        Vector128<float> m4 = Sse.Max(m8.GetLower(), m8.GetUpper());
        m4 = Sse.Max(m4, Sse.Shuffle(m4, m4, 0b01_00_11_10));
        m4 = Sse.Max(m4, Sse.Shuffle(m4, m4, 0b10_11_00_01));
        return m4.ToScalar();
    }
}

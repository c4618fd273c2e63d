using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Kernels;

/// <summary>
/// One SIMD width: the vector operations the kernels use, as static abstract members of a struct, so that a kernel
/// written once over the width (<see cref="VectorKernels{TW, TVec}"/>, the SIMD backend's layer and tile paths,
/// the inference paths) is specialised by the JIT for <see cref="Width512"/>, <see cref="Width256"/> or
/// <see cref="Width128"/> into straight-line code of that width without virtual calls, the way TensorPrimitives
/// drives its operators. Only float32.
/// </summary>
public unsafe interface IVectorWidth<TVec> where TVec : unmanaged
{
    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }

    /// <summary>Whether the CPU and the runtime (DOTNET_EnableAVX512, DOTNET_EnableAVX2, ...) run this width's
    /// instructions.</summary>
    static abstract bool IsSupported { get; }

    /// <summary>The name of this width as the CLI prints it: "sse41", "avx2" or "avx512".</summary>
    static abstract string Name { get; }

    static abstract TVec Zero { get; }
    static abstract TVec Create(float value);
    static abstract TVec Load(float* p);
    static abstract void Store(float* p, TVec v);

    /// <summary>Count raw bytes widened to float (0..255, not scaled).</summary>
    static abstract TVec LoadBytes(byte* p);

    /// <summary>a * b + c with one rounding (vfmadd; at 128 bits two roundings where the CPU has no FMA).</summary>
    static abstract TVec MultiplyAdd(TVec a, TVec b, TVec c);
    static abstract TVec Add(TVec a, TVec b);
    static abstract TVec Subtract(TVec a, TVec b);
    static abstract TVec Multiply(TVec a, TVec b);
    static abstract TVec Divide(TVec a, TVec b);

    /// <summary>The raw maxps: b where either is NaN or both are zeros (no NaN fix-up; the inputs are finite or
    /// training has already diverged, and a loaded model is checked finite).</summary>
    static abstract TVec Max(TVec a, TVec b);
    static abstract TVec Sqrt(TVec a);

    /// <summary>
    /// e^a for a in [-87.3, 88.3] (clamped outside), Cephes expf: round(a·log2 e) split off with a two-part
    /// ln 2, a degree-6 polynomial on the remainder and the power of two built in the exponent bits. About
    /// 1 ulp, ~12 vector instructions (Vector512.Exp widens to double and is several times slower).
    /// </summary>
    static abstract TVec Exp(TVec a);

    /// <summary>
    /// ln a for positive normal floats (the softmax's sums, 1 or more), Cephes logf: the exponent split off, the
    /// mantissa brought into [sqrt(1/2), sqrt(2)) and a degree-8 polynomial on it, the two-part ln 2 added back.
    /// About 1 ulp, ~25 vector instructions, inlined (the runtime's Vector512.Log is a call, and around it the
    /// softmax spilled its live vectors).
    /// </summary>
    static abstract TVec Log(TVec a);

    /// <summary>Lane masks as all-ones / all-zeros floats.</summary>
    static abstract TVec GreaterThan(TVec a, TVec b);
    static abstract TVec Equal(TVec a, TVec b);

    /// <summary>Lanes of ifTrue where mask (all ones / all zeros per lane) is set, else of ifFalse.</summary>
    static abstract TVec Select(TVec mask, TVec ifTrue, TVec ifFalse);

    /// <summary>Horizontal sum in a fixed order (deterministic).</summary>
    static abstract float Sum(TVec v);

    /// <summary>The horizontal sums of four vectors at once, (sum a, sum b, sum c, sum d), in a fixed order: one
    /// transposing tree of pairwise adds instead of four separate reductions.</summary>
    static abstract Vector128<float> Sum4(TVec a, TVec b, TVec c, TVec d);

    /// <summary>The largest lane.</summary>
    static abstract float MaxAcross(TVec v);

    /// <summary>Bit i set where lane i equals x.</summary>
    static abstract uint EqualsMask(TVec v, float x);

    /// <summary>
    /// Writes the non-zero lanes of v to val and their indices (first + lane) to idx, in lane order, as whole
    /// vectors (up to Count - 1 slots past the kept ones are overwritten); returns how many were kept.
    /// </summary>
    static abstract int CompactNonzero(TVec v, int first, int* idx, float* val);
}

/// <summary>AVX-512F: 16 floats (FMA is part of AVX-512F); the compaction is vcompressps / vpcompressd in registers
/// (the memory form is microcoded on AMD).</summary>
public readonly unsafe struct Width512 : IVectorWidth<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;
    public static bool IsSupported => Avx512F.IsSupported;
    public static string Name => "avx512";
    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Create(float value) => Vector512.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* p) => Avx512F.LoadVector512(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector512<float> v) => Avx512F.Store(p, v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> LoadBytes(byte* p) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(p)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) =>
        Avx512F.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => Avx512F.Add(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Subtract(Vector512<float> a, Vector512<float> b) => Avx512F.Subtract(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => Avx512F.Multiply(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Divide(Vector512<float> a, Vector512<float> b) => Avx512F.Divide(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Avx512F.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Sqrt(Vector512<float> a) => Avx512F.Sqrt(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> a)
    {
        a = Avx512F.Min(Avx512F.Max(a, Vector512.Create(ExpConstants.Low)), Vector512.Create(ExpConstants.High));
        Vector512<float> n = Avx512F.RoundScale(Avx512F.Multiply(a, Vector512.Create(ExpConstants.Log2E)), 0);
        Vector512<float> r = Avx512F.FusedMultiplyAddNegated(n, Vector512.Create(ExpConstants.Ln2Hi), a);
        r = Avx512F.FusedMultiplyAddNegated(n, Vector512.Create(ExpConstants.Ln2Lo), r);
        Vector512<float> p =
            Avx512F.FusedMultiplyAdd(Vector512.Create(ExpConstants.P0), r, Vector512.Create(ExpConstants.P1));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P2));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P3));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P4));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(ExpConstants.P5));
        p = Avx512F.FusedMultiplyAdd(p, Avx512F.Multiply(r, r), Avx512F.Add(r, Vector512.Create(1f)));
        Vector512<int> e =
            Avx512F.ShiftLeftLogical(Avx512F.Add(Avx512F.ConvertToVector512Int32(n), Vector512.Create(127)), 23);
        return Avx512F.Multiply(p, e.AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Log(Vector512<float> a)
    {
        Vector512<int> bits = a.AsInt32();
        Vector512<float> e =
            Vector512.ConvertToSingle(Vector512.ShiftRightArithmetic(bits, 23) - Vector512.Create(126));
        // the mantissa with the exponent of [1/2, 1)
        Vector512<float> m = (bits & Vector512.Create(0x007FFFFF) | Vector512.Create(0x3F000000)).AsSingle();
        Vector512<float> small = Vector512.LessThan(m, Vector512.Create(LogConstants.SqrtHalf));
        e -= small & Vector512.Create(1f);
        Vector512<float> x = m + (small & m) - Vector512.Create(1f);
        Vector512<float> z = x * x;
        Vector512<float> y =
            Vector512.FusedMultiplyAdd(Vector512.Create(LogConstants.P0), x, Vector512.Create(LogConstants.P1));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogConstants.P2));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogConstants.P3));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogConstants.P4));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogConstants.P5));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogConstants.P6));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogConstants.P7));
        y = Vector512.FusedMultiplyAdd(y, x, Vector512.Create(LogConstants.P8));
        y = y * x * z;
        y = Vector512.FusedMultiplyAdd(e, Vector512.Create(ExpConstants.Ln2Lo), y);
        y = Vector512.FusedMultiplyAdd(z, Vector512.Create(-0.5f), y);
        return Vector512.FusedMultiplyAdd(e, Vector512.Create(ExpConstants.Ln2Hi), x + y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> GreaterThan(Vector512<float> a, Vector512<float> b) => Vector512.GreaterThan(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Equal(Vector512<float> a, Vector512<float> b) => Vector512.Equals(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Select(Vector512<float> mask, Vector512<float> ifTrue, Vector512<float> ifFalse) =>
        Vector512.ConditionalSelect(mask, ifTrue, ifFalse);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Width256.Sum(Avx.Add(v.GetLower(), v.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(
        Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) =>
        Width256.Sum4(Avx.Add(a.GetLower(), a.GetUpper()), Avx.Add(b.GetLower(), b.GetUpper()),
            Avx.Add(c.GetLower(), c.GetUpper()), Avx.Add(d.GetLower(), d.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector512<float> v) => Width256.MaxAcross(Avx.Max(v.GetLower(), v.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint EqualsMask(Vector512<float> v, float x) =>
        (uint)Vector512.Equals(v, Vector512.Create(x)).ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactNonzero(Vector512<float> v, int first, int* idx, float* val)
    {
        Vector512<float> keep = ~Vector512.Equals(v, Vector512<float>.Zero);
        Vector512.Store(Avx512F.Compress(Vector512<int>.Zero, keep.AsInt32(),
            Vector512<int>.Indices + Vector512.Create(first)), idx);
        Vector512.Store(Avx512F.Compress(Vector512<float>.Zero, keep, v), val);
        return BitOperations.PopCount(keep.ExtractMostSignificantBits());
    }
}

/// <summary>
/// AVX2 + FMA3: 8 floats. AVX2 has no compress: the kept lanes are left-packed with one vpermd whose lane order
/// comes from <see cref="LeftPack"/>[keep mask] (branch-free; a scalar bit loop mispredicted at nearly every end).
/// </summary>
public readonly unsafe struct Width256 : IVectorWidth<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;
    public static string Name => "avx2";
    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Create(float value) => Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* p) => Avx.LoadVector256(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector256<float> v) => Avx.Store(p, v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> LoadBytes(byte* p) => Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        Fma.MultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => Avx.Add(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Subtract(Vector256<float> a, Vector256<float> b) => Avx.Subtract(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => Avx.Multiply(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Divide(Vector256<float> a, Vector256<float> b) => Avx.Divide(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Avx.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Sqrt(Vector256<float> a) => Avx.Sqrt(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> a)
    {
        a = Avx.Min(Avx.Max(a, Vector256.Create(ExpConstants.Low)), Vector256.Create(ExpConstants.High));
        Vector256<float> n = Avx.RoundToNearestInteger(Avx.Multiply(a, Vector256.Create(ExpConstants.Log2E)));
        Vector256<float> r = Fma.MultiplyAddNegated(n, Vector256.Create(ExpConstants.Ln2Hi), a);
        r = Fma.MultiplyAddNegated(n, Vector256.Create(ExpConstants.Ln2Lo), r);
        Vector256<float> p = Fma.MultiplyAdd(Vector256.Create(ExpConstants.P0), r, Vector256.Create(ExpConstants.P1));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(ExpConstants.P2));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(ExpConstants.P3));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(ExpConstants.P4));
        p = Fma.MultiplyAdd(p, r, Vector256.Create(ExpConstants.P5));
        p = Fma.MultiplyAdd(p, Avx.Multiply(r, r), Avx.Add(r, Vector256.Create(1f)));
        Vector256<int> e = Avx2.ShiftLeftLogical(Avx2.Add(Avx.ConvertToVector256Int32(n), Vector256.Create(127)), 23);
        return Avx.Multiply(p, e.AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Log(Vector256<float> a)
    {
        Vector256<int> bits = a.AsInt32();
        Vector256<float> e =
            Vector256.ConvertToSingle(Vector256.ShiftRightArithmetic(bits, 23) - Vector256.Create(126));
        // the mantissa with the exponent of [1/2, 1)
        Vector256<float> m = (bits & Vector256.Create(0x007FFFFF) | Vector256.Create(0x3F000000)).AsSingle();
        Vector256<float> small = Vector256.LessThan(m, Vector256.Create(LogConstants.SqrtHalf));
        e -= small & Vector256.Create(1f);
        Vector256<float> x = m + (small & m) - Vector256.Create(1f);
        Vector256<float> z = x * x;
        Vector256<float> y =
            Vector256.FusedMultiplyAdd(Vector256.Create(LogConstants.P0), x, Vector256.Create(LogConstants.P1));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogConstants.P2));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogConstants.P3));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogConstants.P4));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogConstants.P5));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogConstants.P6));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogConstants.P7));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(LogConstants.P8));
        y = y * x * z;
        y = Vector256.FusedMultiplyAdd(e, Vector256.Create(ExpConstants.Ln2Lo), y);
        y = Vector256.FusedMultiplyAdd(z, Vector256.Create(-0.5f), y);
        return Vector256.FusedMultiplyAdd(e, Vector256.Create(ExpConstants.Ln2Hi), x + y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> GreaterThan(Vector256<float> a, Vector256<float> b) => Avx.CompareGreaterThan(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Equal(Vector256<float> a, Vector256<float> b) => Avx.CompareEqual(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Select(Vector256<float> mask, Vector256<float> ifTrue, Vector256<float> ifFalse) =>
        Avx.BlendVariable(ifFalse, ifTrue, mask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> v) => Width128.Sum(Sse.Add(v.GetLower(), v.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        Vector256<float> ab = Avx.HorizontalAdd(a, b);     // a01 a23 b01 b23 | a45 a67 b45 b67
        Vector256<float> cd = Avx.HorizontalAdd(c, d);
        Vector256<float> abcd = Avx.HorizontalAdd(ab, cd); // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
        return Sse.Add(abcd.GetLower(), abcd.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector256<float> v) => Width128.MaxAcross(Sse.Max(v.GetLower(), v.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint EqualsMask(Vector256<float> v, float x) =>
        Vector256.Equals(v, Vector256.Create(x)).ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactNonzero(Vector256<float> v, int first, int* idx, float* val)
    {
        uint keep = ~Vector256.Equals(v, Vector256<float>.Zero).ExtractMostSignificantBits() & 0xFF;
        Vector256<int> order = Avx2.ConvertToVector256Int32(LeftPack + keep * 8);
        Vector256.Store(Avx2.PermuteVar8x32(Vector256<int>.Indices + Vector256.Create(first), order), idx);
        Vector256.Store(Avx2.PermuteVar8x32(v, order), val);
        return BitOperations.PopCount(keep);
    }

    /// <summary>LeftPack[m * 8 + i]: the lane of the i-th set bit of the 8-bit mask m (the rest 0).</summary>
    public static readonly byte* LeftPack = BuildLeftPack();

    private static byte* BuildLeftPack()
    {
        // lives as long as the process
        byte* t = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(256 * 8);
        for (int m = 0; m < 256; m++)
            for (int b = 0, i = 0; b < 8; b++)
                if ((m & (1 << b)) != 0) t[m * 8 + i++] = (byte)b;
        return t;
    }
}

/// <summary>
/// SSE4.1 (x86) as the 128-bit tier: 4 floats, FMA where the CPU has it. The compaction left-packs with one pshufb
/// whose byte order comes from a 16-entry table indexed by the 4-bit keep mask.
/// </summary>
public readonly unsafe struct Width128 : IVectorWidth<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;
    public static bool IsSupported => Sse41.IsSupported;
    public static string Name => "sse41";
    public static Vector128<float> Zero => Vector128<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Create(float value) => Vector128.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Load(float* p) => Sse.LoadVector128(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(float* p, Vector128<float> v) => Sse.Store(p, v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> LoadBytes(byte* p) =>
        Sse2.ConvertToVector128Single(Sse41.ConvertToVector128Int32(p));

    // SSE alone rounds twice (the kernel tests allow for it where the CPU has no FMA)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : Sse.Add(Sse.Multiply(a, b), c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => Sse.Add(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Subtract(Vector128<float> a, Vector128<float> b) => Sse.Subtract(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => Sse.Multiply(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Divide(Vector128<float> a, Vector128<float> b) => Sse.Divide(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Sse.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sqrt(Vector128<float> a) => Sse.Sqrt(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp(Vector128<float> a)
    {
        a = Sse.Min(Sse.Max(a, Vector128.Create(ExpConstants.Low)), Vector128.Create(ExpConstants.High));
        Vector128<float> n = Sse41.RoundToNearestInteger(Sse.Multiply(a, Vector128.Create(ExpConstants.Log2E)));
        Vector128<float> r = Sse.Subtract(a, Sse.Multiply(n, Vector128.Create(ExpConstants.Ln2Hi)));
        r = Sse.Subtract(r, Sse.Multiply(n, Vector128.Create(ExpConstants.Ln2Lo)));
        Vector128<float> p = MultiplyAdd(Vector128.Create(ExpConstants.P0), r, Vector128.Create(ExpConstants.P1));
        p = MultiplyAdd(p, r, Vector128.Create(ExpConstants.P2));
        p = MultiplyAdd(p, r, Vector128.Create(ExpConstants.P3));
        p = MultiplyAdd(p, r, Vector128.Create(ExpConstants.P4));
        p = MultiplyAdd(p, r, Vector128.Create(ExpConstants.P5));
        p = MultiplyAdd(p, Sse.Multiply(r, r), Sse.Add(r, Vector128.Create(1f)));
        Vector128<int> e = Sse2.ShiftLeftLogical(Sse2.Add(Sse2.ConvertToVector128Int32(n), Vector128.Create(127)), 23);
        return Sse.Multiply(p, e.AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Log(Vector128<float> a)
    {
        Vector128<int> bits = a.AsInt32();
        Vector128<float> e =
            Vector128.ConvertToSingle(Vector128.ShiftRightArithmetic(bits, 23) - Vector128.Create(126));
        // the mantissa with the exponent of [1/2, 1)
        Vector128<float> m = (bits & Vector128.Create(0x007FFFFF) | Vector128.Create(0x3F000000)).AsSingle();
        Vector128<float> small = Vector128.LessThan(m, Vector128.Create(LogConstants.SqrtHalf));
        e -= small & Vector128.Create(1f);
        Vector128<float> x = m + (small & m) - Vector128.Create(1f);
        Vector128<float> z = x * x;
        Vector128<float> y =
            Vector128.FusedMultiplyAdd(Vector128.Create(LogConstants.P0), x, Vector128.Create(LogConstants.P1));
        y = Vector128.FusedMultiplyAdd(y, x, Vector128.Create(LogConstants.P2));
        y = Vector128.FusedMultiplyAdd(y, x, Vector128.Create(LogConstants.P3));
        y = Vector128.FusedMultiplyAdd(y, x, Vector128.Create(LogConstants.P4));
        y = Vector128.FusedMultiplyAdd(y, x, Vector128.Create(LogConstants.P5));
        y = Vector128.FusedMultiplyAdd(y, x, Vector128.Create(LogConstants.P6));
        y = Vector128.FusedMultiplyAdd(y, x, Vector128.Create(LogConstants.P7));
        y = Vector128.FusedMultiplyAdd(y, x, Vector128.Create(LogConstants.P8));
        y = y * x * z;
        y = Vector128.FusedMultiplyAdd(e, Vector128.Create(ExpConstants.Ln2Lo), y);
        y = Vector128.FusedMultiplyAdd(z, Vector128.Create(-0.5f), y);
        return Vector128.FusedMultiplyAdd(e, Vector128.Create(ExpConstants.Ln2Hi), x + y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> GreaterThan(Vector128<float> a, Vector128<float> b) => Sse.CompareGreaterThan(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Equal(Vector128<float> a, Vector128<float> b) => Sse.CompareEqual(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Select(Vector128<float> mask, Vector128<float> ifTrue, Vector128<float> ifFalse) =>
        Sse41.BlendVariable(ifFalse, ifTrue, mask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector128<float> v)
    {
        v = Sse.Add(v, Sse.MoveHighToLow(v, v));
        v = Sse.AddScalar(v, Sse.Shuffle(v, v, 0b01));
        return v.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d)
    {
        Vector128<float> ab = Sse3.HorizontalAdd(a, b); // a01 a23 b01 b23
        Vector128<float> cd = Sse3.HorizontalAdd(c, d);
        return Sse3.HorizontalAdd(ab, cd);              // a0-3 b0-3 c0-3 d0-3
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector128<float> v)
    {
        v = Sse.Max(v, Sse.Shuffle(v, v, 0b01_00_11_10));
        v = Sse.Max(v, Sse.Shuffle(v, v, 0b10_11_00_01));
        return v.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint EqualsMask(Vector128<float> v, float x) =>
        Vector128.Equals(v, Vector128.Create(x)).ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactNonzero(Vector128<float> v, int first, int* idx, float* val)
    {
        uint keep = ~Vector128.Equals(v, Vector128<float>.Zero).ExtractMostSignificantBits() & 0xF;
        Vector128<byte> order = Vector128.Load(LeftPackBytes + keep * 16);
        Vector128.Store(Ssse3.Shuffle((Vector128<int>.Indices + Vector128.Create(first)).AsByte(), order).AsInt32(),
            idx);
        Vector128.Store(Ssse3.Shuffle(v.AsByte(), order).AsSingle(), val);
        return BitOperations.PopCount(keep);
    }

    // LeftPackBytes[m * 16 + 4 * i + b]: byte b of the lane of the i-th set bit of the 4-bit mask m (the rest 0)
    private static readonly byte* LeftPackBytes = BuildLeftPackBytes();

    private static byte* BuildLeftPackBytes()
    {
        // lives as long as the process
        byte* t = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(16 * 16);
        for (int m = 0; m < 16; m++)
            for (int lane = 0, i = 0; lane < 4; lane++)
                if ((m & (1 << lane)) != 0)
                {
                    for (int b = 0; b < 4; b++) t[m * 16 + 4 * i + b] = (byte)(4 * lane + b);
                    i++;
                }
        return t;
    }
}

/// <summary>
/// Constants of the Cephes expf the widths share (polynomial for e^r - 1 - r over r^2, |r| &lt;= ln2/2).
/// </summary>
/// <summary>Constants of the Cephes logf the widths share (polynomial for log(1 + x) - x + x^2/2 over x^3).</summary>
public static class LogConstants
{
    public const float SqrtHalf = 0.707106781186547524f;
    public const float P0 = 7.0376836292e-2f, P1 = -1.1514610310e-1f, P2 = 1.1676998740e-1f;
    public const float P3 = -1.2420140846e-1f, P4 = 1.4249322787e-1f, P5 = -1.6668057665e-1f;
    public const float P6 = 2.0000714765e-1f, P7 = -2.4999993993e-1f, P8 = 3.3333331174e-1f;
}

public static class ExpConstants
{
    public const float Low = -87.3f, High = 88.3f; // 2^n stays a normal float: n in [-126, 127]
    public const float Log2E = 1.44269504088896341f;
    public const float Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    public const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f;
    public const float P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;
}

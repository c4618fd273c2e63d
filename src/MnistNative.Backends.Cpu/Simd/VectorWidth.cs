using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The vector operations the SIMD kernels use, as static abstract members so that one generic kernel
/// (<see cref="SimdEngine{TWidth, TVec}"/>) is specialised by the JIT for each width without virtual calls,
/// the way TensorPrimitives drives its operators. Only float32.
/// </summary>
internal interface IVectorWidth<TVec> where TVec : unmanaged
{
    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }

    /// <summary>Whether the CPU and the runtime (DOTNET_EnableAVX2 / DOTNET_EnableAVX512) allow this width.</summary>
    static abstract bool IsSupported { get; }

    static abstract TVec Zero { get; }
    static abstract TVec Create(float value);
    static abstract unsafe TVec Load(float* p);
    static abstract unsafe void Store(float* p, TVec v);

    /// <summary>Count raw bytes widened to float (0..255, not scaled).</summary>
    static abstract unsafe TVec LoadBytes(byte* p);

    /// <summary>a * b + c with one rounding (vfmadd).</summary>
    static abstract TVec MultiplyAdd(TVec a, TVec b, TVec c);
    static abstract TVec Add(TVec a, TVec b);
    static abstract TVec Subtract(TVec a, TVec b);
    static abstract TVec Multiply(TVec a, TVec b);
    static abstract TVec Divide(TVec a, TVec b);

    /// <summary>The raw vmaxps (no NaN fix-up; the inputs are finite or training has already diverged).</summary>
    static abstract TVec Max(TVec a, TVec b);
    static abstract TVec Sqrt(TVec a);

    /// <summary>The backend name of this width: "avx2" or "avx512".</summary>
    static abstract string Name { get; }
    /// <summary>
    /// e^a for a in [-87.3, 88.3] (clamped outside), Cephes expf: round(a·log2 e) split off with a two-part
    /// ln 2, a degree-6 polynomial on the remainder and the power of two built in the exponent bits. About
    /// 1 ulp, ~12 vector instructions (Vector512.Exp widens to double and was ~100 ns per call here).
    /// </summary>
    static abstract TVec Exp(TVec a);
    static abstract TVec Log(TVec a);

    /// <summary>Lane masks as all-ones / all-zeros floats.</summary>
    static abstract TVec GreaterThan(TVec a, TVec b);
    static abstract TVec Equal(TVec a, TVec b);
    static abstract TVec Select(TVec mask, TVec ifTrue, TVec ifFalse);

    /// <summary>Horizontal sum in a fixed order (deterministic).</summary>
    static abstract float Sum(TVec v);

    /// <summary>The horizontal sums of four vectors at once, (sum a, sum b, sum c, sum d), in a fixed order: one
    /// transposing tree of pairwise adds instead of four separate reductions.</summary>
    static abstract Vector128<float> Sum4(TVec a, TVec b, TVec c, TVec d);
}

/// <summary>Vector256 with AVX2 + FMA3.</summary>
internal readonly struct Avx2Width : IVectorWidth<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static string Name => "avx2";

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Sqrt(Vector256<float> a) => Avx.Sqrt(a);
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;
    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Create(float value) => Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<float> Load(float* p) => Avx.LoadVector256(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Store(float* p, Vector256<float> v) => Avx.Store(p, v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<float> LoadBytes(byte* p) =>
        Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));

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
    public static Vector256<float> Log(Vector256<float> a) => Vector256.Log(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> GreaterThan(Vector256<float> a, Vector256<float> b) => Avx.CompareGreaterThan(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Equal(Vector256<float> a, Vector256<float> b) => Avx.CompareEqual(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Select(Vector256<float> mask, Vector256<float> ifTrue, Vector256<float> ifFalse) =>
        Avx.BlendVariable(ifFalse, ifTrue, mask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector256<float> v)
    {
        Vector128<float> s = Sse.Add(v.GetLower(), v.GetUpper());
        s = Sse.Add(s, Sse.MoveHighToLow(s, s));
        s = Sse.AddScalar(s, Sse.Shuffle(s, s, 0b01));
        return s.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        Vector256<float> ab = Avx.HorizontalAdd(a, b);     // a01 a23 b01 b23 | a45 a67 b45 b67
        Vector256<float> cd = Avx.HorizontalAdd(c, d);
        Vector256<float> abcd = Avx.HorizontalAdd(ab, cd); // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
        return Sse.Add(abcd.GetLower(), abcd.GetUpper());
    }
}

/// <summary>Vector512 with AVX-512F (FMA is part of AVX-512F).</summary>
internal readonly struct Avx512Width : IVectorWidth<Vector512<float>>
{
    public static string Name => "avx512";

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Sqrt(Vector512<float> a) => Avx512F.Sqrt(a);

    public static int Count => Vector512<float>.Count;
    public static bool IsSupported => Avx512F.IsSupported;
    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Create(float value) => Vector512.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector512<float> Load(float* p) => Avx512F.LoadVector512(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Store(float* p, Vector512<float> v) => Avx512F.Store(p, v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector512<float> LoadBytes(byte* p) =>
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
    public static Vector512<float> Log(Vector512<float> a) => Vector512.Log(a);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> GreaterThan(Vector512<float> a, Vector512<float> b) => Vector512.GreaterThan(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Equal(Vector512<float> a, Vector512<float> b) => Vector512.Equals(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Select(Vector512<float> mask, Vector512<float> ifTrue, Vector512<float> ifFalse) =>
        Vector512.ConditionalSelect(mask, ifTrue, ifFalse);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v) => Avx2Width.Sum(Avx.Add(v.GetLower(), v.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(
        Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) =>
        Avx2Width.Sum4(Avx.Add(a.GetLower(), a.GetUpper()), Avx.Add(b.GetLower(), b.GetUpper()),
            Avx.Add(c.GetLower(), c.GetUpper()), Avx.Add(d.GetLower(), d.GetUpper()));
}

/// <summary>
/// Constants of the Cephes expf the widths share (polynomial for e^r - 1 - r over r^2, |r| &lt;= ln2/2).
/// </summary>
internal static class ExpConstants
{
    public const float Low = -87.3f, High = 88.3f; // 2^n stays a normal float: n in [-126, 127]
    public const float Log2E = 1.44269504088896341f;
    public const float Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    public const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f;
    public const float P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;
}

using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Inference;

/// <summary>
/// One SIMD width for the kernels written once over it (<see cref="SparseKernels"/>): the few vector operations they
/// need, as static abstract members of a struct, so that a kernel instantiated with <see cref="Width512"/>,
/// <see cref="Width256"/> or <see cref="Width128"/> compiles to straight-line code of that width (no virtual calls,
/// as TensorPrimitives' operator structs).
/// </summary>
internal unsafe interface IVectorWidth<TVector> where TVector : struct
{
    /// <summary>Whether this CPU runs the width's instructions.</summary>
    static abstract bool IsSupported { get; }

    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }

    static abstract TVector Zero { get; }
    static abstract TVector Load(float* p);
    static abstract void Store(TVector v, float* p);
    static abstract TVector Broadcast(float x);
    static abstract TVector Add(TVector a, TVector b);
    static abstract TVector Multiply(TVector a, TVector b);

    /// <summary>a * b + c with one rounding.</summary>
    static abstract TVector MultiplyAdd(TVector a, TVector b, TVector c);

    static abstract TVector Max(TVector a, TVector b);

    /// <summary>Lanes of a where mask is all ones, else of b.</summary>
    static abstract TVector Select(TVector mask, TVector a, TVector b);

    /// <summary>The largest lane.</summary>
    static abstract float MaxAcross(TVector v);

    /// <summary>Bit i set where lane i equals x.</summary>
    static abstract uint EqualsMask(TVector v, float x);

    /// <summary>Count bytes from p, widened to floats 0..255.</summary>
    static abstract TVector WidenBytes(byte* p);

    /// <summary>
    /// Writes the nonzero lanes of v to val and their indices (first + lane) to idx, in lane order, as whole vectors
    /// (up to Count - 1 slots past the kept ones are overwritten); returns how many were kept.
    /// </summary>
    static abstract int CompactNonZero(TVector v, int first, int* idx, float* val);
}

/// <summary>AVX-512F: 16 floats; the compaction is vpcompressd in registers (the memory form is microcoded on AMD).
/// </summary>
internal readonly unsafe struct Width512 : IVectorWidth<Vector512<float>>
{
    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;
    public static int Count => 16;
    public static Vector512<float> Zero => Vector512<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load(float* p) => Vector512.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector512<float> v, float* p) => Vector512.Store(v, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Broadcast(float x) => Vector512.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Multiply(Vector512<float> a, Vector512<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> MultiplyAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) =>
        Avx512F.FusedMultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Select(Vector512<float> mask, Vector512<float> a, Vector512<float> b) =>
        Vector512.ConditionalSelect(mask, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector512<float> v) => Width256.MaxAcross(Vector256.Max(v.GetLower(), v.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint EqualsMask(Vector512<float> v, float x) =>
        (uint)Vector512.Equals(v, Vector512.Create(x)).ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> WidenBytes(byte* p) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(p)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactNonZero(Vector512<float> v, int first, int* idx, float* val)
    {
        Vector512<float> keep = ~Vector512.Equals(v, Vector512<float>.Zero);
        Vector512.Store(Avx512F.Compress(Vector512<int>.Zero, keep.AsInt32(),
            Vector512<int>.Indices + Vector512.Create(first)), idx);
        Vector512.Store(Avx512F.Compress(Vector512<float>.Zero, keep, v), val);
        return BitOperations.PopCount(keep.ExtractMostSignificantBits());
    }
}

/// <summary>
/// AVX2 + FMA: 8 floats. AVX2 has no compress: the kept lanes are left-packed with one vpermd whose lane order
/// comes from <see cref="LeftPack"/>[keep mask] (branch-free; a scalar bit loop mispredicted at nearly every end).
/// </summary>
internal readonly unsafe struct Width256 : IVectorWidth<Vector256<float>>
{
    public static bool IsSupported => Vector256.IsHardwareAccelerated && Avx2.IsSupported && Fma.IsSupported;
    public static int Count => 8;
    public static Vector256<float> Zero => Vector256<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load(float* p) => Vector256.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<float> v, float* p) => Vector256.Store(v, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Broadcast(float x) => Vector256.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Multiply(Vector256<float> a, Vector256<float> b) => a * b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) =>
        Fma.MultiplyAdd(a, b, c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Select(Vector256<float> mask, Vector256<float> a, Vector256<float> b) =>
        Vector256.ConditionalSelect(mask, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector256<float> v) => Width128.MaxAcross(Vector128.Max(v.GetLower(), v.GetUpper()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint EqualsMask(Vector256<float> v, float x) =>
        Vector256.Equals(v, Vector256.Create(x)).ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> WidenBytes(byte* p) => Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactNonZero(Vector256<float> v, int first, int* idx, float* val)
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
/// SSE4.1 (x86) as the 128-bit tier: 4 floats; the compaction left-packs with one pshufb whose byte order comes
/// from a 16-entry table indexed by the 4-bit keep mask.
/// </summary>
internal readonly unsafe struct Width128 : IVectorWidth<Vector128<float>>
{
    public static bool IsSupported => Vector128.IsHardwareAccelerated && Sse41.IsSupported;
    public static int Count => 4;
    public static Vector128<float> Zero => Vector128<float>.Zero;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Load(float* p) => Vector128.Load(p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector128<float> v, float* p) => Vector128.Store(v, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Broadcast(float x) => Vector128.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Multiply(Vector128<float> a, Vector128<float> b) => a * b;

    // FMA where the CPU has it; SSE alone rounds twice (the kernels' tests allow for both)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> c) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Select(Vector128<float> mask, Vector128<float> a, Vector128<float> b) =>
        Vector128.ConditionalSelect(mask, a, b);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float MaxAcross(Vector128<float> v)
    {
        v = Vector128.Max(v, Sse.Shuffle(v, v, 0b01_00_11_10));
        v = Vector128.Max(v, Sse.Shuffle(v, v, 0b10_11_00_01));
        return v.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint EqualsMask(Vector128<float> v, float x) =>
        Vector128.Equals(v, Vector128.Create(x)).ExtractMostSignificantBits();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> WidenBytes(byte* p) =>
        Sse2.ConvertToVector128Single(Sse41.ConvertToVector128Int32(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompactNonZero(Vector128<float> v, int first, int* idx, float* val)
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

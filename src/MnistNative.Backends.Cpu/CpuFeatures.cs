using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MnistNative.Backends.Cpu.Simd;

namespace MnistNative.Backends.Cpu;

/// <summary>
/// What this CPU and runtime offer the SIMD backends. The flags are the JIT's view, so they honour
/// DOTNET_EnableAVX2=0 and DOTNET_EnableAVX512=0 as well as the hardware.
/// </summary>
public static class CpuFeatures
{
    public static bool Avx2 => System.Runtime.Intrinsics.X86.Avx2.IsSupported;
    public static bool Fma => System.Runtime.Intrinsics.X86.Fma.IsSupported;
    public static bool Avx512F => System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
    public static bool Vector256Accelerated => Vector256.IsHardwareAccelerated;
    public static bool Vector512Accelerated => Vector512.IsHardwareAccelerated;

    /// <summary>Whether the SIMD backend can run at 256 bits (avx2) here.</summary>
    public static bool CanRunAvx2 => Avx2UnavailableReason() == null;

    /// <summary>Whether the SIMD backend can run at 512 bits (avx512) here.</summary>
    public static bool CanRunAvx512 => Avx512UnavailableReason() == null;

    /// <summary>The SIMD backends that can run here, widest first.</summary>
    public static IReadOnlyList<string> RunnableSimdBackends()
    {
        var names = new List<string>(2);
        if (CanRunAvx512) names.Add(Width512.Name);
        if (CanRunAvx2) names.Add(Width256.Name);
        return names;
    }

    /// <summary>The widest SIMD backend that can run here ("avx512", "avx2", or null for none) and why.</summary>
    public static (string? Name, string Reason) BestSimdBackend()
    {
        if (CanRunAvx512) return (Width512.Name, "AVX-512F available");
        if (CanRunAvx2) return (Width256.Name, "AVX-512F not available; AVX2 + FMA available");
        return (null, "neither AVX-512F nor AVX2 + FMA available "
            + $"(Avx512F.IsSupported={Avx512F}, Avx2.IsSupported={Avx2}, Fma.IsSupported={Fma})");
    }

    /// <summary>Human-readable lines for `mnistnative devices`.</summary>
    public static IReadOnlyList<string> Describe() =>
    [
        $"CPU: {Environment.ProcessorCount} logical cores, "
            + $"{System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}, .NET {Environment.Version}",
        $"  AVX2: {YesNo(Avx2)}, FMA: {YesNo(Fma)}, AVX-512F: {YesNo(Avx512F)}",
        $"  Vector256 hardware accelerated: {YesNo(Vector256Accelerated)}, "
            + $"Vector512 hardware accelerated: {YesNo(Vector512Accelerated)}",
        $"  backend avx512: {Avx512UnavailableReason() ?? "can run"}",
        $"  backend avx2: {Avx2UnavailableReason() ?? "can run"}",
        "  best SIMD backend: " + BestSimdBackend() switch
        {
            (null, var why) => "none (" + why + ")",
            var (name, why) => name + " (" + why + ")",
        },
    ];

    /// <summary>Null when the avx2 backend can run, else the message its constructor throws.</summary>
    public static string? Avx2UnavailableReason()
    {
        if (Width256.IsSupported) return null;
        string missing = !Avx2 && !Fma ? "AVX2 and FMA" : !Avx2 ? "AVX2" : "FMA";
        return $"backend avx2 needs AVX2 and FMA, but this CPU or runtime lacks {missing} "
            + $"(Avx2.IsSupported={Avx2}, Fma.IsSupported={Fma}; DOTNET_EnableAVX2=0 also turns AVX2 off)";
    }

    /// <summary>Null when the avx512 backend can run, else the message its constructor throws.</summary>
    public static string? Avx512UnavailableReason() => Width512.IsSupported
        ? null
        : "backend avx512 needs AVX-512F, but this CPU or runtime lacks AVX-512F "
            + "(Avx512F.IsSupported=False; DOTNET_EnableAVX512=0 also turns it off)";

    private static string YesNo(bool b) => b ? "yes" : "no";
}

using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;

namespace MnistNative.Cli;

/// <summary>What the user asked for with --backend, --precision, --hidden, --threads and --device.</summary>
public sealed record BackendRequest(string Backend, Precision Precision, int Hidden, int? Threads = null, string? Device = null);

/// <summary>
/// The one place that turns a request into a backend. `auto` explains what it picked and why; a forced
/// backend the machine cannot run is a <see cref="BackendUnavailableException"/>, never a silent fallback.
/// </summary>
public static class BackendSelector
{
    public static IReadOnlyList<string> Names { get; } = ["auto", "scalar", "avx2", "avx512"];

    public static ITrainingBackend Create(BackendRequest request, Action<string> explain)
    {
        switch (request.Backend)
        {
            case "auto":
                return CreateAuto(request, explain);
            case "scalar":
                return CreateScalar(request);
            case "avx2":
                RequireF32(request);
                return new Avx2Backend(request.Hidden, request.Threads ?? 0);
            case "avx512":
                RequireF32(request);
                return new Avx512Backend(request.Hidden, request.Threads ?? 0);
            default:
                throw new BackendUnavailableException($"unknown backend '{request.Backend}' (choose from {string.Join(", ", Names)})");
        }
    }

    /// <summary>Null when the backend can run here, else why not.</summary>
    public static string? Availability(string name) => name switch
    {
        "scalar" => null,
        "avx2" => CpuFeatures.Avx2UnavailableReason(),
        "avx512" => CpuFeatures.Avx512UnavailableReason(),
        _ => $"unknown backend '{name}'",
    };

    private static ITrainingBackend CreateAuto(BackendRequest request, Action<string> explain)
    {
        var (simd, why) = CpuFeatures.BestSimdBackend();
        if (request.Precision == Precision.F64)
        {
            explain("backend auto: picked scalar (f64 is only on the scalar backend)");
            return CreateScalar(request);
        }
        if (simd == null)
        {
            explain($"backend auto: picked scalar ({why})");
            return CreateScalar(request);
        }
        explain($"backend auto: picked {simd} ({why})");
        return Create(request with { Backend = simd }, explain);
    }

    private static void RequireF32(BackendRequest request)
    {
        if (request.Precision != Precision.F32)
            throw new BackendUnavailableException($"backend {request.Backend} is float32 only; f64 is only on the scalar backend (use --backend scalar --precision f64, or --precision f32)");
    }

    private static ITrainingBackend CreateScalar(BackendRequest request) => request.Precision == Precision.F64
        ? new ReferenceBackend<double>(request.Hidden)
        : new ReferenceBackend<float>(request.Hidden);
}

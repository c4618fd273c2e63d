using MnistNative.Backends.Cpu.Reference;
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
    public static IReadOnlyList<string> Names { get; } = ["auto", "scalar"];

    public static ITrainingBackend Create(BackendRequest request, Action<string> explain)
    {
        switch (request.Backend)
        {
            case "auto":
                explain("backend auto: picked scalar (the only backend in this build)");
                return CreateScalar(request);
            case "scalar":
                return CreateScalar(request);
            default:
                throw new BackendUnavailableException($"unknown backend '{request.Backend}' (choose from {string.Join(", ", Names)})");
        }
    }

    private static ITrainingBackend CreateScalar(BackendRequest request) => request.Precision == Precision.F64
        ? new ReferenceBackend<double>(request.Hidden)
        : new ReferenceBackend<float>(request.Hidden);
}

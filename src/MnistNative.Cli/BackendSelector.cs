using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;

namespace MnistNative.Cli;

/// <summary>What the user asked for with --backend, --precision, --hidden, --threads, --device, --kernels and --opencl-variant.</summary>
public sealed record BackendRequest(string Backend, Precision Precision, int Hidden, int? Threads = null, string? Device = null,
    string? KernelsDir = null, string? OpenClVariant = null);

/// <summary>
/// The one place that turns a request into a backend. `auto` explains what it picked and why; a forced
/// backend the machine cannot run is a <see cref="BackendUnavailableException"/>, never a silent fallback.
/// </summary>
public static class BackendSelector
{
    public static IReadOnlyList<string> Names { get; } = ["auto", "scalar", "opencl"];

    public static ITrainingBackend Create(BackendRequest request, Action<string> explain)
    {
        switch (request.Backend)
        {
            case "auto":
                // An OpenCL GPU beats every CPU path; an OpenCL CPU device (PoCL) does not, so it is left to the CPU backends.
                if (!OpenClRuntime.TryProbe(out string reason, out var devices))
                    explain($"backend auto: no OpenCL GPU ({reason}); using the CPU");
                else if (devices.FirstOrDefault(d => d.Type == OpenClDeviceType.Gpu) is { } gpu)
                {
                    explain($"backend auto: picked opencl on GPU {gpu.Id} {gpu.Name}");
                    return CreateOpenCl(request with { Device = request.Device ?? gpu.Id });
                }
                else
                    explain("backend auto: OpenCL has no GPU device (only " + string.Join(", ", devices.Select(d => $"{d.Name} ({d.Type})")) + "); using the CPU");
                explain("backend auto: picked scalar (the only CPU backend in this build)");
                return CreateScalar(request);
            case "scalar":
                return CreateScalar(request);
            case "opencl":
                return CreateOpenCl(request);
            default:
                throw new BackendUnavailableException($"unknown backend '{request.Backend}' (choose from {string.Join(", ", Names)})");
        }
    }

    private static ITrainingBackend CreateScalar(BackendRequest request) => request.Precision == Precision.F64
        ? new ReferenceBackend<double>(request.Hidden)
        : new ReferenceBackend<float>(request.Hidden);

    private static ITrainingBackend CreateOpenCl(BackendRequest request) => new OpenClBackend(request.Hidden, new OpenClBackendOptions
    {
        Device = request.Device,
        Variant = request.OpenClVariant,
        KernelsDirectory = request.KernelsDir,
        Precision = request.Precision,
    });
}

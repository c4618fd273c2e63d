using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;

namespace MnistNative.Cli;

/// <summary>
/// What the user asked for with --backend, --precision, --hidden, --threads, --device, --kernels,
/// --opencl-variant, --profile and --kernel (the layer-1 kernels: dense, sparse or auto).
/// </summary>
public sealed record BackendRequest(string Backend, Precision Precision, int Hidden, int? Threads = null, string? Device = null,
    string? KernelsDir = null, string? OpenClVariant = null, bool Profiling = false,
        KernelMode Kernel = KernelMode.Auto);

/// <summary>
/// The one place that turns a request into a backend. `auto` explains what it picked and why; a forced
/// backend the machine cannot run is a <see cref="BackendUnavailableException"/>, never a silent fallback.
/// </summary>
public static class BackendSelector
{
    public static IReadOnlyList<string> Names { get; } = ["auto", "scalar", "avx2", "avx512", "opencl"];

    /// <summary>The values of --kernel.</summary>
    public static IReadOnlyList<string> KernelNames { get; } = ["auto", "dense", "sparse"];

    /// <summary>The backends that have sparse layer-1 kernels (the others run dense under --kernel auto).</summary>
    public static IReadOnlyList<string> SparseBackends { get; } = ["avx2", "avx512"];

    public static KernelMode ParseKernel(string value) => value switch
    {
        "auto" => KernelMode.Auto,
        "dense" => KernelMode.Dense,
        "sparse" => KernelMode.Sparse,
        _ => throw new ArgumentException(
            $"--kernel: unknown kernel '{value}' (choose from {string.Join(", ", KernelNames)})"),
    };

    /// <summary>One line on which layer-1 kernel a backend runs and why (after Upload); null for a backend without a
    /// choice.</summary>
    public static string? DescribeKernel(IFullBatchBackend backend) =>
        backend is IKernelChoosingBackend { KernelChoice: { } c } ? $"kernel {c.Name}: {c.Reason}" : null;

    public static IFullBatchBackend Create(BackendRequest request, Action<string> explain)
    {
        if (request.Kernel == KernelMode.Sparse && request.Backend != "auto"
            && !SparseBackends.Contains(request.Backend))
            throw new BackendUnavailableException(
                $"backend {request.Backend} has no sparse kernels; " +
                $"--kernel sparse goes with {string.Join(" or ", SparseBackends)}");
        switch (request.Backend)
        {
            case "auto":
                return CreateAuto(request, explain);
            case "scalar":
                return CreateScalar(request);
            case "avx2":
                RequireF32(request);
                return (IFullBatchBackend)SimdBackend.Create("avx2", [MlpParameters.InputSize, request.Hidden, MlpParameters.Classes],
                    OptimizerSettings.Gd, int.MaxValue, request.Threads ?? 0, request.Kernel);
            case "avx512":
                RequireF32(request);
                return (IFullBatchBackend)SimdBackend.Create("avx512", [MlpParameters.InputSize, request.Hidden, MlpParameters.Classes],
                    OptimizerSettings.Gd, int.MaxValue, request.Threads ?? 0, request.Kernel);
            case "opencl":
                return CreateOpenCl(request);
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
        "opencl" => OpenClRuntime.TryProbe(out string reason) ? null : reason,
        _ => $"unknown backend '{name}'",
    };

    /// <summary>
    /// An OpenCL GPU first (it beats every CPU path); then the widest SIMD path of this CPU (an OpenCL CPU
    /// device such as PoCL runs the same cores no faster); then the scalar reference. f64 is scalar only.
    /// </summary>
    private static IFullBatchBackend CreateAuto(BackendRequest request, Action<string> explain)
    {
        if (request.Precision == Precision.F64)
        {
            explain("backend auto: picked scalar (f64 is only on the scalar backend)");
            return CreateScalar(request);
        }
        if (request.Kernel == KernelMode.Sparse)
            explain("backend auto: not opencl (--kernel sparse: the sparse kernels are on " + string.Join(" and ",
                SparseBackends) + ")");
        else if (OpenClRuntime.FindGpu(out string noGpu) is { } gpu)
        {
            explain($"backend auto: picked opencl on GPU {gpu.Id} {gpu.Name}");
            return CreateOpenCl(request with { Device = request.Device ?? gpu.Id });
        }
        else
            explain($"backend auto: no OpenCL GPU ({noGpu})");

        var (simd, why) = CpuFeatures.BestSimdBackend();
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
            throw new BackendUnavailableException($"backend {request.Backend} is float32 only; f64 is only on the scalar and opencl backends (use --backend scalar --precision f64, or --precision f32)");
    }

    private static IFullBatchBackend CreateScalar(BackendRequest request)
    {
        if (request.Kernel == KernelMode.Sparse)
            throw new BackendUnavailableException(
                "backend scalar has no sparse kernels; " +
                $"--kernel sparse goes with {string.Join(" or ", SparseBackends)}");
        int[] sizes = [MlpParameters.InputSize, request.Hidden, MlpParameters.Classes];
        return request.Precision == Precision.F64 ? new ReferenceBackend<double>(sizes, OptimizerSettings.Gd)
            : new ReferenceBackend<float>(sizes, OptimizerSettings.Gd);
    }

    private static IFullBatchBackend CreateOpenCl(BackendRequest request) => new OpenClBackend(request.Hidden, new OpenClBackendOptions
    {
        Device = request.Device,
        Variant = request.OpenClVariant,
        KernelsDirectory = request.KernelsDir,
        Precision = request.Precision,
        Profiling = request.Profiling,
    });
}

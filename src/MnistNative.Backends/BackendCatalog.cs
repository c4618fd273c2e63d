using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;

namespace MnistNative.Backends;

/// <summary>
/// What a caller asks for: a backend by name (or auto), the model's sizes and optimizer, the most samples one step
/// takes (the training-set count for full-batch runs), and the backend's own settings.
/// </summary>
public sealed record BackendRequest(string Backend, Precision Precision, IReadOnlyList<int> Sizes,
    OptimizerSettings Optimizer,
    int MaxBatch)
{
    /// <summary>Worker threads of the multi-threaded backends; null: all cores.</summary>
    public int? Threads { get; init; }

    /// <summary>OpenCL device: P:D or part of its name; null: the first GPU, else the first device.</summary>
    public string? Device { get; init; }

    /// <summary>Load the OpenCL kernels from this directory instead of the embedded copies.</summary>
    public string? KernelsDirectory { get; init; }

    /// <summary>OpenCL kernel variant, gpu or cpu; null: from the device type.</summary>
    public string? OpenClVariant { get; init; }

    /// <summary>Collect device-side timings (OpenCL event profiling) for the profiler.</summary>
    public bool Profiling { get; init; }

    /// <summary>Layer-1 kernels of the fused 784-H-10 path.</summary>
    public KernelMode Kernel { get; init; } = KernelMode.Auto;

    /// <summary>
    /// The seed's model and optimizer: 784-H-10, full-batch gradient descent over <paramref name="trainCount"/>.
    /// </summary>
    public static BackendRequest FullBatch(string backend, Precision precision, int hidden, int trainCount) =>
        new(backend, precision, [MlpParameters.InputSize, hidden, MlpParameters.Classes], OptimizerSettings.Gd,
            trainCount);
}

/// <summary>
/// The one place that knows which training backends exist, which of them can run here, which one auto picks and
/// why, and why a forced one cannot run (a <see cref="BackendUnavailableException"/>, never a silent fallback).
/// train, bench, bench-minibatch and devices all ask it.
/// </summary>
public static class BackendCatalog
{
    /// <summary>The values of --backend, auto first.</summary>
    public static IReadOnlyList<string> Names { get; } = ["auto", "scalar", "avx2", "avx512", "opencl"];

    /// <summary>The backends proper (every name but auto).</summary>
    public static IReadOnlyList<string> Backends { get; } = ["scalar", "avx2", "avx512", "opencl"];

    /// <summary>The values of --kernel.</summary>
    public static IReadOnlyList<string> KernelNames { get; } = ["auto", "dense", "sparse"];

    /// <summary>The backends that have sparse layer-1 kernels (the others run dense under --kernel auto); opencl's
    /// only in its CPU variant.</summary>
    public static IReadOnlyList<string> SparseBackends { get; } = ["avx2", "avx512", "opencl"];

    /// <summary>How auto chooses, in the order it tries.</summary>
    public const string AutoRule =
        "auto: an OpenCL GPU first (it beats every CPU path); else the widest SIMD path of this CPU (avx512, then " +
        "avx2; an OpenCL CPU device such as PoCL runs the same cores no faster); else the scalar reference. " +
        "--precision f64 picks scalar; --kernel sparse skips opencl.";

    public static KernelMode ParseKernel(string value) => value switch
    {
        "auto" => KernelMode.Auto,
        "dense" => KernelMode.Dense,
        "sparse" => KernelMode.Sparse,
        _ => throw new ArgumentException(
            $"--kernel: unknown kernel '{value}' (choose from {string.Join(", ", KernelNames)})"),
    };

    /// <summary>One line on which layer-1 kernel the backend runs and why (after Upload).</summary>
    public static string DescribeKernel(ITrainingBackend backend) =>
        backend.KernelChoice is { } c ? $"kernel {c.Name}: {c.Reason}" : "kernel dense: the only one this backend has";

    /// <summary>Null when the backend can run here, else why not.</summary>
    public static string? Availability(string name) => name switch
    {
        "scalar" => null,
        "avx2" => CpuFeatures.Avx2UnavailableReason(),
        "avx512" => CpuFeatures.Avx512UnavailableReason(),
        "opencl" => OpenClRuntime.TryProbe(out string reason) ? null : reason,
        _ => $"unknown backend '{name}' (choose from {string.Join(", ", Names)})",
    };

    /// <summary>"avx2, avx512 or opencl" (with <paramref name="conjunction"/>).</summary>
    public static string SparseBackendList(string conjunction) =>
        $"{string.Join(", ", SparseBackends.Take(SparseBackends.Count - 1))} {conjunction} {SparseBackends[^1]}";

    /// <summary>The layer-1 kernels a backend has.</summary>
    public static string KernelsOf(string name) => name switch
    {
        "opencl" => "dense, sparse (CPU variant)",
        _ when SparseBackends.Contains(name) => "dense, sparse",
        _ => "dense",
    };

    /// <summary>Creates the backend; <paramref name="explain"/> hears, for auto, what it picked and why.</summary>
    public static ITrainingBackend Create(BackendRequest request, Action<string> explain)
    {
        ValidateSizes(request.Sizes);
        ArgumentOutOfRangeException.ThrowIfLessThan(request.MaxBatch, 1);
        if (request.Kernel == KernelMode.Sparse && request.Backend != "auto" &&
            !SparseBackends.Contains(request.Backend))
            throw new BackendUnavailableException($"backend {request.Backend} has no sparse kernels; " +
                $"--kernel sparse goes with {SparseBackendList("or")}");
        return request.Backend switch
        {
            "auto" => CreateAuto(request, explain),
            "scalar" => CreateScalar(request),
            "avx2" or "avx512" => CreateSimd(request),
            "opencl" => CreateOpenCl(request),
            _ => throw new BackendUnavailableException(
                $"unknown backend '{request.Backend}' (choose from {string.Join(", ", Names)})"),
        };
    }

    private static void ValidateSizes(IReadOnlyList<int> sizes)
    {
        if (sizes.Count < 3 || sizes[0] != MlpParameters.InputSize || sizes[^1] != MlpParameters.Classes)
            throw new ArgumentException($"the model must run from {MlpParameters.InputSize} inputs through at " +
                $"least one hidden layer to {MlpParameters.Classes} classes, got {string.Join('-', sizes)}");
        if (sizes.Count > 10) throw new ArgumentException($"--hidden: at most 8 hidden layers, got {sizes.Count - 2}");
        foreach (int s in sizes)
            if (s is < 1 or > 4096)
                throw new ArgumentException($"--hidden: widths must be between 1 and 4096, got {s}");
    }

    private static ITrainingBackend CreateAuto(BackendRequest request, Action<string> explain)
    {
        if (request.Precision == Precision.F64)
        {
            explain("backend auto: picked scalar (f64 is only on the scalar backend)");
            return CreateScalar(request);
        }
        if (request.Kernel == KernelMode.Sparse)
            explain("backend auto: not opencl (--kernel sparse: OpenCL's GPU variant has no sparse kernels)");
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
            return CreateScalar(request with { Kernel = KernelMode.Auto });
        }
        explain($"backend auto: picked {simd} ({why})");
        return CreateSimd(request with { Backend = simd });
    }

    private static ITrainingBackend CreateScalar(BackendRequest request)
    {
        if (request.Kernel == KernelMode.Sparse)
            throw new BackendUnavailableException("backend scalar has no sparse kernels; " +
                $"--kernel sparse goes with {SparseBackendList("or")}");
        return request.Precision == Precision.F64
            ? new ReferenceBackend<double>(request.Sizes, request.Optimizer)
            : new ReferenceBackend<float>(request.Sizes, request.Optimizer);
    }

    private static ITrainingBackend CreateSimd(BackendRequest request)
    {
        if (request.Precision != Precision.F32)
            throw new BackendUnavailableException($"backend {request.Backend} is float32 only; f64 is only on the " +
                "scalar and opencl backends (use --backend scalar --precision f64, or --precision f32)");
        return SimdBackend.Create(request.Backend, request.Sizes, request.Optimizer, request.MaxBatch,
            request.Threads ?? 0, request.Kernel);
    }

    private static ITrainingBackend CreateOpenCl(BackendRequest request) =>
        new OpenClBackend(request.Sizes, request.Optimizer, request.MaxBatch, new OpenClBackendOptions
        {
            Device = request.Device,
            Variant = request.OpenClVariant,
            KernelsDirectory = request.KernelsDirectory,
            Precision = request.Precision,
            Profiling = request.Profiling,
            Kernel = request.Kernel,
        });
}

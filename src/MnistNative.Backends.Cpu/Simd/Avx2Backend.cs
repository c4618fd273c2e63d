using System.Runtime.Intrinsics;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// Float32 training on Vector256 with AVX2 + FMA3, fused per tile and multi-threaded; mirrors
/// <see cref="Reference.ReferenceBackend{T}"/>. See docs/cpu-backends.md.
/// </summary>
public sealed class Avx2Backend : IFullBatchBackend, IKernelChoosingBackend
{
    public const string Name = "avx2";
    private readonly SimdBackend<Avx2Width, Vector256<float>> _engine;

    /// <param name="hidden">Hidden width H (any H &gt;= 1).</param>
    /// <param name="threads">Worker threads; 0 = all cores (Environment.ProcessorCount).</param>
    /// <exception cref="BackendUnavailableException">The CPU or the runtime (DOTNET_EnableAVX2=0) lacks AVX2 or FMA.</exception>
    /// <param name="kernel">Layer-1 kernels: dense, sparse (skip zero pixels), or auto (from the uploaded images'
    /// density).</param>
    public Avx2Backend(int hidden, int threads = 0, KernelMode kernel = KernelMode.Auto)
        : this(hidden, threads, InputLayout.BytesPerTile, kernel) { }

    internal Avx2Backend(int hidden, int threads, InputLayout layout, KernelMode kernel = KernelMode.Auto)
    {
        if (CpuFeatures.Avx2UnavailableReason() is { } reason) throw new BackendUnavailableException(reason);
        _engine = new SimdBackend<Avx2Width, Vector256<float>>(Name, hidden, threads, layout, kernel);
    }

    public BackendInfo Info => _engine.Info;
    public KernelChoice? KernelChoice => _engine.KernelChoice;
    internal long WorkerAllocatedBytes => _engine.WorkerAllocatedBytes;
    public void Upload(LabeledImages train) => _engine.Upload(train);
    public void SetWeights(MlpParameters weights) => _engine.SetWeights(weights);
    public MlpParameters GetWeights() => _engine.GetWeights();
    public StepMetrics Step(double learningRate, bool measure) => _engine.Step(learningRate, measure);
    public StepMetrics ComputeGradients(MlpParameters gradients) => _engine.ComputeGradients(gradients);
    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities) => _engine.Predict(images, probabilities);
    public void Dispose() => _engine.Dispose();
}

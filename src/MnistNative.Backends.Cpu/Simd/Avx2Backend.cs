using System.Runtime.Intrinsics;
using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// Float32 training on Vector256 with AVX2 + FMA3, fused per tile and multi-threaded; mirrors
/// <see cref="Reference.ReferenceBackend{T}"/>. See docs/cpu-backends.md.
/// </summary>
public sealed class Avx2Backend : ITrainingBackend
{
    public const string Name = "avx2";
    private readonly SimdBackend<Avx2Width, Vector256<float>> _engine;

    /// <param name="hidden">Hidden width H (any H &gt;= 1).</param>
    /// <param name="threads">Worker threads; 0 = all cores (Environment.ProcessorCount).</param>
    /// <exception cref="BackendUnavailableException">The CPU or the runtime (DOTNET_EnableAVX2=0) lacks AVX2 or FMA.</exception>
    public Avx2Backend(int hidden, int threads = 0) : this(hidden, threads, InputLayout.BytesPerTile) { }

    internal Avx2Backend(int hidden, int threads, InputLayout layout)
    {
        if (CpuFeatures.Avx2UnavailableReason() is { } reason) throw new BackendUnavailableException(reason);
        _engine = new SimdBackend<Avx2Width, Vector256<float>>(Name, hidden, threads, layout);
    }

    public BackendInfo Info => _engine.Info;
    internal long WorkerAllocatedBytes => _engine.WorkerAllocatedBytes;
    public void Upload(LabeledImages train) => _engine.Upload(train);
    public void SetWeights(MlpParameters weights) => _engine.SetWeights(weights);
    public MlpParameters GetWeights() => _engine.GetWeights();
    public StepMetrics Step(double learningRate, bool measure) => _engine.Step(learningRate, measure);
    public StepMetrics ComputeGradients(MlpParameters gradients) => _engine.ComputeGradients(gradients);
    public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities) => _engine.Predict(images, probabilities);
    public void Dispose() => _engine.Dispose();
}

using BenchmarkDotNet.Attributes;
using MnistNative.Core;

namespace MnistNative.Benchmarks;

/// <summary>
/// One full-batch training step of the seed's workload (10,000 x 784, H = 10, about 320 MFLOP) and of
/// H = 128, per backend; the scalar float32 reference is the baseline.
/// </summary>
[MemoryDiagnoser]
public class TrainingStepBenchmarks
{
    private ITrainingBackend _backend = null!;

    [ParamsSource(nameof(Backends))]
    public string Backend { get; set; } = "scalar";

    [Params(10, 128)]
    public int Hidden { get; set; }

    public static IEnumerable<string> Backends() => Workload.AvailableBackends();

    [GlobalSetup]
    public void Setup()
    {
        _backend = Workload.Open(Backend, Hidden, Workload.Train);
        _backend.Step(TrainingBatch.WholeSet, 1e-3, measure: false); // first call: kernels compiled, buffers touched
        _backend.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup() => _backend.Dispose();

    [Benchmark]
    public void TrainingStep()
    {
        _backend.Step(TrainingBatch.WholeSet, 1e-3, measure: false);
        _backend.Synchronize(); // OpenCL enqueues steps; time them to completion
    }
}

/// <summary>
/// Forward-only inference over the 10,000 test images, and one image, per backend (seed model shape).
/// </summary>
[MemoryDiagnoser]
public class BackendInferenceBenchmarks
{
    private ITrainingBackend _backend = null!;
    private byte[] _images = [];
    private readonly double[] _probabilities = new double[10_000 * 10];

    [ParamsSource(nameof(Backends))]
    public string Backend { get; set; } = "scalar";

    public static IEnumerable<string> Backends() => Workload.AvailableBackends();

    [GlobalSetup]
    public void Setup()
    {
        _images = Workload.Test.Pixels;
        _backend = Workload.Open(Backend, 10, Workload.Train.Take(100));
    }

    [GlobalCleanup]
    public void Cleanup() => _backend.Dispose();

    [Benchmark]
    public void TestSetBatch() => _backend.Predict(_images, _probabilities);

    [Benchmark]
    public void SingleImage() => _backend.Predict(_images.AsSpan(0, 784), _probabilities.AsSpan(0, 10));
}

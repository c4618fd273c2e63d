using BenchmarkDotNet.Attributes;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;

namespace MnistNative.Benchmarks;

/// <summary>
/// The seed's step (784-10-10, gd, the 10,000 images) on one <see cref="OpenClBackend"/> through its two kernel
/// families: the whole set (the fused kernels) and the same samples as a sampled batch of every index (the
/// per-layer kernels). What a caller gains by asking for <see cref="TrainingBatch.WholeSet"/> whenever a run's
/// batch is the whole set in order (`train --batch-size 10000 --optimizer gd`). Needs an OpenCL device.
/// </summary>
[MemoryDiagnoser]
public class OpenClPathBenchmarks
{
    private OpenClBackend _backend = null!;
    private int[] _everyIndex = [];

    [Params(10, 128)]
    public int Hidden { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        LabeledImages train = Workload.Train;
        int[] sizes = [MlpParameters.InputSize, Hidden, MlpParameters.Classes];
        _backend = new OpenClBackend(sizes, OptimizerSettings.Gd, train.Count);
        _backend.Upload(train);
        _backend.SetWeights(MlpParameters.Initialize(sizes, 0));
        _everyIndex = Enumerable.Range(0, train.Count).ToArray();
        WholeSetOnTheFusedKernels(); // first launches: PoCL compiles each kernel's work-group function
        EveryIndexOnThePerLayerKernels();
    }

    [GlobalCleanup]
    public void Cleanup() => _backend.Dispose();

    [Benchmark(Baseline = true)]
    public void WholeSetOnTheFusedKernels()
    {
        _backend.Step(TrainingBatch.WholeSet, 1e-3, measure: false);
        _backend.Synchronize();
    }

    [Benchmark]
    public void EveryIndexOnThePerLayerKernels()
    {
        _backend.Step(TrainingBatch.Of(_everyIndex), 1e-3, measure: false);
        _backend.Synchronize();
    }
}

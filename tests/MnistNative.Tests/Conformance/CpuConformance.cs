using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;

namespace MnistNative.Tests.Conformance;

// The suite for every CPU backend: the reference at both precisions (float64 against itself checks the suite), and
// the SIMD backend at each width on 1 and 2 threads with the fused path's layer-1 kernels forced: dense, sparse (on
// the suite's random images, whose non-zeros share no strokes, that is the rows) and sparse sample blocks (their
// forward and gradient at narrow hidden layers, their forward with the rows' gradient at wide ones). The per-layer
// path has no kernel choice; it runs in every class for the steps the fused path does not take.

public sealed class ReferenceF64Conformance : TrainingBackendConformance
{
    protected override double Tolerance => 1e-13;

    protected override ITrainingBackend Create(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch) =>
        new ReferenceBackend<double>(sizes, optimizer);
}

public sealed class ReferenceF32Conformance : TrainingBackendConformance
{
    protected override double Tolerance => CpuFloat32Tolerance.Value;

    protected override ITrainingBackend Create(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch) =>
        new ReferenceBackend<float>(sizes, optimizer);
}

/// <summary>float32 against float64 over the suite's problems: ten times the largest difference seen on any CPU
/// class (docs/journal/one-engine-cpu.md).</summary>
internal static class CpuFloat32Tolerance
{
    public const double Value = 1e-5;
}

/// <param name="sampleBlocks">With KernelMode.Sparse: the sample blocks, which the suite's random images (no
/// shared strokes) would not get from the estimates.</param>
public abstract class SimdConformance(string width, int threads, KernelMode kernel, bool sampleBlocks = false)
    : TrainingBackendConformance
{
    protected override double Tolerance => CpuFloat32Tolerance.Value;

    protected override ITrainingBackend Create(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch)
    {
        ITrainingBackend backend = SimdBackend.Create(width, sizes, optimizer, maxBatch, threads, kernel);
        if (sampleBlocks) ((ISparseFamilyChoice)backend).SparseFamily = Layer1Kernel.SampleBlocks;
        return backend;
    }
}

public sealed class Avx2OneThreadDenseConformance() : SimdConformance("avx2", 1, KernelMode.Dense);
public sealed class Avx2OneThreadSparseConformance() : SimdConformance("avx2", 1, KernelMode.Sparse);
public sealed class Avx2TwoThreadDenseConformance() : SimdConformance("avx2", 2, KernelMode.Dense);
public sealed class Avx2TwoThreadSparseConformance() : SimdConformance("avx2", 2, KernelMode.Sparse);
public sealed class Avx512OneThreadDenseConformance() : SimdConformance("avx512", 1, KernelMode.Dense);
public sealed class Avx512OneThreadSparseConformance() : SimdConformance("avx512", 1, KernelMode.Sparse);
public sealed class Avx512TwoThreadDenseConformance() : SimdConformance("avx512", 2, KernelMode.Dense);
public sealed class Avx512TwoThreadSparseConformance() : SimdConformance("avx512", 2, KernelMode.Sparse);
public sealed class Avx2OneThreadSampleBlocksConformance() : SimdConformance("avx2", 1, KernelMode.Sparse, true);
public sealed class Avx2TwoThreadSampleBlocksConformance() : SimdConformance("avx2", 2, KernelMode.Sparse, true);
public sealed class Avx512OneThreadSampleBlocksConformance() : SimdConformance("avx512", 1, KernelMode.Sparse, true);
public sealed class Avx512TwoThreadSampleBlocksConformance() : SimdConformance("avx512", 2, KernelMode.Sparse, true);

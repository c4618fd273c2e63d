using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The two contracts the trainers still take until the one Trainer replaces FullBatchTrainer and
/// MiniBatchTrainer: each member is the <see cref="ITrainingBackend"/> call it stands for. Delete this file with
/// <see cref="IFullBatchBackend"/> and <see cref="IMiniBatchBackend"/>.
/// </summary>
internal sealed partial class SimdBackend<TW, TVec> : IFullBatchBackend, IMiniBatchBackend, IProfiledBackend,
    IKernelChoosingBackend
{
    StepMetrics IFullBatchBackend.Step(double learningRate, bool measure) =>
        Step(TrainingBatch.WholeSet, learningRate, measure);

    StepMetrics IFullBatchBackend.ComputeGradients(MlpParameters gradients) =>
        ComputeGradients(TrainingBatch.WholeSet, gradients);

    StepMetrics IMiniBatchBackend.StepBatch(ReadOnlySpan<int> sampleIndices, double learningRate, bool measure) =>
        Step(TrainingBatch.Of(sampleIndices), learningRate, measure);

    StepMetrics IMiniBatchBackend.ComputeGradients(ReadOnlySpan<int> sampleIndices, MlpParameters gradients) =>
        ComputeGradients(TrainingBatch.Of(sampleIndices), gradients);
}

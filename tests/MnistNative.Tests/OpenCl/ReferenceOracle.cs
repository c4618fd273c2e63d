using MnistNative.Backends.Cpu.Deep;
using MnistNative.Core;

namespace MnistNative.Tests.OpenCl;

/// <summary>
/// The float64 reference as an <see cref="ITrainingBackend"/>, the oracle of the OpenCL tests. On this branch
/// the reference of any depth is still <c>DeepReferenceBackend&lt;double&gt;</c> on the old mini-batch contract,
/// so this wraps it; once <c>ReferenceBackend&lt;double&gt;(sizes, optimizer)</c> implements the one contract,
/// <see cref="Create"/> returns that and the wrapper goes.
/// </summary>
internal static class ReferenceOracle
{
    public static ITrainingBackend Create(IReadOnlyList<int> sizes, OptimizerSettings optimizer) =>
        new Wrapped(new DeepReferenceBackend<double>(sizes, optimizer));

    private sealed class Wrapped(IMiniBatchBackend inner) : ITrainingBackend
    {
        private int _n;

        public BackendInfo Info => inner.Info;
        public IReadOnlyList<int> Sizes => inner.Sizes;
        public OptimizerSettings Optimizer => inner.Optimizer;
        public int MaxBatch => inner.MaxBatch;
        public KernelChoice? KernelChoice => null;
        public Profiler? Profiler { get; set; }

        public void Upload(LabeledImages train)
        {
            inner.Upload(train);
            _n = train.Count;
        }

        public void SetWeights(MlpParameters weights) => inner.SetWeights(weights);
        public MlpParameters GetWeights() => inner.GetWeights();
        public OptimizerState GetOptimizerState() => inner.GetOptimizerState();
        public void SetOptimizerState(OptimizerState state) => inner.SetOptimizerState(state);

        public StepMetrics Step(TrainingBatch batch, double learningRate, bool measure) =>
            inner.StepBatch(Indices(batch), learningRate, measure);

        public StepMetrics ComputeGradients(TrainingBatch batch, MlpParameters gradients) =>
            inner.ComputeGradients(Indices(batch), gradients);

        public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities) =>
            inner.Predict(images, probabilities);
        public void Dispose() => inner.Dispose();

        private ReadOnlySpan<int> Indices(TrainingBatch batch) =>
            batch.IsWholeSet ? Enumerable.Range(0, _n).ToArray() : batch.Indices;
    }
}

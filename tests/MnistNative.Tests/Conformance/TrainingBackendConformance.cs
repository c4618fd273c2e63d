using MnistNative.Core;
using MnistNative.Tests.OpenCl;
using Xunit;

namespace MnistNative.Tests.Conformance;

/// <summary>
/// The conformance suite of <see cref="ITrainingBackend"/>: gradients, metrics, steps and probabilities of a
/// backend against the float64 reference, over depths, batch sizes, optimizers, whole-set and sampled batches,
/// on images that include an empty (all-zero) one and a fully dense one. One small sealed class per backend,
/// variant, thread count and precision instantiates it.
/// This is the OpenCL branch's minimal copy with the extension point fixed by the plan of issue 14; the CPU
/// branch's file of the same name is the full suite and replaces it when the branches merge.
/// </summary>
public abstract class TrainingBackendConformance
{
    /// <summary>a fresh backend for these sizes/optimizer/max batch</summary>
    protected abstract ITrainingBackend Create(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch);

    /// <summary>max abs difference allowed against the float64 reference's gradients and updated weights</summary>
    protected abstract double Tolerance { get; }

    private const int Samples = 50;

    // batch 0 stands for the whole set
    public static TheoryData<int[], int> ShapesAndBatches()
    {
        var data = new TheoryData<int[], int>();
        foreach (int[] sizes in new[] { new[] { 784, 10, 10 }, [784, 33, 10], [784, 64, 32, 10] })
            foreach (int batch in new[] { 1, 7, 37, 0 })
                data.Add(sizes, batch);
        return data;
    }

    [Theory]
    [MemberData(nameof(ShapesAndBatches))]
    public void GradientsAndMetricsMatchTheReference(int[] sizes, int batch)
    {
        LabeledImages data = OpenClTestData.Images(Samples, seed: 1);
        MlpParameters weights = MlpParameters.Initialize(sizes, 3);
        using ITrainingBackend reference = ReferenceOracle.Create(sizes, OptimizerSettings.Gd);
        using ITrainingBackend backend = Create(sizes, OptimizerSettings.Gd, batch == 0 ? Samples : batch);
        foreach (ITrainingBackend b in new[] { reference, backend })
        {
            b.Upload(data);
            b.SetWeights(weights);
        }
        int[] indices = OpenClTestData.Batch(batch, step: 1, Samples);
        var want = new MlpParameters(sizes);
        var got = new MlpParameters(sizes);
        StepMetrics wantMetrics = reference.ComputeGradients(Of(indices), want);
        StepMetrics gotMetrics = backend.ComputeGradients(Of(indices), got);
        Assert.Equal(wantMetrics.Count, gotMetrics.Count);
        Assert.Equal(wantMetrics.Correct, gotMetrics.Correct);
        Assert.InRange(Math.Abs(wantMetrics.LossSum - gotMetrics.LossSum) / wantMetrics.Count, 0, Tolerance * 10);
        Assert.InRange(OpenClTestData.MaxAbsDiff(want, got), 0, Tolerance);
    }

    public static TheoryData<OptimizerKind> Optimizers() =>
        [OptimizerKind.Gd, OptimizerKind.Momentum, OptimizerKind.Adam];

    /// <summary>Steps alternate between the whole set and sampled batches, so a backend with a whole-set
    /// specialisation switches paths; weights, optimizer state and probabilities must follow the reference.</summary>
    [Theory]
    [MemberData(nameof(Optimizers))]
    public void StepsOnWholeAndSampledBatchesMatchTheReference(OptimizerKind kind)
    {
        var optimizer = new OptimizerSettings(kind, WeightDecay: kind == OptimizerKind.Adam ? 1e-3 : 0);
        double lr = kind == OptimizerKind.Adam ? 1e-3 : 0.1;
        LabeledImages data = OpenClTestData.Images(Samples, seed: 2);
        foreach (int[] sizes in new[] { new[] { 784, 33, 10 }, [784, 64, 32, 10] })
        {
            MlpParameters weights = MlpParameters.Initialize(sizes, 5);
            using ITrainingBackend reference = ReferenceOracle.Create(sizes, optimizer);
            using ITrainingBackend backend = Create(sizes, optimizer, Samples);
            foreach (ITrainingBackend b in new[] { reference, backend })
            {
                b.Upload(data);
                b.SetWeights(weights);
            }
            for (int step = 0; step < 6; step++)
            {
                int[] indices = OpenClTestData.Batch(step % 3 == 2 ? 7 : 0, step, Samples);
                StepMetrics want = reference.Step(Of(indices), lr, measure: true);
                StepMetrics got = backend.Step(Of(indices), lr, measure: step % 2 == 0);
                if (step % 2 == 0) Assert.Equal(want.Correct, got.Correct);
                else Assert.Equal(default, got);
                Assert.InRange(OpenClTestData.MaxAbsDiff(reference.GetWeights(), backend.GetWeights()), 0, Tolerance);
            }
            Assert.Equal(6, backend.GetOptimizerState().Steps);
            var wantP = new double[Samples * 10];
            var gotP = new double[Samples * 10];
            reference.Predict(data.Pixels, wantP);
            backend.Predict(data.Pixels, gotP);
            Assert.InRange(wantP.Zip(gotP).Max(t => Math.Abs(t.First - t.Second)), 0, Tolerance);
        }
    }

    private static TrainingBatch Of(int[] indices) =>
        indices.Length == 0 ? TrainingBatch.WholeSet : TrainingBatch.Of(indices);
}

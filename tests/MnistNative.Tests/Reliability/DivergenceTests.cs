using MnistNative.Backends.Cpu.Reference;
using MnistNative.Cli;
using MnistNative.Core;
using MnistNative.Data;
using Xunit;

namespace MnistNative.Tests.Reliability;

/// <summary>
/// Issue 13, item 2: the loss is checked on every step, and a diverged run writes no model and replaces no
/// checkpoint (rows 1 and 2 of the table).
/// </summary>
public sealed class DivergenceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-divergence-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static ReferenceBackend<double> SeedBackend(int count)
    {
        var backend = new ReferenceBackend<double>([784, 10, 10], OptimizerSettings.Gd);
        backend.Upload(TestPaths.Train.Take(count));
        backend.SetWeights(MlpParameters.Initialize([MlpParameters.InputSize, 10, MlpParameters.Classes], 0));
        return backend;
    }

    // Before: only logged iterations (every 50th) were checked, so 50 iterations at lr 1e6 logged iteration 0 only
    // and returned finite, useless weights.
    [Fact]
    public void AnUnloggedIterationThatBlowsUpStopsTheRun()
    {
        using var backend = SeedBackend(1000);
        var e = Assert.Throws<DivergenceException>(() => FullBatchTrainer.Run(backend, new TrainingOptions(50, 1e6, 50)));
        Assert.Contains("at iteration 1", e.Message);
        Assert.Contains("over 10x its first value", e.Message);
    }

    [Fact]
    public void AHealthyRunIsNotStopped()
    {
        using var backend = SeedBackend(1000);
        TrainingResult result = FullBatchTrainer.Run(backend, new TrainingOptions(60, 0.1, 50));
        Assert.Equal(2, result.Log.Count);
        Assert.True(result.Log[1].Loss < result.Log[0].Loss);
    }

    [Fact]
    public void TrainAtAHugeLearningRateExitsThreeAndKeepsTheExistingModel()
    {
        string model = Path.Combine(_dir, "model.npz");
        File.WriteAllText(model, "the previous model");
        var (code, stdout, stderr) = CliTests.Run("train", "--lr", "1e6", "--iterations", "50", "--backend", "scalar",
            "--train-count", "1000",
            "--data", TestPaths.MnistDir, "--out", model);
        Assert.Equal(ExitCodes.Diverged, code);
        Assert.Contains("training diverged at iteration", stderr);
        Assert.Contains("no model was written", stderr);
        Assert.DoesNotContain("Test accuracy", stdout);
        Assert.Equal("the previous model", File.ReadAllText(model));
        Assert.Equal([model], Directory.GetFiles(_dir));
    }

    /// <summary>A real backend whose weights turn to NaN after a chosen step (an overflow late in a run).</summary>
    private sealed class PoisonedBackend(IMiniBatchBackend inner, long poisonAfterStep) : IMiniBatchBackend
    {
        private long _steps;

        public BackendInfo Info => inner.Info;
        public IReadOnlyList<int> Sizes => inner.Sizes;
        public int MaxBatch => inner.MaxBatch;
        public OptimizerSettings Optimizer => inner.Optimizer;
        public void Upload(LabeledImages train) => inner.Upload(train);
        public void SetWeights(MlpParameters weights) => inner.SetWeights(weights);
        public MlpParameters GetWeights() => inner.GetWeights();
        public OptimizerState GetOptimizerState() => inner.GetOptimizerState();
        public void SetOptimizerState(OptimizerState state) => inner.SetOptimizerState(state);
        public StepMetrics ComputeGradients(ReadOnlySpan<int> sampleIndices, MlpParameters gradients) =>
            inner.ComputeGradients(sampleIndices, gradients);
        public void Predict(ReadOnlySpan<byte> images, Span<double> probabilities) =>
            inner.Predict(images, probabilities);
        public void Dispose() => inner.Dispose();

        public StepMetrics StepBatch(ReadOnlySpan<int> sampleIndices, double learningRate, bool measure)
        {
            StepMetrics m = inner.StepBatch(sampleIndices, learningRate, measure);
            if (++_steps == poisonAfterStep)
            {
                MlpParameters w = inner.GetWeights();
                w.W[0][5] = double.NaN;
                inner.SetWeights(w);
            }
            return m;
        }
    }

    // Before: the epoch's snapshot was saved whatever it held, so a last step that left NaN weights replaced the
    // only checkpoint with them and --resume failed.
    [Fact]
    public void ALastEpochThatEndsInNaNWeightsLeavesThePreviousCheckpoint()
    {
        LabeledImages train = TestPaths.Train.Take(400);
        int[] sizes = [MlpParameters.InputSize, 8, MlpParameters.Classes];
        var backend = new PoisonedBackend(new ReferenceBackend<double>(sizes, OptimizerSettings.Gd),
            poisonAfterStep: 8);
        using (backend)
        {
            backend.Upload(train);
            backend.SetWeights(MlpParameters.Initialize(sizes, 0));
            var saved = new List<TrainingCheckpoint>();
            var options = new MiniBatchOptions(100, 2, null, 1, LearningRateSchedule.Constant(0.1));
            var e = Assert.Throws<DivergenceException>(() =>
                MiniBatchTrainer.Run(backend, train.Count, options, new MiniBatchHooks
            {
                SaveCheckpoint = c =>
                {
                    CheckpointFile.Save(_dir, c);
                    saved.Add(c);
                },
            }));
            Assert.Contains("the last checkpoint was kept", e.Message);
            Assert.Single(saved);
            Assert.Equal(4, saved[0].Step);
            TrainingCheckpoint kept = CheckpointFile.Load(_dir);
            Assert.Equal(4, kept.Step);
            Assert.True(kept.Weights.AllFinite());
        }
    }

    // Before: a finite blow-up was only compared at the end of an epoch with the first epoch's mean, so a run whose
    // losses sat in the hundreds from its second step on trained to the end (the first epoch has no reference).
    [Fact]
    public void AMiniBatchRunWhoseLossBlowsUpMidEpochStopsAtThatStep()
    {
        LabeledImages train = TestPaths.Train.Take(1000);
        int[] sizes = [MlpParameters.InputSize, 8, MlpParameters.Classes];
        using var backend = new ReferenceBackend<double>(sizes, OptimizerSettings.Gd);
        backend.Upload(train);
        backend.SetWeights(MlpParameters.Initialize(sizes, 0));
        int saves = 0;
        var options = new MiniBatchOptions(100, 2, null, 1, LearningRateSchedule.Constant(100));
        var e = Assert.Throws<DivergenceException>(() => MiniBatchTrainer.Run(backend, train.Count, options,
            new MiniBatchHooks { SaveCheckpoint = _ => saves++ }));
        Assert.Contains("(epoch 1)", e.Message);
        Assert.Contains("over 10x its first value", e.Message);
        Assert.Equal(0, saves);
    }
}

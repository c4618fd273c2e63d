using System.Diagnostics.Metrics;
using MnistNative.Backends;
using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Tests.Conformance;
using MnistNative.Tests.Training;
using Xunit;

namespace MnistNative.Tests;

/// <summary>The one training loop: shuffling, seeds, checkpoints and resume, on the scalar reference.</summary>
public sealed class TrainerTests
{
    private static ITrainingBackend Scalar(Precision precision, int[] sizes, OptimizerSettings optimizer,
        int maxBatch) =>
        BackendCatalog.Create(new BackendRequest("scalar", precision, sizes, optimizer, maxBatch), _ => { });

    [Fact]
    public void ResumeGivesTheSameWeightsAsAnUninterruptedRunBitwise()
    {
        int[] sizes = [784, 12, 8, 10];
        LabeledImages data = TinyData.Images(200);
        var o = new OptimizerSettings(OptimizerKind.Adam, WeightDecay: 1e-4);
        var options = new TrainingOptions(32, 3, null, 9,
            new LearningRateSchedule(ScheduleKind.Cosine, 2e-3, 3 * 7, 4));
        MlpParameters init = MlpParameters.Initialize(sizes, 4);
        ITrainingBackend Fresh()
        {
            ITrainingBackend b = Scalar(Precision.F64, sizes, o, 32);
            b.Upload(data);
            b.SetWeights(init);
            return b;
        }
        using var straight = Fresh();
        TrainingResult whole = Trainer.Run(straight, data.Count, options, new TrainingHooks { RunKey = "k" });

        // stop mid-epoch (step 10 of 21) as Ctrl-C would, write the checkpoint to disk, resume in a new backend
        string dir = Directory.CreateTempSubdirectory("mnistnative-ckpt-").FullName;
        try
        {
            using var cts = new CancellationTokenSource();
            int steps = 0;
            using (var first = Fresh())
            {
                TrainingResult part = Trainer.Run(first, data.Count, options, new TrainingHooks
                {
                    RunKey = "k", Cancellation = cts.Token,
                    OnStep = (_, _, _, _, _) => { if (++steps == 10) cts.Cancel(); },
                    SaveCheckpoint = c => CheckpointFile.Save(dir, c),
                });
                Assert.True(part.Cancelled);
                Assert.Equal(10, part.Steps);
            }
            using ITrainingBackend second = Scalar(Precision.F64, sizes, o, 32);
            second.Upload(data);
            TrainingResult rest = Trainer.Run(second, data.Count, options,
                new TrainingHooks { RunKey = "k", Resume = CheckpointFile.Load(dir) });
            Assert.Equal(0, TrainingBackendConformance.MaxDiff(whole.Weights, rest.Weights, 0, 0, exact: true));
            Assert.Equal(whole.Epochs.Select(e => (e.TrainLoss, e.TrainAccuracy)),
                rest.Epochs.Select(e => (e.TrainLoss, e.TrainAccuracy)));
            Assert.Throws<ArgumentException>(() => Trainer.Run(second, data.Count, options,
                new TrainingHooks { RunKey = "other", Resume = CheckpointFile.Load(dir) }));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void SameSeedSameResultOtherSeedOtherResult()
    {
        int[] sizes = [784, 10, 10];
        LabeledImages data = TinyData.Images(120);
        MlpParameters Train(uint seed)
        {
            using ITrainingBackend b = Scalar(Precision.F32, sizes, new OptimizerSettings(OptimizerKind.Momentum), 16);
            b.Upload(data);
            b.SetWeights(MlpParameters.Initialize(sizes, 0));
            return Trainer.Run(b, data.Count,
                new TrainingOptions(16, 2, null, seed, LearningRateSchedule.Constant(0.05))).Weights;
        }
        Assert.Equal(0, TrainingBackendConformance.MaxDiff(Train(1), Train(1), 0, 0, exact: true));
        Assert.NotEqual(0, TrainingBackendConformance.MaxDiff(Train(1), Train(2), 0, 0, exact: true));
    }

    [Fact]
    public void PermutationIsAPermutationAndDependsOnSeedAndEpoch()
    {
        var a = new int[100]; var b = new int[100]; var c = new int[100];
        Trainer.Permutation(1, 0, a);
        Trainer.Permutation(1, 1, b);
        Trainer.Permutation(2, 0, c);
        Assert.Equal(Enumerable.Range(0, 100), a.Order());
        Assert.NotEqual(a, b);
        Assert.NotEqual(a, c);
    }

    [Theory]
    [InlineData(40)] // whole set: full-batch gradient descent
    [InlineData(16)] // mini-batches
    public void AProfiledRunRecordsPhasesInTheProfilerAndTheMeter(int batch)
    {
        int[] sizes = [784, 6, 10];
        LabeledImages data = TinyData.Images(40);
        var phases = new HashSet<string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument == EngineMetrics.PhaseDuration) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<double>((_, ms, tags, _) =>
        {
            foreach (KeyValuePair<string, object?> tag in tags)
                if (tag.Key == "phase") lock (phases) phases.Add((string)tag.Value!);
        });
        listener.Start();
        using ITrainingBackend b = Scalar(Precision.F32, sizes, OptimizerSettings.Gd, batch);
        b.Upload(data);
        b.SetWeights(MlpParameters.Initialize(sizes, 1));
        var profiler = new Profiler();
        Trainer.Run(b, data.Count, new TrainingOptions(batch, 2, null, 3, LearningRateSchedule.Constant(0.1)),
            new TrainingHooks { Profiler = profiler });
        Assert.Null(b.Profiler); // detached after the run
        IReadOnlyList<PhaseStat> summary = profiler.Summary();
        foreach (string phase in new[] { Phases.Forward, Phases.Backward, Phases.Update })
        {
            Assert.Contains(summary, p => p.Phase.StartsWith(phase, StringComparison.Ordinal) && p.Calls > 0);
            lock (phases) Assert.Contains(phases, p => p.StartsWith(phase, StringComparison.Ordinal));
        }
    }
}

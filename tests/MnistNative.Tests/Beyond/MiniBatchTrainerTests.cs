using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Tests.Conformance;
using Xunit;

namespace MnistNative.Tests.Beyond;

/// <summary>MiniBatchTrainer over the reference backend: resume, seeds, the epoch permutation.</summary>
public sealed class MiniBatchTrainerTests
{
    [Fact]
    public void ResumeGivesTheSameWeightsAsAnUninterruptedRunBitwise()
    {
        int[] sizes = [784, 12, 8, 10];
        LabeledImages data = TinyData.Images(200);
        var o = new OptimizerSettings(OptimizerKind.Adam, WeightDecay: 1e-4);
        var options = new MiniBatchOptions(32, 3, null, 9, new LearningRateSchedule(ScheduleKind.Cosine, 2e-3, 3 * 7, 4));
        MlpParameters init = MlpParameters.Initialize(sizes, 4);
        ReferenceBackend<double> Fresh()
        {
            var b = new ReferenceBackend<double>(sizes, o);
            b.Upload(data);
            b.SetWeights(init);
            return b;
        }
        using var straight = Fresh();
        MiniBatchResult whole = MiniBatchTrainer.Run(straight, data.Count, options, new MiniBatchHooks { RunKey = "k" });

        // stop mid-epoch (step 10 of 21) as Ctrl-C would, write the checkpoint to disk, resume in a new backend
        string dir = Directory.CreateTempSubdirectory("mnistnative-ckpt-").FullName;
        try
        {
            using var cts = new CancellationTokenSource();
            int steps = 0;
            using (var first = Fresh())
            {
                MiniBatchResult part = MiniBatchTrainer.Run(first, data.Count, options, new MiniBatchHooks
                {
                    RunKey = "k", Cancellation = cts.Token, OnStep = (_, _, _, _, _) => { if (++steps == 10) cts.Cancel(); },
                    SaveCheckpoint = c => CheckpointFile.Save(dir, c),
                });
                Assert.True(part.Cancelled);
                Assert.Equal(10, part.Steps);
            }
            using var second = new ReferenceBackend<double>(sizes, o);
            second.Upload(data);
            MiniBatchResult rest = MiniBatchTrainer.Run(second, data.Count, options, new MiniBatchHooks { RunKey = "k", Resume = CheckpointFile.Load(dir) });
            Assert.Equal(0, TrainingBackendConformance.MaxDiff(whole.Weights, rest.Weights, 0, 0, exact: true));
            Assert.Equal(whole.Epochs.Select(e => (e.TrainLoss, e.TrainAccuracy)), rest.Epochs.Select(e => (e.TrainLoss, e.TrainAccuracy)));
            Assert.Throws<ArgumentException>(() => MiniBatchTrainer.Run(second, data.Count, options, new MiniBatchHooks { RunKey = "other", Resume = CheckpointFile.Load(dir) }));
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
            using var b = new ReferenceBackend<float>(sizes, new OptimizerSettings(OptimizerKind.Momentum));
            b.Upload(data);
            b.SetWeights(MlpParameters.Initialize(sizes, 0));
            return MiniBatchTrainer.Run(b, data.Count, new MiniBatchOptions(16, 2, null, seed, LearningRateSchedule.Constant(0.05))).Weights;
        }
        Assert.Equal(0, TrainingBackendConformance.MaxDiff(Train(1), Train(1), 0, 0, exact: true));
        Assert.NotEqual(0, TrainingBackendConformance.MaxDiff(Train(1), Train(2), 0, 0, exact: true));
    }

    [Fact]
    public void PermutationIsAPermutationAndDependsOnSeedAndEpoch()
    {
        var a = new int[100]; var b = new int[100]; var c = new int[100];
        MiniBatchTrainer.Permutation(1, 0, a);
        MiniBatchTrainer.Permutation(1, 1, b);
        MiniBatchTrainer.Permutation(2, 0, c);
        Assert.Equal(Enumerable.Range(0, 100), a.Order());
        Assert.NotEqual(a, b);
        Assert.NotEqual(a, c);
    }
}

using MnistNative.Formats;
using System.Text.Json;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using MnistNative.Data;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>The seed notebook's float64 run (shared/fixtures/seed-parity) reproduced by the reference.</summary>
public sealed class SeedParityTests(ITestOutputHelper output)
{
    public sealed record ExpectedLog(int Iteration, double TrainAccuracy, double Loss);

    public static (IReadOnlyList<ExpectedLog> Log, double TestAccuracy) Expected()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPaths.SeedParity, "expected.json")));
        var log = doc.RootElement.GetProperty("log").EnumerateArray()
            .Select(e => new ExpectedLog(e.GetProperty("iteration").GetInt32(),
                e.GetProperty("train_accuracy").GetDouble(), e.GetProperty("loss").GetDouble()))
            .ToList();
        return (log, doc.RootElement.GetProperty("test_accuracy").GetDouble());
    }

    [Fact]
    public void Seed0InitialisationIsNumpysRandn()
    {
        MlpParameters fixture = ModelFile.Load(Path.Combine(TestPaths.SeedParity, "init.npz"));
        MlpParameters ours = MlpParameters.Initialize([784, 10, 10], seed: 0);
        for (int l = 0; l < 2; l++)
        {
            Assert.Equal(fixture.W[l], ours.W[l]);
            Assert.Equal(fixture.B[l], ours.B[l]);
        }
    }

    [Fact]
    public void ReferenceF64MatchesTheSeedFor101Iterations() => RunParity(101, requireTestAccuracy: false);

    [Fact]
    [Trait("Category", "Long")]
    public void ReferenceF64MatchesTheSeedFor1000Iterations() => RunParity(1000, requireTestAccuracy: true);

    private void RunParity(int iterations, bool requireTestAccuracy)
    {
        var (expected, expectedTest) = Expected();
        using var backend = new ReferenceBackend<double>([784, 10, 10], OptimizerSettings.Gd);
        backend.Upload(TestPaths.Train.Take(10_000));
        backend.SetWeights(ModelFile.Load(Path.Combine(TestPaths.SeedParity, "init.npz")));
        TrainingResult result = Trainer.Run(backend, 10_000, TrainingOptions.FullBatch(iterations, 0.1, 50));
        foreach (LogEntry got in result.Log)
        {
            ExpectedLog want = expected.Single(e => e.Iteration == got.Iteration);
            output.WriteLine($"iteration {got.Iteration}: accuracy {got.TrainAccuracy:F4} "
                + $"(seed {want.TrainAccuracy:F4}), loss {got.Loss:F9} "
                + $"(seed {want.Loss:F9}, rel diff {Math.Abs(got.Loss - want.Loss) / want.Loss:E2})");
            Assert.InRange(got.TrainAccuracy, want.TrainAccuracy - 0.0002, want.TrainAccuracy + 0.0002);
            Assert.InRange(Math.Abs(got.Loss - want.Loss) / want.Loss, 0, 1e-6);
        }
        Assert.Equal((iterations + 49) / 50, result.Log.Count);
        if (requireTestAccuracy)
        {
            // the notebook's weights after its 1000 iterations (final.npz), to float64 round-off
            MlpParameters want = ModelFile.Load(Path.Combine(TestPaths.SeedParity, "final.npz"));
            MlpParameters got = backend.GetWeights();
            double maxDiff = 0;
            for (int l = 0; l < 2; l++)
                foreach (var (x, y) in want.W[l].Zip(got.W[l]).Concat(want.B[l].Zip(got.B[l])))
                    maxDiff = Math.Max(maxDiff, Math.Abs(x - y));
            output.WriteLine($"final weights: max |difference| from the notebook's {maxDiff:E2}");
            Assert.True(maxDiff <= 1e-14, $"final weights differ from the notebook's by up to {maxDiff:E2}");
            int[] predictions = Evaluation.Predict(backend, TestPaths.Test.Pixels, TestPaths.Test.Count);
            double test = Evaluation.Accuracy(predictions, TestPaths.Test.Labels);
            output.WriteLine($"test accuracy {test:F4} (seed {expectedTest:F4})");
            Assert.InRange(test, expectedTest - 0.0002, expectedTest + 0.0002);
        }
    }
}

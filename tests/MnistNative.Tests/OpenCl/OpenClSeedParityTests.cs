using System.Diagnostics;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using MnistNative.Data;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.OpenCl;

/// <summary>
/// The seed's run on OpenCL in float32: from init.npz, 1000 iterations at lr 0.1 on the first 10,000 images,
/// every logged accuracy and loss within 0.003 of the seed's float64 numbers, and the test accuracy too.
/// float32 sums over 10,000 samples in a different order than numpy cannot match to 1e-6 as the reference does.
/// </summary>
[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClSeedParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 0.003;

    // The GPU variant on a CPU device (PoCL runs each work-group's barriers as loops) takes ~0.1 s an
    // iteration, so there it runs the first 101 iterations; on a GPU device it runs all 1000.
    [SkippableTheory]
    [InlineData("cpu", KernelMode.Dense)]
    [InlineData("cpu", KernelMode.Sparse)]
    [InlineData("gpu", KernelMode.Dense)]
    public void OpenClF32MatchesTheSeedFor1000Iterations(string variant, KernelMode kernel)
    {
        OpenClTestDevice.RequireOpenCl();
        var (expected, expectedTest) = SeedParityTests.Expected();
        using var backend = new OpenClBackend([784, 10, 10], OptimizerSettings.Gd, 10_000,
            new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = variant, Kernel = kernel });
        int iterations = variant == "gpu" && backend.Device.Type != OpenClDeviceType.Gpu ? 101 : 1000;
        backend.Upload(TestPaths.Train.Take(10_000));
        backend.SetWeights(ModelFile.Load(Path.Combine(TestPaths.SeedParity, "init.npz")));
        Assert.Equal(kernel, backend.KernelChoice!.Kernel);
        var clock = Stopwatch.StartNew();
        TrainingResult result = Trainer.Run(backend, 10_000, TrainingOptions.FullBatch(iterations, 0.1, 50));
        output.WriteLine($"{backend.Info.Device}, {kernel} layer 1: {iterations} iterations, " +
                         $"{clock.Elapsed.TotalMilliseconds / iterations:F2} ms/iteration including the first launch");
        foreach (LogEntry got in result.Log)
        {
            SeedParityTests.ExpectedLog want = expected.Single(e => e.Iteration == got.Iteration);
            output.WriteLine($"iteration {got.Iteration}: accuracy {got.TrainAccuracy:F4} " +
                             $"(seed {want.TrainAccuracy:F4}), loss {got.Loss:F6} (seed {want.Loss:F6})");
            Assert.InRange(got.TrainAccuracy, want.TrainAccuracy - Tolerance, want.TrainAccuracy + Tolerance);
            Assert.InRange(got.Loss, want.Loss - Tolerance, want.Loss + Tolerance);
        }
        Assert.Equal((iterations + 49) / 50, result.Log.Count);
        if (iterations < 1000) return;
        int[] predictions = Evaluation.Predict(backend, TestPaths.Test.Pixels, TestPaths.Test.Count);
        double test = Evaluation.Accuracy(predictions, TestPaths.Test.Labels);
        output.WriteLine($"test accuracy {test:F4} (seed {expectedTest:F4})");
        Assert.InRange(test, expectedTest - Tolerance, expectedTest + Tolerance);
    }
}

using System.Text.Json;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.OpenCL;
using MnistNative.Cli;
using MnistNative.Core;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.OpenCl;

/// <summary>
/// The OpenCL backend against the float64 reference beyond the conformance suite: shapes that hit the CPU
/// kernels' ragged strips and blocks, the fused kernels on odd and wide hidden layers, the fused and the
/// per-layer kernels agreeing on the same whole set, every optimizer with weight decay, the optimizer state's
/// round trip, and a short real run through the CLI. Both kernel variants run, forced, whatever the device.
/// </summary>
[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClTrainingTests(ITestOutputHelper output)
{
    private static OpenClBackend Open(int[] sizes, OptimizerSettings o, int maxBatch,
        Precision precision = Precision.F32, string? variant = null, KernelMode kernel = KernelMode.Auto) =>
        new(sizes, o, maxBatch, new OpenClBackendOptions
        {
            Device = OpenClTestDevice.Device,
            Precision = precision,
            Variant = variant,
            Kernel = kernel,
        });

    /// <summary>n images of uniformly random pixels (dense, unlike digits: every weight gets a gradient) and random
    /// labels.</summary>
    private static LabeledImages RandomImages(int n, int seed)
    {
        var rng = new Random(seed);
        var pixels = new byte[n * MlpParameters.InputSize];
        var labels = new byte[n];
        rng.NextBytes(pixels);
        for (int i = 0; i < n; i++) labels[i] = (byte)rng.Next(MlpParameters.Classes);
        return new LabeledImages(pixels, labels);
    }

    private static int[] Batch(int n, int step, int count) =>
        Enumerable.Range(0, n).Select(i => (i * 7 + step * n) % count).ToArray();

    // [784, 130, 70, 10] gives the CPU kernels whole 64-column strips in every matrix kernel, ragged strips
    // (130 = 2 * 64 + 2, 70 = 64 + 6) and ragged 4 x 4 blocks; the narrow shapes give strips of scalars only.
    [SkippableTheory]
    [InlineData("cpu", Precision.F32, 1e-6, 1e-3)]
    [InlineData("cpu", Precision.F64, 1e-12, 1e-9)]
    [InlineData("gpu", Precision.F32, 1e-6, 1e-3)]
    [InlineData("gpu", Precision.F64, 1e-12, 1e-9)]
    public void ForwardAndGradientsMatchTheReferenceOnOddShapes(string variant, Precision precision, double abs,
        double rel)
    {
        OpenClTestDevice.RequireOpenCl();
        if (precision == Precision.F64)
            Skip.IfNot(OpenClRuntime.SelectDevice(OpenClTestDevice.Device).SupportsDouble,
                "the device has no cl_khr_fp64");
        LabeledImages data = RandomImages(100, 1);
        foreach (int[] sizes in new[] { new[] { 784, 7, 10 }, [784, 33, 17, 10], [784, 130, 70, 10] })
        {
            MlpParameters w = MlpParameters.Initialize(sizes, 11);
            using ITrainingBackend reference = new ReferenceBackend<double>(sizes, OptimizerSettings.Gd);
            using OpenClBackend cl = Open(sizes, OptimizerSettings.Gd, 64, precision, variant);
            Assert.Equal(variant, cl.Variant.ToString().ToLowerInvariant());
            reference.Upload(data); cl.Upload(data);
            reference.SetWeights(w); cl.SetWeights(w);
            foreach (int n in new[] { 1, 13, 64 })
            {
                int[] batch = Batch(n, 1, data.Count);
                var gr = new MlpParameters(sizes);
                var gc = new MlpParameters(sizes);
                StepMetrics mr = reference.ComputeGradients(TrainingBatch.Of(batch), gr);
                StepMetrics mc = cl.ComputeGradients(TrainingBatch.Of(batch), gc);
                Assert.Equal(mr.Count, mc.Count);
                Assert.Equal(mr.Correct, mc.Correct);
                Assert.Equal(mr.LossSum, mc.LossSum, precision == Precision.F32 ? 4 : 9);
                for (int l = 0; l < sizes.Length - 1; l++)
                {
                    double diff = MaxScaledDiff(gr, gc, l, abs, rel);
                    output.WriteLine($"{variant} {precision} {string.Join('-', sizes)} batch {n} layer {l + 1}: " +
                                     $"max scaled gradient difference {diff:E2}");
                    Assert.True(diff <= 1, $"{string.Join('-', sizes)} batch {n} layer {l + 1}: {diff}");
                }
            }
            // the forward pass alone: probabilities of 37 images (not a multiple of the tile)
            int count = 37;
            byte[] images = data.Pixels.AsSpan(0, count * MlpParameters.InputSize).ToArray();
            var pr = new double[count * 10];
            var pc = new double[count * 10];
            reference.Predict(images, pr);
            cl.Predict(images, pc);
            double worst = pr.Zip(pc).Max(t => Math.Abs(t.First - t.Second));
            output.WriteLine($"{variant} {precision} {string.Join('-', sizes)}: max probability difference {worst:E2}");
            Assert.True(worst <= (precision == Precision.F32 ? 1e-5 : 1e-12), $"probabilities differ by {worst}");
        }
    }

    /// <summary>The fused whole-set kernels on hidden widths that are odd, tiny or wide and sample counts that are
    /// not multiples of any tile (nor of the sparse kernels' block of 8, nor of their work-item count): gradients,
    /// metrics and one step against the reference. The sparse widths cover one register chunk (1, 7, 16), chunks
    /// that repeat units (17 = 9 + 8, 33 = 11 x 3) and many chunks (128, 256).</summary>
    [SkippableTheory]
    [InlineData("cpu", 1, 37, KernelMode.Dense)]
    [InlineData("cpu", 7, 100, KernelMode.Dense)]
    [InlineData("cpu", 128, 129, KernelMode.Dense)]
    [InlineData("cpu", 256, 31, KernelMode.Dense)]
    [InlineData("cpu", 1, 37, KernelMode.Sparse)]
    [InlineData("cpu", 7, 100, KernelMode.Sparse)]
    [InlineData("cpu", 16, 3, KernelMode.Sparse)]
    [InlineData("cpu", 17, 61, KernelMode.Sparse)]
    [InlineData("cpu", 33, 250, KernelMode.Sparse)]
    [InlineData("cpu", 128, 129, KernelMode.Sparse)]
    [InlineData("cpu", 256, 31, KernelMode.Sparse)]
    [InlineData("gpu", 1, 37, KernelMode.Dense)]
    [InlineData("gpu", 33, 63, KernelMode.Dense)]
    [InlineData("gpu", 128, 129, KernelMode.Dense)]
    public void FusedKernelsMatchTheReferenceOnOddAndWideHiddenLayers(string variant, int hidden, int n,
        KernelMode kernel)
    {
        OpenClTestDevice.RequireOpenCl();
        int[] sizes = [784, hidden, 10];
        LabeledImages data = OpenClTestData.Images(n, seed: hidden);
        MlpParameters w = MlpParameters.Initialize(sizes, 2);
        using ITrainingBackend reference = new ReferenceBackend<double>(sizes, OptimizerSettings.Gd);
        using OpenClBackend cl = Open(sizes, OptimizerSettings.Gd, n, variant: variant, kernel: kernel);
        reference.Upload(data); cl.Upload(data);
        Assert.Equal(kernel, cl.KernelChoice!.Kernel);
        reference.SetWeights(w); cl.SetWeights(w);
        var gr = new MlpParameters(sizes);
        var gc = new MlpParameters(sizes);
        StepMetrics mr = reference.ComputeGradients(TrainingBatch.WholeSet, gr);
        StepMetrics mc = cl.ComputeGradients(TrainingBatch.WholeSet, gc);
        Assert.Equal(mr.Correct, mc.Correct);
        Assert.Equal(mr.LossSum / n, mc.LossSum / n, 4);
        for (int l = 0; l < 2; l++) Assert.True(MaxScaledDiff(gr, gc, l, 2e-5, 2e-3) <= 1, $"layer {l + 1}");
        reference.Step(TrainingBatch.WholeSet, 0.1, measure: false);
        cl.Step(TrainingBatch.WholeSet, 0.1, measure: false);
        double diff = OpenClTestData.MaxAbsDiff(reference.GetWeights(), cl.GetWeights());
        output.WriteLine($"{variant} {kernel} 784-{hidden}-10, n = {n}: max weight difference after one step " +
            $"{diff:E2}");
        Assert.InRange(diff, 0, 1e-5);
    }

    /// <summary>The same whole set through the fused kernels (WholeSet) and the per-layer kernels (every index):
    /// the same gradients and metrics from one backend object.</summary>
    [SkippableTheory]
    [InlineData("cpu")]
    [InlineData("gpu")]
    public void FusedAndPerLayerKernelsAgreeOnTheWholeSet(string variant)
    {
        OpenClTestDevice.RequireOpenCl();
        int[] sizes = [784, 33, 10];
        LabeledImages data = OpenClTestData.Images(90, seed: 4);
        using OpenClBackend cl = Open(sizes, OptimizerSettings.Gd, 90, variant: variant);
        cl.Upload(data);
        cl.SetWeights(MlpParameters.Initialize(sizes, 4));
        var fused = new MlpParameters(sizes);
        var perLayer = new MlpParameters(sizes);
        StepMetrics mf = cl.ComputeGradients(TrainingBatch.WholeSet, fused);
        StepMetrics ml = cl.ComputeGradients(TrainingBatch.Of(Enumerable.Range(0, 90).ToArray()), perLayer);
        Assert.Equal(mf.Correct, ml.Correct);
        Assert.Equal(mf.LossSum, ml.LossSum, 3);
        for (int l = 0; l < 2; l++) Assert.True(MaxScaledDiff(fused, perLayer, l, 1e-6, 1e-3) <= 1, $"layer {l + 1}");
    }

    [SkippableTheory]
    [InlineData("cpu")]
    [InlineData("gpu")]
    public void EveryOptimizerStepsLikeTheReference(string variant)
    {
        OpenClTestDevice.RequireOpenCl();
        int[] sizes = [784, 33, 17, 10];
        LabeledImages data = RandomImages(100, 2);
        MlpParameters w = MlpParameters.Initialize(sizes, 5);
        foreach (OptimizerKind kind in Enum.GetValues<OptimizerKind>())
        {
            var o = new OptimizerSettings(kind, WeightDecay: 1e-3);
            double lr = kind == OptimizerKind.Adam ? 1e-3 : 0.05;
            using ITrainingBackend reference = new ReferenceBackend<double>(sizes, o);
            using OpenClBackend cl = Open(sizes, o, 64, variant: variant);
            reference.Upload(data); cl.Upload(data);
            reference.SetWeights(w); cl.SetWeights(w);
            for (int step = 0; step < 5; step++)
            {
                int[] batch = Batch(step % 2 == 0 ? 13 : 64, step, data.Count);
                StepMetrics mr = reference.Step(TrainingBatch.Of(batch), lr, measure: true);
                StepMetrics mc = cl.Step(TrainingBatch.Of(batch), lr, measure: step % 2 == 0);
                if (step % 2 == 0)
                {
                    Assert.Equal(mr.Correct, mc.Correct);
                    Assert.Equal(mr.LossSum, mc.LossSum, 4);
                }
                else Assert.Equal(default, mc);
                if (step is 0 or 4)
                {
                    double diff = MaxDiffWithState(reference, cl, 1e-5, 1e-3);
                    output.WriteLine($"{variant} {kind} after {step + 1} step(s): " +
                                     $"max scaled weight / moment difference {diff:E2}");
                    Assert.True(diff <= 1, $"{kind} after {step + 1} step(s): {diff}");
                }
            }
            Assert.Equal(reference.GetOptimizerState().Steps, cl.GetOptimizerState().Steps);
        }
    }

    [SkippableFact]
    public void OptimizerStateRoundTripsIntoAFreshBackendAndNothingLeaks()
    {
        OpenClTestDevice.RequireOpenCl();
        int before = OpenClRuntime.LiveObjectCount;
        int[] sizes = [784, 33, 17, 10];
        LabeledImages data = RandomImages(100, 3);
        var o = new OptimizerSettings(OptimizerKind.Adam, WeightDecay: 1e-4);
        MlpParameters init = MlpParameters.Initialize(sizes, 4);
        void Steps(OpenClBackend b, int from, int to)
        {
            for (int step = from; step < to; step++)
                b.Step(TrainingBatch.Of(Batch(13, step, data.Count)), 2e-3, measure: false);
        }

        MlpParameters whole;
        using (OpenClBackend straight = Open(sizes, o, 13))
        {
            straight.Upload(data);
            straight.SetWeights(init);
            Steps(straight, 0, 6);
            whole = straight.GetWeights();
        }
        MlpParameters weights;
        OptimizerState state;
        using (OpenClBackend first = Open(sizes, o, 13))
        {
            first.Upload(data);
            first.SetWeights(init);
            Steps(first, 0, 3);
            weights = first.GetWeights();
            state = first.GetOptimizerState();
        }
        Assert.Equal(3, state.Steps);
        Assert.Equal(2, state.Moments.Length);
        using (OpenClBackend second = Open(sizes, o, 13))
        {
            second.Upload(data);
            second.SetWeights(weights);
            second.SetOptimizerState(state);
            Steps(second, 3, 6);
            // float32 values survive the float64 round trip exactly and the kernels have no atomics: bitwise equal
            Assert.Equal(0, OpenClTestData.MaxAbsDiff(whole, second.GetWeights()));
            Assert.Throws<ArgumentException>(() => second.SetOptimizerState(new OptimizerState(1, [])));
            Assert.Throws<ArgumentException>(() => second.SetWeights(MlpParameters.Initialize([784, 33, 10], 0)));
            Assert.Throws<ArgumentException>(() =>
                second.Step(TrainingBatch.Of(new int[second.MaxBatch + 1]), 1e-3, false));
            Assert.Throws<ArgumentOutOfRangeException>(() => second.Step(TrainingBatch.Of([0, 100]), 1e-3, false));
            // a whole-set Adam step runs on the per-layer kernels: the 100 samples fit their 256-row minimum
            Assert.Equal(100, second.Step(TrainingBatch.WholeSet, 1e-3, measure: true).Count);
        }
        Assert.Equal(before, OpenClRuntime.LiveObjectCount);
    }

    [SkippableFact]
    public void AWholeSetLargerThanMaxBatchOnThePerLayerKernelsIsAClearError()
    {
        OpenClTestDevice.RequireOpenCl();
        using OpenClBackend cl = Open([784, 8, 8, 10], OptimizerSettings.Gd, 16);
        cl.Upload(RandomImages(300, 9));
        cl.SetWeights(MlpParameters.Initialize([784, 8, 8, 10], 9));
        var e = Assert.Throws<ArgumentException>(() => cl.Step(TrainingBatch.WholeSet, 0.1, measure: false));
        Assert.Contains("MaxBatch", e.Message);
        Assert.Throws<InvalidOperationException>(() =>
        {
            using OpenClBackend empty = Open([784, 8, 10], OptimizerSettings.Gd, 16);
            empty.Step(TrainingBatch.WholeSet, 0.1, measure: false);
        });
    }

    /// <summary>--kernel goes through to opencl: its CPU variant runs what was asked and says so (auto takes sparse
    /// on digits); the GPU variant has no sparse kernels, a clear error.</summary>
    [SkippableFact]
    public void TrainOnOpenClSaysWhichLayer1KernelRanAndWhy()
    {
        OpenClTestDevice.RequireOpenCl();
        string dir = Directory.CreateTempSubdirectory("mnistnative-clkernel-").FullName;
        foreach (string kernel in new[] { "auto", "dense", "sparse" })
        {
            var (code, stdout, stderr) = CliTests.Run("train", "--backend", "opencl", "--opencl-variant", "cpu",
                "--kernel", kernel, "--train-count", "300", "--iterations", "3",
                "--data", TestPaths.MnistDir, "--out", Path.Combine(dir, $"{kernel}.npz"), "--json", "--profile");
            Assert.True(code == 0, stderr);
            string ran = kernel == "dense" ? "dense" : "sparse";
            Assert.Contains($"kernel {ran}: {(kernel == "auto" ? "auto: " : $"forced by --kernel {kernel} (")}",
                stderr);
            Assert.Contains(ran == "sparse" ? "device: sparse_weight_gradient_cpu" : "device: forward_backward_cpu",
                stderr);
            using var doc = JsonDocument.Parse(stdout);
            Assert.Equal(ran, doc.RootElement.GetProperty("kernel").GetString());
        }
        var (gpuCode, gpuOut, gpuErr) = CliTests.Run("train", "--backend", "opencl", "--opencl-variant", "gpu",
            "--kernel", "sparse", "--data", TestPaths.MnistDir, "--out", Path.Combine(dir, "gpu.npz"));
        Assert.Equal(ExitCodes.BadInput, gpuCode);
        Assert.Contains("GPU kernel variant has no sparse kernels", gpuErr);
        Assert.Equal("", gpuOut);
        Directory.Delete(dir, recursive: true);
    }

    [SkippableFact]
    public void CliTrainsADeepNetWithAdamOnOpenCl()
    {
        OpenClTestDevice.RequireOpenCl();
        string dir = Directory.CreateTempSubdirectory("mnistnative-clmb-").FullName;
        try
        {
            var (code, stdout, stderr) = CliTests.Run("train", "--backend", "opencl", "--hidden", "32,16",
                "--batch-size", "64", "--epochs", "1", "--train-count", "2000", "--optimizer", "adam", "--lr", "0.003",
                "--json", "--data", TestPaths.MnistDir, "--out", Path.Combine(dir, "m.npz"));
            Assert.True(code == 0, stderr);
            output.WriteLine(stderr);
            using var doc = JsonDocument.Parse(stdout);
            JsonElement root = doc.RootElement;
            Assert.Equal("opencl", root.GetProperty("backend").GetString());
            Assert.Equal([784, 32, 16, 10], root.GetProperty("sizes").EnumerateArray().Select(e => e.GetInt32()));
            Assert.Equal(32, root.GetProperty("steps").GetInt64());
            double accuracy = root.GetProperty("test_accuracy").GetDouble();
            output.WriteLine($"test accuracy after one epoch on 2000 images: {accuracy:F4}");
            Assert.InRange(accuracy, 0.7, 1);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData(784, 64, 256, 4, 16)]
    [InlineData(784, 64, 128, 4, 16)]
    [InlineData(10, 4, 512, 4, 16)]
    [InlineData(33, 64, 1, 4, 16)]
    [InlineData(256, 4, 1, 4, 16)]
    [InlineData(7, 4, 13, 4, 1)]
    public void CpuWorkSplitCoversTheOutputInAlignedRectangles(int x, int xStep, int y, int yStep, int target)
    {
        (int xPer, int yPer) = LayerKernels.Split(x, xStep, y, yStep, target);
        Assert.Equal(0, xPer % xStep);
        Assert.Equal(0, yPer % yStep);
        Assert.InRange(xPer, xStep, (x + xStep - 1) / xStep * xStep);
        Assert.InRange(yPer, yStep, (y + yStep - 1) / yStep * yStep);
        long items = (long)((x + xPer - 1) / xPer) * ((y + yPer - 1) / yPer);
        long most = (long)((x + xStep - 1) / xStep) * ((y + yStep - 1) / yStep);
        // enough items when the output has them, and no more than about twice the target (one halving too many)
        Assert.InRange(items, Math.Min(target, most), Math.Max(2L * target, 4));
    }

    private static double MaxScaledDiff(MlpParameters a, MlpParameters b, int l, double abs, double rel)
    {
        double worst = 0;
        foreach (var (x, y) in a.W[l].Zip(b.W[l]).Concat(a.B[l].Zip(b.B[l])))
            worst = Math.Max(worst, Math.Abs(x - y) / (abs + rel * Math.Abs(x)));
        return worst;
    }

    private static double MaxScaledDiff(MlpParameters a, MlpParameters b, double abs, double rel) =>
        Enumerable.Range(0, a.LayerCount).Max(l => MaxScaledDiff(a, b, l, abs, rel));

    private static double MaxDiffWithState(ITrainingBackend reference, ITrainingBackend cl, double abs, double rel)
    {
        double worst = MaxScaledDiff(reference.GetWeights(), cl.GetWeights(), abs, rel);
        OptimizerState sr = reference.GetOptimizerState(), sc = cl.GetOptimizerState();
        for (int k = 0; k < sr.Moments.Length; k++)
        {
            // Adam's second moments are squares of gradients (about 1e-6): scale their absolute tolerance with them
            double momentAbs = k == 1 ? abs * abs : abs;
            worst = Math.Max(worst, MaxScaledDiff(sr.Moments[k], sc.Moments[k], momentAbs, rel));
        }
        return worst;
    }
}

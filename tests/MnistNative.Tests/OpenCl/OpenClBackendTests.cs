using System.Diagnostics;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.OpenCl;

[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClBackendTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void ListsEveryDeviceWithItsLimits()
    {
        OpenClTestDevice.RequireOpenCl();
        IReadOnlyList<OpenClDeviceInfo> devices = OpenClRuntime.ListDevices();
        Assert.NotEmpty(devices);
        foreach (OpenClDeviceInfo d in devices)
        {
            output.WriteLine(d.ToString());
            Assert.False(string.IsNullOrEmpty(d.Name));
            Assert.True(d.ComputeUnits > 0);
            Assert.True(d.GlobalMemoryBytes > 0);
            Assert.True(d.MaxWorkGroupSize > 0);
            Assert.StartsWith("OpenCL C", d.OpenClCVersion);
        }
        Assert.True(OpenClRuntime.TryProbe(out string reason));
        output.WriteLine(reason);
    }

    [Fact]
    public void AMissingLoaderIsAReasonNotACrash()
    {
        Assert.False(OpenClRuntime.TryProbeLibrary("libMnistNativeNoSuchOpenCL.so.1", out string reason));
        output.WriteLine(reason);
        Assert.Contains("libOpenCL.so.1", reason);
        Assert.Contains("apt-get install ocl-icd-libopencl1 pocl-opencl-icd", reason);
    }

    [SkippableFact]
    public void AWrongDeviceIndexListsTheDevicesThatExist()
    {
        OpenClTestDevice.RequireOpenCl();
        int before = OpenClRuntime.LiveObjectCount;
        var e = Assert.Throws<BackendUnavailableException>(() => Open10(new OpenClBackendOptions { Device = "7:3" }));
        output.WriteLine(e.Message);
        Assert.Contains("no OpenCL device 7:3", e.Message);
        Assert.Contains(OpenClRuntime.ListDevices()[0].Id + " " + OpenClRuntime.ListDevices()[0].Name, e.Message);
        var byName = Assert.Throws<BackendUnavailableException>(() =>
            Open10(new OpenClBackendOptions { Device = "no-such-device" }));
        Assert.Contains("no OpenCL device matches 'no-such-device'", byName.Message);
        Assert.Equal(before, OpenClRuntime.LiveObjectCount);
    }

    [SkippableFact]
    public void ADeviceCanBeChosenByNameOrIndex()
    {
        OpenClTestDevice.RequireOpenCl();
        OpenClDeviceInfo first = OpenClRuntime.ListDevices()[0];
        Assert.Equal(first.Id, OpenClRuntime.SelectDevice(first.Id).Id);
        string partOfName = first.Name[..Math.Min(6, first.Name.Length)].ToUpperInvariant();
        Assert.Equal(first.Id, OpenClRuntime.SelectDevice(partOfName).Id);
    }

    [SkippableFact]
    public void AKernelThatFailsToBuildReportsTheBuildLog()
    {
        OpenClTestDevice.RequireOpenCl();
        string dir = CopyKernels();
        try
        {
            string path = Path.Combine(dir, "forward_backward_cpu.cl");
            File.WriteAllText(path, File.ReadAllText(path).Replace("int correct = 0;", "int correct = 0 +;"));
            int before = OpenClRuntime.LiveObjectCount;
            var options = new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = "cpu" };
            var e = Assert.Throws<OpenClException>(() => Open10(options with { KernelsDirectory = dir }));
            output.WriteLine(e.Message);
            Assert.Equal(-11, e.Code);
            Assert.StartsWith("clBuildProgram failed: CL_BUILD_PROGRAM_FAILURE (-11)", e.Message);
            Assert.Contains("build log:", e.Message);
            Assert.Contains("forward_backward_cpu.cl:", e.Message); // the compiler's own line, located by #line
            Assert.Equal(before, OpenClRuntime.LiveObjectCount);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [SkippableFact]
    public void APerLayerKernelThatFailsToBuildReportsTheBuildLogAndLeaksNothing()
    {
        OpenClTestDevice.RequireOpenCl();
        string dir = CopyKernels();
        try
        {
            string path = Path.Combine(dir, "minibatch.cl");
            File.WriteAllText(path, File.ReadAllText(path).Replace("real sum = 0;", "real sum = 0 +;"));
            int before = OpenClRuntime.LiveObjectCount;
            var e = Assert.Throws<OpenClException>(() => new OpenClBackend([784, 16, 8, 10], OptimizerSettings.Gd, 32,
                new OpenClBackendOptions { Device = OpenClTestDevice.Device, KernelsDirectory = dir }));
            output.WriteLine(e.Message);
            Assert.Equal(-11, e.Code);
            Assert.Contains("minibatch.cl:", e.Message);
            Assert.Equal(before, OpenClRuntime.LiveObjectCount);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [SkippableFact]
    public void KernelsLoadFromADirectoryAsFromTheAssembly()
    {
        OpenClTestDevice.RequireOpenCl();
        string dir = CopyKernels();
        try
        {
            LabeledImages data = OpenClTestData.Images(50, seed: 5);
            foreach (int[] sizes in new[] { new[] { 784, 10, 10 }, [784, 12, 9, 10] })
            {
                MlpParameters weights = MlpParameters.Initialize(sizes, 5);
                var fromAssembly = new MlpParameters(sizes);
                var fromDirectory = new MlpParameters(sizes);
                var embedded = new OpenClBackendOptions { Device = OpenClTestDevice.Device };
                using (var a = Open(sizes, embedded, data, weights))
                    a.ComputeGradients(TrainingBatch.WholeSet, fromAssembly);
                using (var b = Open(sizes, embedded with { KernelsDirectory = dir }, data, weights))
                    b.ComputeGradients(TrainingBatch.WholeSet, fromDirectory);
                Assert.Equal(fromAssembly.W[0], fromDirectory.W[0]);
                Assert.Contains(fromAssembly.W[0], v => v != 0);
            }
            Assert.Throws<FileNotFoundException>(() =>
                Open10(new OpenClBackendOptions { KernelsDirectory = Path.Combine(dir, "missing") }));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [SkippableFact]
    public void AnUnknownVariantIsAClearError()
    {
        OpenClTestDevice.RequireOpenCl();
        var e = Assert.Throws<ArgumentException>(() => Open10(new OpenClBackendOptions { Variant = "fpga" }));
        Assert.Contains("unknown OpenCL kernel variant 'fpga'", e.Message);
    }

    /// <summary>
    /// Whole-set gradient-descent steps run the fused kernels and sampled steps the per-layer ones; with a
    /// profiler attached each kernel gets a "device: NAME" row per launch and the host its transfers and gathers.
    /// Without Profiling in the options the rows are the host's only; without a profiler nothing is recorded.
    /// </summary>
    [SkippableFact]
    public void ProfilingRecordsEveryKernelLaunchAndTheTransfersOnBothPaths()
    {
        OpenClTestDevice.RequireOpenCl();
        LabeledImages data = OpenClTestData.Images(100, seed: 6);
        MlpParameters weights = MlpParameters.Initialize([784, 10, 10], 6);
        var options = new OpenClBackendOptions { Device = OpenClTestDevice.Device, Profiling = true };
        using var backend = Open([784, 10, 10], options, data, weights);
        var profiler = new Profiler();
        backend.Profiler = profiler;
        backend.SetWeights(weights);
        for (int i = 0; i < 5; i++) backend.Step(TrainingBatch.WholeSet, 0.1, measure: i == 4);
        int[] batch = Enumerable.Range(0, 16).ToArray();
        for (int i = 0; i < 3; i++) backend.Step(TrainingBatch.Of(batch), 0.1, measure: false);
        backend.Synchronize();
        backend.Profiler = null;
        backend.Step(TrainingBatch.WholeSet, 0.1, measure: true); // not recorded
        IReadOnlyList<PhaseStat> rows = profiler.Summary();
        foreach (PhaseStat r in rows)
            output.WriteLine($"{r.Phase,-40} {r.Calls,5} calls {r.TotalMilliseconds,9:F3} ms");
        string fused = backend.Variant == OpenClVariant.Cpu ? "forward_backward_cpu" : "forward_backward_gpu";
        Assert.Equal(5, rows.Single(r => r.Phase == Phases.DevicePrefix + fused).Calls);
        Assert.Equal(5, rows.Single(r => r.Phase == Phases.DevicePrefix + "reduce_update").Calls);
        string layerForward = backend.Variant == OpenClVariant.Cpu ? "layer_forward_cpu" : "layer_forward";
        Assert.Equal(3 * 2, rows.Single(r => r.Phase == Phases.DevicePrefix + layerForward).Calls);
        Assert.Equal(3, rows.Single(r => r.Phase == Phases.DevicePrefix + "softmax_cross_entropy_backward").Calls);
        Assert.Equal(3 * 4, rows.Single(r => r.Phase == Phases.DevicePrefix + "gd_update").Calls);
        Assert.Equal(3, rows.Single(r => r.Phase == Phases.Gather).Calls);
        Assert.Equal(1, rows.Single(r => r.Phase == Phases.TransferFromDevice).Calls); // the measuring step's metrics
        // w1, b1, w2, b2, and the per-layer kernels' index table when they open
        Assert.Equal(5, rows.Single(r => r.Phase == Phases.TransferToDevice).Calls);
        Assert.All(rows.Where(r => r.Phase.StartsWith(Phases.DevicePrefix)), r => Assert.True(r.TotalMilliseconds > 0));

        using var hostOnly = Open([784, 10, 10], options with { Profiling = false }, data, weights);
        var hostProfiler = new Profiler();
        hostOnly.Profiler = hostProfiler;
        hostOnly.Step(TrainingBatch.WholeSet, 0.1, measure: true);
        hostOnly.Synchronize();
        Assert.Contains(hostProfiler.Summary(), r => r.Phase == Phases.TransferFromDevice);
        Assert.DoesNotContain(hostProfiler.Summary(), r => r.Phase.StartsWith(Phases.DevicePrefix));
    }

    [SkippableFact]
    public void KernelChoiceSaysWhichPathRunsAfterUpload()
    {
        OpenClTestDevice.RequireOpenCl();
        LabeledImages data = OpenClTestData.Images(40, seed: 8);
        using var seedShape = new OpenClBackend([784, 10, 10], OptimizerSettings.Gd, 40,
            new OpenClBackendOptions { Device = OpenClTestDevice.Device });
        Assert.Null(seedShape.KernelChoice);
        seedShape.Upload(data);
        Assert.Equal(KernelMode.Dense, seedShape.KernelChoice!.Kernel);
        Assert.Contains("of the pixel columns", seedShape.KernelChoice.Reason);
        Assert.InRange(seedShape.KernelChoice.Density, 0.01, 0.5);
        using var deep = new OpenClBackend([784, 10, 10, 10], OptimizerSettings.Gd, 40,
            new OpenClBackendOptions { Device = OpenClTestDevice.Device });
        deep.Upload(data);
        Assert.Equal("per-layer path", deep.KernelChoice!.Reason);
    }

    /// <summary>
    /// Auto on the CPU variant: digits (most pixels zero, blocks of similar digits keep few columns) get the
    /// sparse kernels; images without a zero pixel (standardised data) and random 80 %-zero images (whose blocks
    /// of 8 keep most columns) get the dense kernel; the reason says which and why.
    /// </summary>
    [SkippableFact]
    public void AutoTakesSparseOnDigitsAndDenseOnDenseData()
    {
        OpenClTestDevice.RequireOpenCl();
        var options = new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = "cpu" };
        var noZeros = new byte[300 * 784];
        new Random(3).NextBytes(noZeros);
        for (int i = 0; i < noZeros.Length; i++) noZeros[i] = (byte)Math.Max(1, (int)noZeros[i]);
        var cases = new (LabeledImages Data, KernelMode Want, string Why)[]
        {
            (TestPaths.Train.Take(1000), KernelMode.Sparse, "auto: "),
            (new LabeledImages(noZeros, new byte[300]), KernelMode.Dense, "100.0 % of the training pixels"),
            (OpenClTestData.Images(300, seed: 5), KernelMode.Dense, "not under 50"),
        };
        MlpParameters weights = MlpParameters.Initialize([784, 10, 10], 1);
        foreach (var (data, want, why) in cases)
        {
            using OpenClBackend backend = Open([784, 10, 10], options, data, weights);
            output.WriteLine($"{want}: {backend.KernelChoice!.Reason}");
            Assert.Equal(want, backend.KernelChoice.Kernel);
            Assert.StartsWith("auto: ", backend.KernelChoice.Reason);
            Assert.Contains(why, backend.KernelChoice.Reason);
            backend.Step(TrainingBatch.WholeSet, 0.1, measure: true);
        }
    }

    /// <summary>The GPU variant has no sparse kernels: forcing them is a clear error when the backend opens; auto
    /// and dense say in the reason that the GPU kernels are dense.</summary>
    [SkippableFact]
    public void TheGpuVariantIsDenseAndSaysSo()
    {
        OpenClTestDevice.RequireOpenCl();
        var options = new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = "gpu" };
        var e = Assert.Throws<BackendUnavailableException>(() =>
            new OpenClBackend([784, 10, 10], OptimizerSettings.Gd, 100, options with { Kernel = KernelMode.Sparse }));
        Assert.Contains("GPU kernel variant has no sparse kernels", e.Message);
        using OpenClBackend backend = Open([784, 10, 10], options, TestPaths.Train.Take(100),
            MlpParameters.Initialize([784, 10, 10], 1));
        Assert.Equal(KernelMode.Dense, backend.KernelChoice!.Kernel);
        Assert.Contains("GPU variant's fused kernels are dense", backend.KernelChoice.Reason);
    }

    /// <summary>The sparse kernels' steps are bitwise repeatable (each work-item sums a fixed range in a fixed
    /// order), and the profiler shows their two kernels once per step (the gradient kernel also reduces the
    /// partials: no reduce_update).</summary>
    [SkippableFact]
    public void SparseStepsAreDeterministicAndProfiledPerKernel()
    {
        OpenClTestDevice.RequireOpenCl();
        LabeledImages data = TestPaths.Train.Take(501);
        MlpParameters weights = MlpParameters.Initialize([784, 10, 10], 7);
        var options = new OpenClBackendOptions
        {
            Device = OpenClTestDevice.Device, Variant = "cpu", Kernel = KernelMode.Sparse, Profiling = true,
        };
        using OpenClBackend first = Open([784, 10, 10], options, data, weights);
        using OpenClBackend second = Open([784, 10, 10], options, data, weights);
        var profiler = new Profiler();
        first.Profiler = profiler;
        var metrics = new List<StepMetrics>();
        foreach (OpenClBackend b in new[] { first, second })
            for (int i = 0; i < 4; i++) metrics.Add(b.Step(TrainingBatch.WholeSet, 0.5, measure: i == 3));
        first.Synchronize();
        Assert.Equal(0, TrainingBackendConformanceDiff(first.GetWeights(), second.GetWeights()));
        Assert.Equal(metrics[3], metrics[7]);
        Assert.Equal(501, metrics[3].Count);
        IReadOnlyList<PhaseStat> rows = profiler.Summary();
        foreach (string kernel in new[] { "sparse_forward_cpu", "sparse_weight_gradient_cpu" })
            Assert.Equal(4, rows.Single(r => r.Phase == Phases.DevicePrefix + kernel).Calls);
        foreach (string kernel in new[] { "forward_backward_cpu", "reduce_update" })
            Assert.DoesNotContain(rows, r => r.Phase == Phases.DevicePrefix + kernel);
    }

    [Theory]
    [InlineData(100, 6)]
    [InlineData(5, 6)]
    [InlineData(784, 1)]
    public void SparseWorkSplitsIntoConsecutiveRangesOfAboutEqualWeight(int count, int parts)
    {
        Func<int, long> weight = i => 1 + i % 7 * 10;
        int[] bounds = FusedKernels.Split(count, parts, weight);
        Assert.Equal(parts + 1, bounds.Length);
        Assert.Equal(0, bounds[0]);
        Assert.Equal(count, bounds[^1]);
        long total = Enumerable.Range(0, count).Sum(i => weight(i)), heaviest = 61;
        for (int p = 0; p < parts; p++)
        {
            Assert.True(bounds[p] <= bounds[p + 1]);
            long part = Enumerable.Range(bounds[p], bounds[p + 1] - bounds[p]).Sum(i => weight(i));
            if (count >= parts * 10) Assert.InRange(part, total / parts - heaviest, total / parts + heaviest);
        }
    }

    [Theory]
    [InlineData(1, 16, 1)]
    [InlineData(10, 16, 10)]
    [InlineData(16, 16, 16)]
    [InlineData(17, 16, 9)]
    [InlineData(33, 16, 11)]
    [InlineData(128, 16, 16)]
    [InlineData(10, 12, 10)]
    [InlineData(13, 12, 7)]
    [InlineData(128, 12, 12)]
    public void SparseHiddenChunksHoldAtMostTheLimitAndRepeatFew(int hidden, int most, int chunk) =>
        Assert.Equal(chunk, FusedKernels.HiddenChunk(hidden, most));

    private static double TrainingBackendConformanceDiff(MlpParameters a, MlpParameters b) =>
        Conformance.TrainingBackendConformance.MaxDiff(a, b, 0, 0, exact: true);

    internal static OpenClBackend Open(int[] sizes, OpenClBackendOptions options, LabeledImages data,
        MlpParameters weights)
    {
        var backend = new OpenClBackend(sizes, OptimizerSettings.Gd, data.Count, options);
        backend.Upload(data);
        backend.SetWeights(weights);
        return backend;
    }

    private static OpenClBackend Open10(OpenClBackendOptions options) =>
        new([784, 10, 10], OptimizerSettings.Gd, 100, options);

    /// <summary>A scratch copy of the repository's kernel sources, for the --kernels DIR path.</summary>
    private static string CopyKernels()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mnistnative-kernels-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        foreach (string f in Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "native", "opencl"), "*.cl"))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }
}

/// <summary>
/// The leak check reads the whole process's resident memory, so it runs alone (the serial collection runs after the
/// parallel ones): other test classes allocating at the same time made the reading meaningless.
/// </summary>
[Collection(nameof(SerialCollection))]
public sealed class OpenClLeakTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void CreatingAndDisposing200BackendsLeaksNothing()
    {
        OpenClTestDevice.RequireOpenCl();
        LabeledImages data = OpenClTestData.Images(40, seed: 7);
        MlpParameters weights = MlpParameters.Initialize([784, 10, 10], 7);
        int liveBefore = OpenClRuntime.LiveObjectCount;
        var probs = new double[40 * 10];
        int[] batch = [3, 1, 4, 1, 5];
        void Cycle()
        {
            using var backend = OpenClBackendTests.Open([784, 10, 10],
                new OpenClBackendOptions { Device = OpenClTestDevice.Device }, data, weights);
            backend.Step(TrainingBatch.WholeSet, 0.1, measure: true);
            backend.Step(TrainingBatch.Of(batch), 0.1, measure: true); // the per-layer kernels too
            backend.Predict(data.Pixels, probs);
            Assert.True(OpenClRuntime.LiveObjectCount > liveBefore);
        }
        // Warm-up: PoCL's compiler, kernel cache and the runtime's allocators settle in the first cycles.
        for (int i = 0; i < 20; i++) Cycle();
        long rssBefore = Rss();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < 200; i++) Cycle();
        long rssAfter = Rss();
        output.WriteLine($"200 create/step/predict/dispose cycles in {clock.Elapsed.TotalSeconds:F1} s; " +
                         $"RSS {rssBefore >> 20} -> {rssAfter >> 20} MiB; " +
                         $"live OpenCL objects {OpenClRuntime.LiveObjectCount} (before {liveBefore})");
        Assert.Equal(liveBefore, OpenClRuntime.LiveObjectCount);
        Assert.InRange(rssAfter - rssBefore, long.MinValue, 48L << 20);
    }

    private static long Rss()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var process = Process.GetCurrentProcess();
        process.Refresh();
        return process.WorkingSet64;
    }
}

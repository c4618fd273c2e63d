using System.Diagnostics;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using MnistNative.Tests.Conformance;
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
        var e = Assert.Throws<BackendUnavailableException>(() => new OpenClBackend(10, new OpenClBackendOptions { Device = "7:3" }));
        output.WriteLine(e.Message);
        Assert.Contains("no OpenCL device 7:3", e.Message);
        Assert.Contains(OpenClRuntime.ListDevices()[0].Id + " " + OpenClRuntime.ListDevices()[0].Name, e.Message);
        var byName = Assert.Throws<BackendUnavailableException>(() => new OpenClBackend(10, new OpenClBackendOptions { Device = "no-such-device" }));
        Assert.Contains("no OpenCL device matches 'no-such-device'", byName.Message);
        Assert.Equal(before, OpenClRuntime.LiveObjectCount);
    }

    [SkippableFact]
    public void ADeviceCanBeChosenByNameOrIndex()
    {
        OpenClTestDevice.RequireOpenCl();
        OpenClDeviceInfo first = OpenClRuntime.ListDevices()[0];
        Assert.Equal(first.Id, OpenClRuntime.SelectDevice(first.Id).Id);
        Assert.Equal(first.Id, OpenClRuntime.SelectDevice(first.Name[..Math.Min(6, first.Name.Length)].ToUpperInvariant()).Id);
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
            var e = Assert.Throws<OpenClException>(() => new OpenClBackend(10, new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = "cpu", KernelsDirectory = dir }));
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
    public void KernelsLoadFromADirectoryAsFromTheAssembly()
    {
        OpenClTestDevice.RequireOpenCl();
        string dir = CopyKernels();
        try
        {
            var (data, weights) = BackendConformance.RandomProblem(10, 50, seed: 5);
            var fromAssembly = MlpParameters.ForHidden(10);
            var fromDirectory = MlpParameters.ForHidden(10);
            using (var a = Open(new OpenClBackendOptions { Device = OpenClTestDevice.Device }, data, weights)) a.ComputeGradients(fromAssembly);
            using (var b = Open(new OpenClBackendOptions { Device = OpenClTestDevice.Device, KernelsDirectory = dir }, data, weights)) b.ComputeGradients(fromDirectory);
            Assert.Equal(fromAssembly.W[0], fromDirectory.W[0]);
            Assert.Throws<FileNotFoundException>(() => new OpenClBackend(10, new OpenClBackendOptions { KernelsDirectory = Path.Combine(dir, "missing") }));
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
        var e = Assert.Throws<ArgumentException>(() => new OpenClBackend(10, new OpenClBackendOptions { Variant = "fpga" }));
        Assert.Contains("unknown OpenCL kernel variant 'fpga'", e.Message);
    }

    [SkippableFact]
    public void ProfilingCountsEveryKernelLaunch()
    {
        OpenClTestDevice.RequireOpenCl();
        var (data, weights) = BackendConformance.RandomProblem(10, 100, seed: 6);
        using var backend = Open(new OpenClBackendOptions { Device = OpenClTestDevice.Device, Profiling = true }, data, weights);
        for (int i = 0; i < 5; i++) backend.Step(0.1, measure: i == 4);
        IReadOnlyList<KernelTiming> profile = backend.GetKernelProfile();
        foreach (KernelTiming t in profile) output.WriteLine($"{t.Name,-24} {t.Calls,5} calls {t.TotalMilliseconds,9:F3} ms");
        Assert.Equal(5, profile.Single(t => t.Name.StartsWith("forward_backward_")).Calls);
        Assert.Equal(5, profile.Single(t => t.Name == "reduce_update").Calls);
        Assert.All(profile, t => Assert.True(t.TotalMilliseconds > 0));
        using var plain = Open(new OpenClBackendOptions { Device = OpenClTestDevice.Device }, data, weights);
        Assert.Throws<InvalidOperationException>(() => plain.GetKernelProfile());
    }

    internal static OpenClBackend Open(OpenClBackendOptions options, LabeledImages data, MlpParameters weights)
    {
        var backend = new OpenClBackend(weights.Hidden, options);
        backend.Upload(data);
        backend.SetWeights(weights);
        return backend;
    }


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
        var (data, weights) = BackendConformance.RandomProblem(10, 40, seed: 7);
        int liveBefore = OpenClRuntime.LiveObjectCount;
        var probs = new double[40 * 10];
        void Cycle()
        {
            using var backend = OpenClBackendTests.Open(new OpenClBackendOptions { Device = OpenClTestDevice.Device }, data, weights);
            backend.Step(0.1, measure: true);
            backend.Predict(data.Pixels, probs);
            Assert.True(OpenClRuntime.LiveObjectCount > liveBefore);
        }
        // Warm-up: PoCL's compiler, kernel cache and the runtime's allocators settle in the first cycles.
        for (int i = 0; i < 20; i++) Cycle();
        long rssBefore = Rss();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < 200; i++) Cycle();
        long rssAfter = Rss();
        output.WriteLine($"200 create/step/predict/dispose cycles in {clock.Elapsed.TotalSeconds:F1} s; RSS {rssBefore >> 20} -> {rssAfter >> 20} MiB; live OpenCL objects {OpenClRuntime.LiveObjectCount} (before {liveBefore})");
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

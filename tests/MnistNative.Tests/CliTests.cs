using System.Text.Json;
using MnistNative.Cli;
using MnistNative.Core;
using MnistNative.Data;
using Xunit;

namespace MnistNative.Tests;

/// <summary>The command line, run in-process: exit codes, one-line messages, --json, files written or not.</summary>
public sealed class CliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = new CliApp(stdout, stderr).Run(args);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private string Path_(string name) => Path.Combine(_dir, name);

    [Theory]
    [InlineData("--hidden", "0", "--hidden must be between 1 and 4096, got 0")]
    [InlineData("--train-count", "60001", "--train-count must be between 1 and 60000, got 60001")]
    [InlineData("--iterations", "-5", "--iterations must be between 0 and 10000000, got -5")]
    [InlineData("--lr", "-0.1", "--lr must be a positive number, got -0.1")]
    [InlineData("--log-every", "0", "--log-every must be between 1 and")]
    [InlineData("--backend", "quantum", "Argument 'quantum' not recognized. Must be one of:")]
    [InlineData("--precision", "f16", "Argument 'f16' not recognized")]
    [InlineData("--hidden", "ten", "Cannot parse argument 'ten' for option '--hidden'")]
    public void BadFlagsExitWithTwoAndOneClearLine(string flag, string value, string message)
    {
        var (code, stdout, stderr) = Run("train", flag, value, "--out", Path_("never.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains(message, stderr);
        Assert.Equal("", stdout);
        Assert.DoesNotContain("   at ", stderr);
        Assert.False(File.Exists(Path_("never.npz")));
    }

    [Fact]
    public void UnknownOptionIsRejected()
    {
        var (code, _, stderr) = Run("train", "--hiden", "5");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("--hiden", stderr);
    }

    [Fact]
    public void HelpExplainsTheFlags()
    {
        var (code, stdout, _) = Run("train", "--help");
        Assert.Equal(0, code);
        foreach (string flag in new[]
        {
            "--backend", "--precision", "--hidden", "--iterations", "--lr", "--train-count", "--log-every", "--seed",
            "--init-weights", "--data", "--out", "--json",
        })
            Assert.Contains(flag, stdout);
    }

    [Fact]
    public void TrainJsonPrintsExactlyOneSummaryAndSavesTheModel()
    {
        string model = Path_("m.npz");
        var (code, stdout, stderr) = Run("train", "--backend", "scalar", "--train-count", "300", "--iterations", "11",
            "--log-every", "5",
            "--data", TestPaths.MnistDir, "--out", model, "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        JsonElement root = doc.RootElement;
        Assert.Equal("scalar", root.GetProperty("backend").GetString());
        Assert.Equal("f32", root.GetProperty("precision").GetString());
        Assert.Equal(10, root.GetProperty("hidden").GetInt32());
        Assert.Equal(300, root.GetProperty("train_count").GetInt32());
        Assert.Equal(11, root.GetProperty("iterations").GetInt32());
        Assert.Equal(0.1, root.GetProperty("learning_rate").GetDouble());
        Assert.Equal(1, root.GetProperty("threads").GetInt32());
        Assert.Equal([0, 5, 10],
            root.GetProperty("log").EnumerateArray().Select(e => e.GetProperty("iteration").GetInt32()));
        Assert.InRange(root.GetProperty("log")[0].GetProperty("loss").GetDouble(), 2.0, 2.6);
        Assert.InRange(root.GetProperty("test_accuracy").GetDouble(), 0.0, 1.0);
        Assert.True(root.GetProperty("train_seconds").GetDouble() > 0);
        Assert.True(root.GetProperty("ms_per_iteration").GetDouble() > 0);
        Assert.Contains("Iteration 0: Accuracy = ", stderr);
        MlpParameters saved = ModelFile.Load(model);
        Assert.Equal(10, saved.Hidden);
    }

    [Fact]
    public void TrainFromInitWeightsPrintsTheSeedsFirstLine()
    {
        var (code, stdout, stderr) = Run("train", "--backend", "scalar", "--precision", "f64", "--iterations", "1",
            "--init-weights", Path.Combine(TestPaths.SeedParity, "init.npz"), "--data", TestPaths.MnistDir,
            "--out", Path_("m.npz"));
        Assert.True(code == 0, stderr);
        Assert.Contains("Iteration 0: Accuracy = 0.1141  Loss = 2.302299", stdout);
        Assert.Contains("Test accuracy = ", stdout);
        Assert.Contains("ms per iteration", stdout);
    }

    [Fact]
    public void InitWeightsThatDoNotMatchHiddenAreRefused()
    {
        var (code, _, stderr) = Run("train", "--hidden", "20",
            "--init-weights", Path.Combine(TestPaths.SeedParity, "init.npz"),
            "--data", TestPaths.MnistDir, "--out", Path_("m.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("--hidden 20 does not match --init-weights init.npz, which has 10 hidden units", stderr);
    }

    [Fact]
    public void CorruptInitWeightsFileIsNamed()
    {
        string bad = Path_("bad.npz");
        File.WriteAllText(bad, "not a zip");
        var (code, _, stderr) = Run("train", "--init-weights", bad, "--data", TestPaths.MnistDir,
            "--out", Path_("m.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.StartsWith($"mnistnative: error: {bad}: is not a valid .npz (zip) file", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Fact]
    public void CorruptDataFileIsNamedWithItsChecksum()
    {
        string data = Directory.CreateDirectory(Path_("data")).FullName;
        foreach (string n in MnistFiles.All) File.Copy(Path.Combine(TestPaths.MnistDir, n), Path.Combine(data, n));
        string labels = Path.Combine(data, MnistFiles.TrainLabels);
        using (var f = File.OpenWrite(labels)) f.SetLength(5000); // truncated
        var (code, _, stderr) = Run("train", "--data", data, "--out", Path_("m.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.StartsWith($"mnistnative: error: {labels}: checksum mismatch: SHA-256 ", stderr);
        var (verifyCode, _, verifyErr) = Run("data", "verify", "--data", data);
        Assert.Equal(ExitCodes.BadInput, verifyCode);
        Assert.Contains(labels, verifyErr);
    }

    [Fact]
    public void DivergenceExitsWithThreeAndWritesNoModel()
    {
        string model = Path_("diverged.npz");
        var (code, _, stderr) = Run("train", "--backend", "scalar", "--train-count", "200", "--iterations", "60",
            "--lr", "1000",
            "--log-every", "10", "--data", TestPaths.MnistDir, "--out", model);
        Assert.Equal(ExitCodes.Diverged, code);
        Assert.Contains("training diverged", stderr);
        Assert.Contains("no model was written", stderr);
        Assert.False(File.Exists(model));
    }

    [Fact]
    public void EvalPrintsAccuracyAndConfusionMatrix()
    {
        var (code, stdout, stderr) = Run("eval", "--model", Path.Combine(TestPaths.SeedParity, "final.npz"),
            "--data", TestPaths.MnistDir, "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        double accuracy = doc.RootElement.GetProperty("test_accuracy").GetDouble();
        Assert.Equal(0.9139, accuracy, 4);
        int[][] confusion = doc.RootElement.GetProperty("confusion").EnumerateArray()
            .Select(r => r.EnumerateArray().Select(v => v.GetInt32()).ToArray()).ToArray();
        Assert.Equal(10_000, confusion.Sum(r => r.Sum()));
        Assert.Equal(9139, Enumerable.Range(0, 10).Sum(i => confusion[i][i]));
    }

    [Fact]
    public void ProfilePrintsPhasesAndTraceIsAChromeTrace()
    {
        string trace = Path_("t.json");
        var (code, stdout, stderr) = Run("train", "--backend", "scalar", "--train-count", "100", "--iterations", "4",
            "--data", TestPaths.MnistDir, "--out", Path_("m.npz"), "--profile", "--trace", trace);
        Assert.True(code == 0, stderr);
        Assert.Contains("Where the time went (4 iterations", stdout);
        // the reference's phases: Phases' names, per layer where a layer has one
        foreach (string phase in new[] { "forward layer 1", "forward layer 2", "softmax/loss", "backward layer 2",
                     "backward layer 1", "update" })
            Assert.Matches($@"\n  {phase} +[0-9.]+ +[0-9.]+ % +4 ", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(trace));
        var events = doc.RootElement.GetProperty("traceEvents").EnumerateArray()
            .Where(e => e.GetProperty("ph").GetString() == "X").ToList();
        Assert.Equal(24, events.Count);
        Assert.Equal(4, events.Count(e => e.GetProperty("name").GetString() == "forward layer 1"));
        Assert.All(events, e =>
            Assert.True(e.GetProperty("dur").GetDouble() >= 0 && e.GetProperty("ts").GetDouble() >= 0));
    }

    [Fact]
    public void DevicesListsTheCpuTheOpenClDevicesAndTheBackends()
    {
        var (code, stdout, stderr) = Run("devices");
        Assert.True(code == 0, stderr);
        Assert.Contains("AVX2: ", stdout);
        Assert.Contains("AVX-512F: ", stdout);
        Assert.Contains("OpenCL: ", stdout);
        foreach (string backend in new[] { "scalar", "avx2", "avx512", "opencl" })
            Assert.Matches($@"\n  {backend} +(can run|backend|no |OpenCL|the )", stdout);
        var (jsonCode, json, _) = Run("devices", "--json");
        Assert.Equal(0, jsonCode);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal("can run", doc.RootElement.GetProperty("backends").GetProperty("scalar").GetString());
    }

    [Fact]
    public void ForcedSparseOnABackendWithoutSparseKernelsIsAClearError()
    {
        var (code, stdout, stderr) = Run("train", "--backend", "scalar", "--kernel", "sparse",
            "--data", TestPaths.MnistDir,
            "--out", Path_("m.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("backend scalar has no sparse kernels; --kernel sparse goes with avx2, avx512 or opencl",
            stderr);
        Assert.Equal("", stdout);
        Assert.False(File.Exists(Path_("m.npz")));
    }

    [Fact]
    public void KernelFlagOnThePerLayerPathIsAClearError()
    {
        var (code, stdout, stderr) = Run("train", "--batch-size", "100", "--kernel", "sparse",
            "--data", TestPaths.MnistDir,
            "--out", Path_("m.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains(
            "--kernel sparse: the layer-1 kernel choice is for full-batch gradient descent on 784-H-10", stderr);
        Assert.Equal("", stdout);
        Assert.False(File.Exists(Path_("m.npz")));
    }

    [SkippableFact]
    public void TrainSaysWhichLayer1KernelRanAndWhy()
    {
        Skip.If(!MnistNative.Backends.Cpu.CpuFeatures.CanRunAvx2
            && Environment.GetEnvironmentVariable("CI") != "true", "needs AVX2");
        foreach (string kernel in new[] { "auto", "dense", "sparse" })
        {
            var (code, stdout, stderr) = Run("train", "--backend", "avx2", "--kernel", kernel, "--train-count", "300",
                "--iterations", "3",
                "--data", TestPaths.MnistDir, "--out", Path_($"{kernel}.npz"), "--json", "--profile");
            Assert.True(code == 0, stderr);
            string ran = kernel == "dense" ? "dense" : "sparse"; // MNIST is 19% non-zero: auto picks sparse
            Assert.Contains($"kernel {ran}: {(kernel == "auto" ? "auto: " : $"forced by --kernel {kernel}")}", stderr);
            Assert.Contains($"Layer-1 kernel {ran}: ", stderr); // --profile with --json: the human lines go to stderr
            using var doc = JsonDocument.Parse(stdout);
            Assert.Equal(ran, doc.RootElement.GetProperty("kernel").GetString());
        }
    }

    [SkippableFact]
    public void BenchInterleavesKernelsAndReportsUsefulFlops()
    {
        Skip.If(!MnistNative.Backends.Cpu.CpuFeatures.CanRunAvx2
            && Environment.GetEnvironmentVariable("CI") != "true", "needs AVX2");
        var (code, stdout, stderr) = Run("bench", "--backends", "avx2,scalar", "--kernel", "dense,sparse",
            "--train-count", "200",
            "--iterations", "2", "--rounds", "2", "--data", TestPaths.MnistDir, "--json");
        Assert.True(code == 0, stderr);
        Assert.Contains("scalar (--kernel sparse): skipped (backend scalar has no sparse kernels", stderr);
        using var doc = JsonDocument.Parse(stdout);
        JsonElement workload = doc.RootElement.GetProperty("workload");
        Assert.Equal(2, workload.GetProperty("rounds").GetInt32());
        double density = workload.GetProperty("density").GetDouble();
        Assert.InRange(density, 0.1, 0.3);
        Assert.True(workload.GetProperty("useful_mflop_per_iteration").GetDouble() <
            workload.GetProperty("mflop_per_iteration").GetDouble());
        var results = doc.RootElement.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(["avx2/dense", "avx2/sparse", "scalar/dense"],
            results.Select(r => $"{r.GetProperty("backend").GetString()}/{r.GetProperty("kernel").GetString()}"));
        foreach (JsonElement r in results)
        {
            Assert.True(r.GetProperty("useful_gflops").GetDouble() > 0);
            Assert.True(r.GetProperty("useful_gflops").GetDouble() < r.GetProperty("gflops").GetDouble());
            Assert.NotEqual("", r.GetProperty("kernel_reason").GetString());
        }
    }

    [Fact]
    public void AForcedBackendThatCannotTakeF64IsAClearError()
    {
        var (code, _, stderr) = Run("train", "--backend", "avx2", "--precision", "f64", "--data", TestPaths.MnistDir,
            "--out", Path_("m.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("backend avx2 is float32 only", stderr);
    }

    [Fact]
    public void OpenClFlagsWithACpuBackendAreRefused()
    {
        var (code, _, stderr) = Run("train", "--backend", "avx2", "--device", "0:0", "--data", TestPaths.MnistDir,
            "--out", Path_("m.npz"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("--device, --kernels and --opencl-variant go with --backend opencl, not avx2", stderr);
    }

    [Fact]
    public void AutoExplainsItsChoiceOnStderr()
    {
        var (code, _, stderr) = Run("train", "--train-count", "50", "--iterations", "2", "--data", TestPaths.MnistDir,
            "--out", Path_("m.npz"), "--json");
        Assert.True(code == 0, stderr);
        Assert.Contains("backend auto: picked ", stderr);
    }

    [Fact]
    public void EvalOfAMissingModelIsOneLine()
    {
        string missing = Path_("missing.npz");
        var (code, _, stderr) = Run("eval", "--model", missing);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Equal($"mnistnative: error: {missing}: file not found", stderr.Trim());
    }
}

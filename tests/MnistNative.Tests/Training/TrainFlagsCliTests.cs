using System.Text.Json;
using MnistNative.Cli;
using MnistNative.Data;
using Xunit;

namespace MnistNative.Tests.Training;

/// <summary>
/// The mini-batch flags on the command line: validation, JSON, checkpoints, pictures. Small data, few epochs.
/// </summary>
public sealed class TrainFlagsCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-train-flags-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string P(string name) => Path.Combine(_dir, name);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliTests.Run(args);

    private string[] Small(params string[] extra) =>
        ["train", "--data", TestPaths.MnistDir, "--train-count", "600", "--out", P("m.npz"), .. extra];

    [Theory]
    [InlineData("--batch-size", "0", "--batch-size must be at least 1, got 0")]
    [InlineData("--epochs", "0", "--epochs must be between 1 and 100000, got 0")]
    [InlineData("--validation-count", "600",
        "--validation-count must be between 0 and --train-count - 1 (599), got 600")]
    [InlineData("--optimizer", "sgdx", "Argument 'sgdx' not recognized")]
    [InlineData("--schedule", "linear", "Argument 'linear' not recognized")]
    [InlineData("--preset", "fast99", "Argument 'fast99' not recognized")]
    [InlineData("--beta2", "1.5", "--beta1, --beta2 and --epsilon go with --optimizer adam")]
    [InlineData("--warmup", "-1", "--warmup must be zero or more steps, got -1")]
    [InlineData("--resume", "true", "--resume needs --checkpoint DIR")]
    [InlineData("--plot", "curves.jpg", "the file name must end in .png")]
    [InlineData("--hidden", "256,x", "Cannot parse argument '256,x' for option '--hidden'")]
    [InlineData("--hidden", "256,0", "--hidden must be between 1 and 4096, got 0")]
    public void BadFlagsExitWithTwoAndOneLine(string flag, string value, string message)
    {
        var (code, stdout, stderr) = Run(Small(flag, value));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains(message, stderr);
        Assert.Equal("", stdout);
        Assert.DoesNotContain("   at ", stderr);
        Assert.False(File.Exists(P("m.npz")));
    }

    [Fact]
    public void AdamOutOfRangeAndMisplacedOpenClFlagsAreClearErrors()
    {
        var (code, _, err) = Run(Small("--optimizer", "adam", "--beta2", "1.5"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("--beta2 must be in [0, 1), got 1.5", err);
        (code, _, err) = Run(Small("--backend", "avx2", "--batch-size", "32", "--device", "0:0"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("--device, --kernels and --opencl-variant go with --backend opencl, not avx2", err);
    }

    [Fact]
    public void DeepAdamRunPrintsJsonWithValidationAndDrawsCurves()
    {
        var (code, stdout, stderr) = Run(Small("--hidden", "32,16", "--optimizer", "adam", "--lr", "0.003",
            "--batch-size", "50", "--epochs", "2",
            "--validation-count", "100", "--schedule", "cosine", "--warmup", "3", "--plot", P("curves.png"), "--json"));
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        JsonElement root = doc.RootElement;
        Assert.Equal([784, 32, 16, 10], root.GetProperty("sizes").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(500, root.GetProperty("train_count").GetInt32());
        Assert.Equal(20, root.GetProperty("steps").GetInt64());
        Assert.Equal(2, root.GetProperty("log").GetArrayLength());
        Assert.InRange(root.GetProperty("log")[1].GetProperty("validation_accuracy").GetDouble(), 0.2, 1);
        Assert.InRange(root.GetProperty("test_accuracy").GetDouble(), 0.2, 1);
        Assert.True(root.GetProperty("train_seconds").GetDouble() > 0);
        Assert.Equal([784, 32, 16, 10], ModelFile.Load(P("m.npz")).Sizes);
        AssertPng(P("curves.png"), 900, 540);
    }

    [Fact]
    public void PresetJsonCarriesTestAccuracyAndTrainSeconds()
    {
        var (code, stdout, stderr) = Run(Small("--preset", "fast98", "--epochs", "1", "--backend", "auto", "--json"));
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal("fast98", doc.RootElement.GetProperty("preset").GetString());
        Assert.True(doc.RootElement.TryGetProperty("test_accuracy", out _));
        Assert.True(doc.RootElement.TryGetProperty("train_seconds", out _));
    }

    [Fact]
    public void CheckpointThenResumeEndsWithTheSameModelAsOneRun()
    {
        string[] common =
        [
            "--backend", "scalar", "--precision", "f64", "--train-count", "120", "--hidden", "8",
            "--optimizer", "momentum", "--lr", "0.05", "--batch-size", "40", "--seed", "3",
        ];
        var (code, _, err) = Run(
            ["train", "--data", TestPaths.MnistDir, .. common, "--epochs", "3", "--out", P("whole.npz")]);
        Assert.True(code == 0, err);
        (code, _, err) = Run(["train", "--data", TestPaths.MnistDir, .. common, "--epochs", "3", "--iterations", "3",
            "--out", P("x.npz")]);
        Assert.Equal(ExitCodes.BadInput, code); // --epochs and --iterations together
        (code, _, err) = Run(["train", "--data", TestPaths.MnistDir, .. common, "--iterations", "6",
            "--checkpoint", P("ck"), "--out", P("part.npz")]);
        Assert.True(code == 0, err);
        Assert.True(File.Exists(Path.Combine(P("ck"), "checkpoint.npz")));
        // a constant schedule does not depend on the run's length: the 6-step run continues to the whole run's 3 epochs
        (code, _, err) = Run(["train", "--data", TestPaths.MnistDir, .. common, "--epochs", "3",
            "--checkpoint", P("ck"), "--resume", "--out", P("resumed.npz")]);
        Assert.True(code == 0, err);
        var whole = ModelFile.Load(P("whole.npz"));
        var resumed = ModelFile.Load(P("resumed.npz"));
        Assert.Equal(0, Conformance.TrainingBackendConformance.MaxDiff(whole, resumed, 0, 0, exact: true));
    }

    [Fact]
    public void EvalDrawsConfusionAndErrorPictures()
    {
        var (code, _, err) = Run(Small("--batch-size", "60", "--epochs", "1", "--optimizer", "adam", "--lr", "0.003",
            "--hidden", "16"));
        Assert.True(code == 0, err);
        (code, _, err) = Run("eval", "--data", TestPaths.MnistDir, "--model", P("m.npz"), "--confusion", P("c.png"),
            "--errors", P("e.png"));
        Assert.True(code == 0, err);
        AssertPng(P("c.png"), 700, 700);
        AssertPng(P("e.png"), 840, 6 * (84 + 22));
    }

    private static void AssertPng(string path, int width, int height)
    {
        byte[] b = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, b[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(b, 12, 4));
        int w = (b[16] << 24) | (b[17] << 16) | (b[18] << 8) | b[19];
        int h = (b[20] << 24) | (b[21] << 16) | (b[22] << 8) | b[23];
        Assert.Equal((width, height), (w, h));
    }
}

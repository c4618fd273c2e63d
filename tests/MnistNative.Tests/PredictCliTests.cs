using System.Text.Json;
using MnistNative.Cli;
using MnistNative.Data;
using StbImageWriteSharp;
using Xunit;

namespace MnistNative.Tests;

/// <summary>`predict` and `export` through the CLI, on the seed's trained weights (test accuracy 0.9139).</summary>
public sealed class PredictCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-predict-").FullName;
    private static string Model => Path.Combine(TestPaths.SeedParity, "final.npz");
    private static string TestImages => Path.Combine(TestPaths.MnistDir, MnistFiles.TestImages);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string WritePng(string name, byte[] grey, int width, int height)
    {
        string path = Path.Combine(_dir, name);
        using var stream = File.Create(path);
        new ImageWriter().WritePng(grey, width, height, ColorComponents.Grey, stream);
        return path;
    }

    [Fact]
    public void PredictsARangeFromAnIdxFileAsTheEvalDoes()
    {
        var (code, stdout, stderr) = CliTests.Run("predict", "--model", Model, "--idx", TestImages, "--index", "0..4",
            "--json");
        Assert.True(code == 0, stderr);
        var digits = JsonDocument.Parse(stdout).RootElement.EnumerateArray()
            .Select(e => e.GetProperty("digit").GetInt32()).ToArray();
        Assert.Equal([7, 2, 1, 0, 4], digits); // the first five test labels, all classified right by this model
        Assert.Equal(TestPaths.Test.Labels[..5].Select(b => (int)b), digits);
    }

    [Fact]
    public void PredictsAPngDigitLikeTheSameIdxImage()
    {
        byte[] pixels = TestPaths.Test.Image(3).ToArray();
        string png = WritePng("digit.png", pixels, 28, 28);
        var (code, stdout, stderr) = CliTests.Run("predict", "--model", Model, "--png", png);
        Assert.True(code == 0, stderr);
        var (_, fromIdx, _) = CliTests.Run("predict", "--model", Model, "--idx", TestImages, "--index", "3");
        Assert.Equal(fromIdx.Split(':')[1], stdout.Split(':')[1]);
        Assert.StartsWith("digit.png: 0 (probability 0.99", stdout);
    }

    [Fact]
    public void APngOfTheWrongSizeIsAClearError()
    {
        string png = WritePng("big.png", new byte[32 * 32], 32, 32);
        var (code, _, stderr) = CliTests.Run("predict", "--model", Model, "--png", png);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Equal($"mnistnative: error: {png}: is 32x32; MNIST digits are 28x28 (white on black)", stderr.Trim());
    }

    [Fact]
    public void NotAPngIsAClearError()
    {
        string path = Path.Combine(_dir, "text.png");
        File.WriteAllText(path, "hello");
        var (code, _, stderr) = CliTests.Run("predict", "--model", Model, "--png", path);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.StartsWith($"mnistnative: error: {path}: is not a readable PNG", stderr);
    }

    [Theory]
    [InlineData("10000", "--index 10000 is outside the file's 10000 images (0..9999)")]
    [InlineData("5..2", "--index 5..2 is outside the file's 10000 images")]
    [InlineData("x", "--index 'x' is not an index I or a range I..J")]
    public void BadIndexIsAClearError(string index, string message)
    {
        var (code, _, stderr) = CliTests.Run("predict", "--model", Model, "--idx", TestImages, "--index", index);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains(message, stderr);
    }

    [Fact]
    public void PredictNeedsExactlyOneSource()
    {
        var (code, _, stderr) = CliTests.Run("predict", "--model", Model);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains("give either --idx IMAGES --index I[..J] or --png FILE", stderr);
    }

    [Fact]
    public void ExportWritesAnOnnxFileAndLeavesNoTempFile()
    {
        string onnx = Path.Combine(_dir, "m.onnx");
        var (code, stdout, stderr) = CliTests.Run("export", "--model", Model, "--onnx", onnx);
        Assert.True(code == 0, stderr);
        Assert.Contains("opset 13", stdout);
        Assert.True(new FileInfo(onnx).Length > 30_000); // 7,960 float weights and the graph
        Assert.Equal(["m.onnx"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [Fact]
    public void ExportOfABadModelIsOneLine()
    {
        string bad = Path.Combine(_dir, "bad.npz");
        File.WriteAllText(bad, "nope");
        var (code, _, stderr) = CliTests.Run("export", "--model", bad, "--onnx", Path.Combine(_dir, "x.onnx"));
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.StartsWith($"mnistnative: error: {bad}: ", stderr);
        Assert.False(File.Exists(Path.Combine(_dir, "x.onnx")));
    }
}

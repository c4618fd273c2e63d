using System.Diagnostics;
using MnistNative.Inference;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

/// <summary>Publishes libmnistnative.so once per test run (NativeAOT, Release) into a temp directory.</summary>
public sealed class NativeLibraryFixture : IDisposable
{
    public string Dir { get; } =
        Path.Combine(Path.GetTempPath(), "mnistnative-native-" + Guid.NewGuid().ToString("N")[..8]);
    public string? Error { get; }

    public NativeLibraryFixture()
    {
        Directory.CreateDirectory(Dir);
        string project = Path.Combine(TestPaths.RepoRoot, "src", "MnistNative.Native", "MnistNative.Native.csproj");
        var (code, log) = Shell.Run("dotnet",
            ["publish", project, "-c", "Release", "-r", "linux-x64", "-o", Dir, "-nologo"], TimeSpan.FromMinutes(8));
        if (code != 0 || !File.Exists(Path.Combine(Dir, "libmnistnative.so")))
        {
            Error = $"dotnet publish failed (exit {code}):\n{log}";
            return;
        }
        (code, log) = Shell.Run("bash", [Path.Combine(TestPaths.RepoRoot, "native", "examples", "build.sh"), Dir],
            TimeSpan.FromMinutes(2));
        if (code != 0) { Error = $"native/examples/build.sh failed (exit {code}):\n{log}"; return; }
        string abi = Path.Combine(TestPaths.RepoRoot, "tests", "MnistNative.Tests", "Inference", "abi_check.c");
        (code, log) = Shell.Run("cc",
            ["-std=c11", "-Wall", "-Werror", "-I", Path.Combine(TestPaths.RepoRoot, "native", "include"), abi,
                "-L", Dir, "-lmnistnative", "-Wl,-rpath,$ORIGIN", "-o", Path.Combine(Dir, "abi_check")],
            TimeSpan.FromMinutes(2));
        if (code != 0) Error = $"compiling abi_check.c failed (exit {code}):\n{log}";
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}

internal static class Shell
{
    public static (int Code, string Log) Run(string file, IEnumerable<string> args, TimeSpan timeout,
        string? workDir = null, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        if (workDir != null) psi.WorkingDirectory = workDir;
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            return (-1, $"{file} timed out after {timeout}\n{stdout.Result}\n{stderr.Result}");
        }
        return (p.ExitCode, $"$ {file} {string.Join(' ', args)}\n{stdout.Result}{stderr.Result}");
    }
}

public sealed class NativeLibraryTests(NativeLibraryFixture native, ITestOutputHelper output)
    : IClassFixture<NativeLibraryFixture>
{
    [SkippableFact]
    public void CExampleClassifiesTheTestSetLikeTheCSharpApi()
    {
        var (images, labels) = InferenceFixtures.TestSet;
        Assert.True(native.Error == null, native.Error);
        var (code, log) = Shell.Run(Path.Combine(native.Dir, "classify"),
            [InferenceFixtures.FinalModel, InferenceFixtures.TestImagesPath, InferenceFixtures.TestLabelsPath],
            TimeSpan.FromMinutes(2));
        output.WriteLine(log);
        Assert.True(code == 0, $"classify exited {code}:\n{log}");

        using var c = MnistClassifier.Load(InferenceFixtures.FinalModel);
        var predicted = new int[labels.Length];
        c.PredictBatch(images, predicted);
        int correct = predicted.Where((p, i) => p == labels[i]).Count();
        Assert.Contains($"accuracy {correct / (double)labels.Length:F4} ({correct}/{labels.Length})", log);
    }

    [SkippableFact]
    public void AbiRejectsNullsShortBuffersAndFreedHandles()
    {
        Assert.True(native.Error == null, native.Error);
        var (code, log) = Shell.Run(Path.Combine(native.Dir, "abi_check"), [InferenceFixtures.FinalModel],
            TimeSpan.FromMinutes(1));
        output.WriteLine(log);
        Assert.True(code == 0, $"abi_check exited {code}:\n{log}");
        Assert.Contains("all checks passed", log);
    }

    [SkippableFact]
    public void CAbiLoadsAPyTorchOnnxExportAndRefusesBadGraphsWithTheirReason()
    {
        var (_, labels) = InferenceFixtures.TestSet;
        Assert.True(native.Error == null, native.Error);
        string onnx = Path.Combine(OnnxImportTests.FixtureDir, "mlp_784_128_64_10_norm.onnx");
        var (code, log) = Shell.Run(Path.Combine(native.Dir, "classify"),
            [onnx, InferenceFixtures.TestImagesPath, InferenceFixtures.TestLabelsPath], TimeSpan.FromMinutes(2));
        output.WriteLine(log);
        Assert.True(code == 0, $"classify exited {code}:\n{log}");
        using var c = MnistClassifier.Load(onnx);
        var predicted = new int[labels.Length];
        c.PredictBatch(InferenceFixtures.TestSet.Images, predicted);
        int correct = predicted.Where((p, i) => p == labels[i]).Count();
        Assert.Contains($"accuracy {correct / (double)labels.Length:F4} ({correct}/{labels.Length})", log);

        string dir = Directory.CreateTempSubdirectory("mnistnative-onnx-abi-").FullName;
        try
        {
            string conv = Path.Combine(dir, "conv.onnx"), second = Path.Combine(dir, "second.onnx"),
                random = Path.Combine(dir, "random.onnx");
            File.WriteAllBytes(conv, Google.Protobuf.MessageExtensions.ToByteArray(OnnxModels.Bad("conv")));
            File.WriteAllBytes(second, Google.Protobuf.MessageExtensions.ToByteArray(OnnxModels.Bad("second-input")));
            var bytes = new byte[1000];
            new Random(4).NextBytes(bytes);
            File.WriteAllBytes(random, bytes);
            (code, log) = Shell.Run(Path.Combine(native.Dir, "abi_check"), [onnx, conv, second, random],
                TimeSpan.FromMinutes(1));
            output.WriteLine(log);
            Assert.True(code == 0, $"abi_check exited {code}:\n{log}");
            Assert.Contains("all checks passed", log);
            Assert.Contains($"refused {conv}: {conv}: node 'conv1' (Conv) is a convolution", log);
            Assert.Contains("refused from memory: <memory>: node 'conv1' (Conv) is a convolution", log);
            Assert.Contains($"refused {second}: {second}: has 2 inputs", log);
            Assert.Contains($"refused {random}: {random}: is not a valid ONNX model", log);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}

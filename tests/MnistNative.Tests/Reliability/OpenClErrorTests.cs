using MnistNative.Backends.OpenCL;
using MnistNative.Cli;
using MnistNative.Tests.OpenCl;
using Xunit;

namespace MnistNative.Tests.Reliability;

/// <summary>
/// Issue 13, defect 10: an OpenCL failure mid-run is the device's problem, told as such (exit 2), not a bug (exit 1).
/// </summary>
[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-clerr-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [SkippableFact]
    public void AnOpenClFailureExitsTwoNamingTheDeviceAndTheError()
    {
        OpenClTestDevice.RequireOpenCl();
        string kernels = Path.Combine(_dir, "kernels");
        Directory.CreateDirectory(kernels);
        foreach (string f in Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "native", "opencl"), "*.cl"))
        {
            string broken = File.ReadAllText(f) + "\n#error injected failure\n";
            File.WriteAllText(Path.Combine(kernels, Path.GetFileName(f)), broken);
        }
        var args = new List<string> { "train", "--backend", "opencl", "--opencl-variant", "cpu", "--kernels", kernels,
            "--iterations", "1",
            "--train-count", "100", "--data", TestPaths.MnistDir, "--out", Path.Combine(_dir, "m.npz") };
        if (OpenClTestDevice.Device is string d) args.AddRange(["--device", d]);
        var (code, _, stderr) = CliTests.Run([.. args]);
        Assert.Equal(ExitCodes.BadInput, code);
        string error = Assert.Single(stderr.Split('\n'), l =>
            l.StartsWith("mnistnative: error:", StringComparison.Ordinal));
        OpenClDeviceInfo device = OpenClRuntime.SelectDevice(OpenClTestDevice.Device);
        Assert.Contains($"OpenCL device {device.Id} {device.Name}:", error);
        Assert.Contains("CL_BUILD_PROGRAM_FAILURE", error);
        Assert.DoesNotContain("unexpected", error);
        Assert.False(File.Exists(Path.Combine(_dir, "m.npz")));
    }
}

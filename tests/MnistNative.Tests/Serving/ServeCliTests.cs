using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using MnistNative.Cli;
using Xunit;

namespace MnistNative.Tests.Serving;

/// <summary>`mnistnative serve` as a command: its flags, its refusals (exit 2, one line), and SIGTERM.</summary>
public sealed class ServeCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-serve-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void HelpNamesTheFlags()
    {
        var (code, stdout, _) = CliTests.Run("serve", "--help");
        Assert.Equal(0, code);
        foreach (string flag in new[] { "--model", "--urls", "--max-batch" })
            Assert.Contains(flag, stdout);
    }

    [Fact]
    public void ABadModelExitsTwoBeforeListening()
    {
        string bad = Path.Combine(_dir, "bad.npz");
        File.WriteAllText(bad, "nope");
        var (code, _, stderr) = CliTests.Run("serve", "--model", bad, "--urls", "http://127.0.0.1:0");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.StartsWith(
            $"mnistnative: error: {bad}: ",
            Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        );
    }

    [Fact]
    public void AnAddressInUseExitsTwoNamingUrls()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        string urls = $"http://127.0.0.1:{((IPEndPoint)taken.LocalEndpoint).Port}";
        var (code, _, stderr) = CliTests.Run("serve", "--model", ServeHost.SeedModel, "--urls", urls);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains($"mnistnative: error: --urls {urls}: cannot listen", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("100001")]
    public void MaxBatchOutOfRangeIsRefused(string value)
    {
        var (code, _, stderr) = CliTests.Run("serve", "--model", ServeHost.SeedModel, "--max-batch", value);
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Contains($"--max-batch must be between 1 and 100000, got {value}", stderr);
    }

    [Fact]
    public void SigtermStopsTheServerGracefullyWithExitZero()
    {
        using var server = BrowserTests.ServeProcess.Start(ServeHost.SeedModel);
        using (var client = new HttpClient())
            Assert.Contains("ready", client.GetStringAsync(server.Address + "/healthz").Result);
        Process.Start("kill", ["-TERM", server.Id.ToString()])!.WaitForExit();
        Assert.True(server.WaitForExit(TimeSpan.FromSeconds(15)), "serve did not stop within 15 s of SIGTERM");
        Assert.Equal(0, server.ExitCode);
        Assert.Contains("Application is shutting down", server.Log);
    }
}

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using MnistNative.Cli;
using MnistNative.Serving;
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
    public async Task AnAddressInUseExitsTwoWithOneLineNamingUrls()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        string urls = $"http://127.0.0.1:{((IPEndPoint)taken.LocalEndpoint).Port}";
        // the real process, so that whatever the host itself writes to stderr is seen too
        var start = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        string[] args = [BrowserTests.ServeProcess.CliDll, "serve", "--model", ServeHost.SeedModel, "--urls", urls];
        foreach (string arg in args) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.Equal(ExitCodes.BadInput, process.ExitCode);
        Assert.Equal("", await stdout);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"mnistnative: error: --urls {urls}: cannot listen", line);
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
    public async Task SigtermStopsTheServerGracefullyWithExitZero()
    {
        using var server = BrowserTests.ServeProcess.Start(ServeHost.SeedModel, "--max-batch", "1");
        using (var client = new HttpClient())
        {
            Assert.Contains("ready", await client.GetStringAsync(server.Address + "/healthz"));
            // over Kestrel (the test server passes no Content-Length): an announced oversize body is refused unread
            long limit = new ServeOptions { ModelPath = "m", MaxBatch = 1 }.MaxJsonBytes;
            var body = new ByteArrayContent(new byte[limit + 1]);
            body.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            HttpResponseMessage response = await client.PostAsync(server.Address + "/v1/predict", body);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
            string problem = await response.Content.ReadAsStringAsync();
            Assert.Contains($"the body is {limit + 1} bytes; at most {limit}", problem);
        }
        await Process.Start("kill", ["-TERM", server.Id.ToString()])!.WaitForExitAsync();
        bool exited = await server.WaitForExitAsync(TimeSpan.FromSeconds(15));
        Assert.True(exited, "serve did not stop within 15 s of SIGTERM");
        Assert.Equal(0, server.ExitCode);
        Assert.Contains("Application is shutting down", server.Log);
    }
}

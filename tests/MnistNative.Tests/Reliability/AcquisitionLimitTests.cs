using System.Diagnostics;
using System.IO.Compression;
using MnistNative.Data;
using MnistNative.Formats;
using Xunit;

namespace MnistNative.Tests.Reliability;

/// <summary>
/// Issue 13, defects 6 and 14: downloads and .gz files that never end or inflate to GiBs. Each is cut off at the
/// known size of the MNIST file (or the deadline), nothing is left on disk, and the next source is tried.
/// Small synthetic files only: the bombs are gzip streams of zeros.
/// </summary>
public sealed class AcquisitionLimitTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-limits-").FullName;
    private readonly List<string> _log = [];

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A gzip stream of <paramref name="zeros"/> zero bytes (about 1 KB per MB).</summary>
    private static byte[] GzipZeros(long zeros)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.SmallestSize))
        {
            var block = new byte[1 << 20];
            for (long left = zeros; left > 0; left -= block.Length)
                gz.Write(block, 0, (int)Math.Min(block.Length, left));
        }
        return ms.ToArray();
    }

    private static byte[] GzipFile(string name)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest))
            gz.Write(File.ReadAllBytes(Path.Combine(TestPaths.MnistDir, name)));
        return ms.ToArray();
    }

    private void AssertNoTempFiles() =>
        Assert.DoesNotContain(Directory.GetFiles(_dir), f => f.EndsWith(".partial", StringComparison.Ordinal));

    // Before: inflated to a temp file in full (1.1 GiB for the file) and only then refused by its checksum.
    [Fact]
    public void ALocalGzThatInflatesPastTheFileSizeStopsThere()
    {
        foreach (string n in MnistFiles.All.Where(n => n != MnistFiles.TestLabels))
            File.Copy(Path.Combine(TestPaths.MnistDir, n), Path.Combine(_dir, n));
        byte[] bomb = GzipZeros(64L << 20); // 64 MB of zeros in ~64 KB; the labels file is 10008 bytes
        File.WriteAllBytes(Path.Combine(_dir, MnistFiles.TestLabels + ".gz"), bomb);
        var acquisition = new MnistAcquisition(new AcquisitionOptions { Mirrors = [], UseNpm = false }, _log.Add);
        var e = Assert.Throws<DataFormatException>(() => acquisition.Ensure(_dir));
        Assert.Contains($"inflates to more than 10008 bytes, the size of MNIST's {MnistFiles.TestLabels}", e.Message);
        Assert.StartsWith(Path.Combine(_dir, MnistFiles.TestLabels + ".gz"), e.Message);
        AssertNoTempFiles();
        Assert.False(File.Exists(Path.Combine(_dir, MnistFiles.TestLabels)));
    }

    private MnistAcquisition Acquisition(LoopbackHttpsServer server, TimeSpan? downloadTimeout,
        params string[] mirrors) => new(
        new AcquisitionOptions
        {
            Mirrors = mirrors, UseNpm = false, Handler = server.TrustingHandler(),
            StallTimeout = TimeSpan.FromSeconds(10),
            DownloadTimeout = downloadTimeout ?? TimeSpan.FromMinutes(1),
        },
        _log.Add);

    private void CopyAllBut(string missing)
    {
        foreach (string n in MnistFiles.All.Where(n => n != missing))
            File.Copy(Path.Combine(TestPaths.MnistDir, n), Path.Combine(_dir, n));
    }

    [Fact]
    public void AMirrorServingAGzipBombIsLeftForTheNextOne()
    {
        CopyAllBut(MnistFiles.TrainLabels);
        byte[] bomb = GzipZeros(32L << 20);
        using var hostile = new LoopbackHttpsServer(path => path == MnistFiles.TrainLabels + ".gz" ? new(bomb) : null);
        byte[] good = GzipFile(MnistFiles.TrainLabels);
        using var mirror = new LoopbackHttpsServer(path => path == MnistFiles.TrainLabels + ".gz" ? new(good) : null);
        Acquisition(hostile, null, hostile.BaseUrl, mirror.BaseUrl).Ensure(_dir);
        MnistFiles.Verify(_dir);
        Assert.Contains(_log, l => l.Contains($"inflates to more than 60008 bytes"));
        AssertNoTempFiles();
    }

    [Fact]
    public void AMirrorSendingMoreBytesThanTheFileCanHoldIsCutOff()
    {
        CopyAllBut(MnistFiles.TestLabels);
        var endless = new byte[1 << 20]; // 1 MB for a .gz whose raw file is 10 KB
        using var hostile = new LoopbackHttpsServer(path =>
            path == MnistFiles.TestLabels + ".gz" ? new(endless) : null);
        var e = Assert.Throws<DataFormatException>(() => Acquisition(hostile, null, hostile.BaseUrl).Ensure(_dir));
        Assert.True(e.Message.Contains("the server announces 1048576 bytes", StringComparison.Ordinal), e.Message);
        AssertNoTempFiles();
    }

    // Before: the stall timer restarted with every chunk, so 16 bytes a second kept a download alive for days.
    [Fact]
    public void ADownloadThatDripsPastItsDeadlineMovesOnToTheNextMirror()
    {
        CopyAllBut(MnistFiles.TestLabels);
        byte[] good = GzipFile(MnistFiles.TestLabels);
        using var slow = new LoopbackHttpsServer(path =>
            path == MnistFiles.TestLabels + ".gz" ? new(good, DripEvery: TimeSpan.FromMilliseconds(200)) : null);
        using var mirror = new LoopbackHttpsServer(path => path == MnistFiles.TestLabels + ".gz" ? new(good) : null);
        var clock = Stopwatch.StartNew();
        Acquisition(slow, TimeSpan.FromSeconds(2), slow.BaseUrl, mirror.BaseUrl).Ensure(_dir);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
        MnistFiles.Verify(_dir);
        Assert.Contains(_log, l => l.Contains("timed out"));
        AssertNoTempFiles();
    }

    [Fact]
    public void TheOverallDeadlineStopsAcquisition()
    {
        CopyAllBut(MnistFiles.TestLabels);
        byte[] good = GzipFile(MnistFiles.TestLabels);
        using var slow = new LoopbackHttpsServer(path =>
            path == MnistFiles.TestLabels + ".gz" ? new(good, DripEvery: TimeSpan.FromMilliseconds(200)) : null);
        var acquisition = new MnistAcquisition(new AcquisitionOptions
        {
            Mirrors = [slow.BaseUrl, slow.BaseUrl + "again/"], UseNpm = true, Handler = slow.TrustingHandler(),
            DownloadTimeout = TimeSpan.FromMinutes(1), Deadline = TimeSpan.FromSeconds(2),
        }, _log.Add);
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<DataFormatException>(() => acquisition.Ensure(_dir));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
        Assert.Contains("timed out", e.Message);
        Assert.Contains("the 2 s deadline has passed", e.Message);
    }
}

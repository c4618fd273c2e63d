using System.IO.Compression;
using MnistNative.Data;
using MnistNative.Formats;
using Xunit;

namespace MnistNative.Tests;

public sealed class IdxTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-idx-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] Images(int n, int rows = 28, int cols = 28) =>
        Idx.Encode([n, rows, cols], Enumerable.Range(0, n * rows * cols).Select(i => (byte)(i % 251)).ToArray());

    private static byte[] Labels(params byte[] labels) => Idx.Encode([labels.Length], labels);

    [Fact]
    public void ReadsAGoodPair()
    {
        var set = Idx.ReadPair(Write("i", Images(3)), Write("l", Labels(7, 0, 9)));
        Assert.Equal(3, set.Count);
        Assert.Equal([7, 0, 9], set.Labels);
        Assert.Equal((byte)(784 % 251), set.Image(1)[0]);
    }

    [Fact]
    public void ReadsGzipFiles()
    {
        static byte[] Gz(byte[] raw)
        {
            using var ms = new MemoryStream();
            using (var gz = new GZipStream(ms, CompressionLevel.Fastest)) gz.Write(raw);
            return ms.ToArray();
        }
        var set = Idx.ReadPair(Write("i.gz", Gz(Images(2))), Write("l.gz", Gz(Labels(1, 2))));
        Assert.Equal(2, set.Count);
    }

    [Fact]
    public void ReadsOnlyTheFirstImagesAskedFor()
    {
        var set = Idx.ReadPair(Write("i", Images(5)), Write("l", Labels(1, 2, 3, 4, 5)), take: 2);
        Assert.Equal(2, set.Count);
        Assert.Equal([1, 2], set.Labels);
        Assert.Equal(Images(5).AsSpan(16, 2 * 784).ToArray(), set.Pixels);
        byte[] pixels = Idx.ReadImages(Write("i5", Images(5)), out int count, take: 9);
        Assert.Equal(5, count);
        Assert.Equal(5 * 784, pixels.Length);
    }

    [Fact]
    public void APrefixReadStillChecksTheWholeFile()
    {
        var e = Assert.Throws<DataFormatException>(
            () => Idx.ReadImages(Write("cut", Images(3)[..^100]), out _, take: 1));
        Assert.Contains("claims 3 images (2352 bytes) but only 2252 bytes follow", e.Message);
        e = Assert.Throws<DataFormatException>(
            () => Idx.ReadPair(Write("i", Images(3)), Write("l", Labels(1, 2)), take: 1));
        Assert.Contains("holds 2 labels but i holds 3 images", e.Message);
    }

    [Fact]
    public void ADirectoryIsNamedAsOne()
    {
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadImages(_dir, out _));
        Assert.Contains("is a directory", e.Message);
    }

    [Fact]
    public void WrongMagicNumberIsNamed()
    {
        string path = Write("labels-as-images", Labels(1, 2, 3));
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadImages(path, out _));
        Assert.Equal($"{path}: wrong magic number 0x00000801 (expected 0x00000803 for an IDX images file)", e.Message);
    }

    [Fact]
    public void TruncatedHeader()
    {
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadImages(Write("short", [0, 0, 8, 3, 0, 0]), out _));
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void HeaderClaimingMoreImagesThanTheFileHoldsIsRefusedWithoutAllocating()
    {
        byte[] bytes = Images(2);
        bytes[4] = 0x7f; // claims ~2 billion images
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadImages(Write("liar", bytes), out _));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("truncated: the header claims", e.Message);
        Assert.True(allocated < 1 << 20, $"allocated {allocated} bytes for a lying header");
    }

    [Fact]
    public void TruncatedPayload()
    {
        byte[] bytes = Images(3);
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadImages(Write("cut", bytes[..^100]), out _));
        Assert.Contains("claims 3 images (2352 bytes) but only 2252 bytes follow", e.Message);
    }

    [Fact]
    public void ImageSizeMustBe28x28()
    {
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadImages(Write("small", Images(2, 20, 20)), out _));
        Assert.Contains("images are 20x20, expected 28x28", e.Message);
    }

    [Fact]
    public void LabelAboveNine()
    {
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadLabels(Write("l", Labels(1, 10))));
        Assert.Contains("label 10 at index 1 is above 9", e.Message);
    }

    [Fact]
    public void ImageAndLabelCountsMustMatch()
    {
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadPair(Write("i", Images(3)), Write("l", Labels(1, 2))));
        Assert.Contains("holds 2 labels but i holds 3 images", e.Message);
    }

    [Fact]
    public void CorruptGzip()
    {
        var e = Assert.Throws<DataFormatException>(
            () => Idx.ReadImages(Write("bad.gz", [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7]), out _));
        Assert.StartsWith(Path.Combine(_dir, "bad.gz") + ": ", e.Message);
    }

    [Fact]
    public void MissingFile()
    {
        var e = Assert.Throws<DataFormatException>(() => Idx.ReadLabels(Path.Combine(_dir, "nope")));
        Assert.EndsWith("nope: file not found", e.Message);
    }
}

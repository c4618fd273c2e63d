using System.Diagnostics;
using MnistNative.Cli;
using MnistNative.Formats;
using Xunit;

namespace MnistNative.Tests.Serving;

/// <summary>
/// The one 28x28 PNG reader (used by `predict --png` and by the server), and defect 7 of issue 13: hostile files
/// given to `predict --png` end at once with exit 2 and one line naming the file.
/// </summary>
public sealed class DigitPngTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-png-").FullName;
    private static string Model => Path.Combine(TestPaths.SeedParity, "final.npz");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Digit(int index) => TestPaths.Test.Image(index).ToArray();

    [Fact]
    public void GreyRgbRgbaAnd16BitPngsReadAsTheSameGreyLevels()
    {
        byte[] pixels = Digit(7);
        Assert.Equal(pixels, DigitPng.Decode(PngFiles.Grey(pixels), "grey"));
        Assert.Equal(pixels, DigitPng.Decode(PngFiles.Colour(pixels, alpha: false), "rgb"));
        Assert.Equal(pixels, DigitPng.Decode(PngFiles.Colour(pixels, alpha: true), "rgba"));
        Assert.Equal(pixels, DigitPng.Decode(PngFiles.Grey16(pixels), "grey16"));
    }

    [Fact]
    public void EveryRowFilterIsUndone()
    {
        // random levels make stb_image_write pick different filters row by row; the read must give them back
        var random = new Random(17);
        var pixels = new byte[DigitPng.PixelCount];
        random.NextBytes(pixels);
        Assert.Equal(pixels, DigitPng.Decode(PngFiles.Grey(pixels), "noise"));
    }

    public static TheoryData<string, byte[], string> HostileBodies =>
        new()
        {
            { "jpeg", PngFiles.TruncatedJpeg(), "is not a readable PNG (no PNG signature; it looks like a JPEG)" },
            { "gif", PngFiles.GifHeader(), "is not a readable PNG (no PNG signature; it looks like a GIF)" },
            { "huge", PngFiles.Huge(), "is 10000x10000; MNIST digits are 28x28 (white on black)" },
            { "truncated", PngFiles.Grey(new byte[DigitPng.PixelCount])[..40], "truncated" },
            { "empty", [], "is not a readable PNG (no PNG signature; the file is empty)" },
            { "no-idat", PngFiles.Png(28, 28, 8, 0, []), "is not a readable PNG (no image data)" },
            {
                "short-idat",
                PngFiles.Png(28, 28, 8, 0, PngFiles.Deflate(new byte[100])),
                "image data ends early: truncated"
            },
            {
                "bad-depth",
                PngFiles.Png(28, 28, 3, 0, PngFiles.Deflate(new byte[100])),
                "colour type 0 with bit depth 3"
            },
        };

    [Theory]
    [MemberData(nameof(HostileBodies))]
    public void HostileBytesAreRefusedWithOneSentence(string name, byte[] bytes, string problem)
    {
        var e = Assert.Throws<DataFormatException>(() => DigitPng.Decode(bytes, name));
        Assert.Contains(problem, e.Message);
        Assert.StartsWith($"{name}: ", e.Message);
    }

    [Fact]
    public void ADeflateBombIsNotInflatedPastTheImage()
    {
        // 64 MB of zeros compress to about 64 KB; only the 28 rows (812 bytes) may be inflated
        byte[] bomb = PngFiles.Png(28, 28, 8, 0, PngFiles.Deflate(new byte[64 << 20]));
        long before = GC.GetAllocatedBytesForCurrentThread();
        byte[] pixels = DigitPng.Decode(bomb, "bomb");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 4 << 20, "the reader inflated past the image");
        Assert.All(pixels, p => Assert.Equal(0, p));
    }

    public static TheoryData<string> Defect7Files => ["jpeg", "gif", "huge", "truncated", "directory"];

    [Theory]
    [MemberData(nameof(Defect7Files))]
    public void PredictPngOfAHostileFileExitsTwoQuicklyWithOneLineNamingIt(string kind)
    {
        string path = Path.Combine(_dir, kind + ".png");
        switch (kind)
        {
            case "jpeg":
                File.WriteAllBytes(path, PngFiles.TruncatedJpeg());
                break;
            case "gif":
                File.WriteAllBytes(path, PngFiles.GifHeader());
                break;
            case "huge":
                File.WriteAllBytes(path, PngFiles.Huge());
                break;
            case "truncated":
                File.WriteAllBytes(path, PngFiles.Grey(Digit(0))[..60]);
                break;
            default:
                Directory.CreateDirectory(path);
                break;
        }
        var clock = Stopwatch.StartNew();
        var (code, stdout, stderr) = CliTests.Run("predict", "--model", Model, "--png", path);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Equal(ExitCodes.BadInput, code);
        Assert.Equal("", stdout);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"mnistnative: error: {path}: ", line);
    }

    [Fact]
    public void AFileOverTheSizeBoundIsRefusedBeforeItIsRead()
    {
        string path = Path.Combine(_dir, "big.png");
        using (var file = File.Create(path))
            file.SetLength(DigitPng.MaxBytes + 1L);
        var e = Assert.Throws<DataFormatException>(() => DigitPng.Read(path));
        Assert.Equal(
            $"{path}: is {DigitPng.MaxBytes + 1} bytes; a 28x28 PNG digit is at most {DigitPng.MaxBytes}",
            e.Message
        );
    }
}

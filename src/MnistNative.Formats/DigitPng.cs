using System.Buffers.Binary;
using System.IO.Compression;

namespace MnistNative.Formats;

/// <summary>
/// Reads a 28x28 PNG digit as 784 grey bytes, and nothing else. Only PNG is accepted (the signature is checked
/// first); the size comes from IHDR before any pixel is decoded, so a huge or foreign image is refused at once.
/// The file is bounded (<see cref="MaxBytes"/>) and inflation stops at the 28 rows' size, so time and memory stay
/// small whatever the input. Colour is turned to grey the way stb_image does (which `predict --png` used before),
/// alpha is dropped. Adam7-interlaced files are refused: a 28x28 digit has no reason to be interlaced.
/// </summary>
public static class DigitPng
{
    public const int Side = 28;
    public const int PixelCount = Side * Side;

    /// <summary>
    /// The largest file read. A 28x28 RGBA image at 16 bits, stored uncompressed, is about 6.4 KB; the rest is room
    /// for metadata chunks (ICC profiles, text).
    /// </summary>
    public const int MaxBytes = 1 << 20;

    private static ReadOnlySpan<byte> Signature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>Reads a PNG file; every problem is a <see cref="DataFormatException"/> naming the file.</summary>
    public static byte[] Read(string path)
    {
        if (Directory.Exists(path))
            throw new DataFormatException(path, "is a directory, not a PNG file");
        byte[] bytes;
        try
        {
            using var stream = new FileStream(
                path,
                FileMode.Open,
                FileAccess.Read,
                FileShare.Read,
                1,
                FileOptions.None
            );
            if (stream.Length > MaxBytes)
                throw new DataFormatException(
                    path,
                    $"is {stream.Length} bytes; a 28x28 PNG digit is at most {MaxBytes}"
                );
            bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
        }
        catch (FileNotFoundException)
        {
            throw new DataFormatException(path, "file not found");
        }
        catch (DirectoryNotFoundException)
        {
            throw new DataFormatException(path, "file not found");
        }
        catch (UnauthorizedAccessException)
        {
            throw new DataFormatException(path, "cannot be read (permission denied)");
        }
        catch (IOException e)
        {
            throw new DataFormatException(path, $"cannot be read ({e.Message})");
        }
        return Decode(bytes, path);
    }

    /// <summary>Decodes PNG bytes; <paramref name="source"/> names them in the error messages.</summary>
    public static byte[] Decode(ReadOnlySpan<byte> png, string source)
    {
        if (png.Length > MaxBytes)
            throw new DataFormatException(source, $"is {png.Length} bytes; a 28x28 PNG digit is at most {MaxBytes}");
        if (png.Length < Signature.Length || !png[..Signature.Length].SequenceEqual(Signature))
            throw new DataFormatException(source, $"is not a readable PNG (no PNG signature; {Guess(png)})");
        var header = ReadHeader(png, source);
        if (header.Width != Side || header.Height != Side)
            throw new DataFormatException(
                source,
                $"is {header.Width}x{header.Height}; MNIST digits are 28x28 (white on black)"
            );
        if (header.Interlaced)
            throw new DataFormatException(source, "is an interlaced (Adam7) PNG; save the digit without interlacing");

        byte[]? palette = null;
        using var compressed = new MemoryStream();
        int offset = Signature.Length + 8 + 13 + 4;
        bool ended = false;
        while (!ended)
        {
            if (png.Length - offset < 8)
                throw Truncated(source);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(png[offset..]);
            ReadOnlySpan<byte> type = png.Slice(offset + 4, 4);
            if (length > int.MaxValue || png.Length - offset - 12 < length)
                throw Truncated(source);
            ReadOnlySpan<byte> data = png.Slice(offset + 8, (int)length);
            offset += 12 + (int)length;
            if (type.SequenceEqual("IDAT"u8))
                compressed.Write(data);
            else if (type.SequenceEqual("PLTE"u8))
            {
                if (length % 3 != 0 || length == 0 || length > 3 * 256)
                    throw new DataFormatException(source, $"is not a readable PNG (PLTE chunk of {length} bytes)");
                palette = data.ToArray();
            }
            else if (type.SequenceEqual("IEND"u8))
                ended = true;
            else if ((type[0] & 0x20) == 0 && !type.SequenceEqual("IHDR"u8))
                // an upper-case first letter marks a chunk a reader must understand to show the image
                throw new DataFormatException(
                    source,
                    $"is not a readable PNG (unknown critical chunk '{Ascii(type)}')"
                );
        }
        if (compressed.Length == 0)
            throw new DataFormatException(source, "is not a readable PNG (no image data)");
        if (header.ColourType == 3 && palette == null)
            throw new DataFormatException(source, "is not a readable PNG (palette image without a PLTE chunk)");

        int channels = header.ColourType switch
        {
            0 => 1,
            2 => 3,
            3 => 1,
            4 => 2,
            _ => 4,
        };
        int rowBytes = (Side * channels * header.BitDepth + 7) / 8;
        byte[] raw = new byte[Side * (1 + rowBytes)];
        compressed.Position = 0;
        try
        {
            using var inflater = new ZLibStream(compressed, CompressionMode.Decompress);
            // reads exactly the 28 filtered rows and stops: whatever follows (a deflate bomb) is never inflated
            if (inflater.ReadAtLeast(raw, raw.Length, throwOnEndOfStream: false) < raw.Length)
                throw new DataFormatException(source, "is not a readable PNG (image data ends early: truncated)");
        }
        catch (InvalidDataException e)
        {
            throw new DataFormatException(source, $"is not a readable PNG (corrupt image data: {e.Message})");
        }
        int bytesPerPixel = Math.Max(1, channels * header.BitDepth / 8);
        Unfilter(raw, rowBytes, bytesPerPixel, source);
        return ToGrey(raw, rowBytes, header, channels, palette, source);
    }

    private readonly record struct Header(int Width, int Height, int BitDepth, int ColourType, bool Interlaced);

    private static Header ReadHeader(ReadOnlySpan<byte> png, string source)
    {
        int at = Signature.Length;
        if (png.Length < at + 8 + 13)
            throw Truncated(source);
        if (BinaryPrimitives.ReadUInt32BigEndian(png[at..]) != 13 || !png.Slice(at + 4, 4).SequenceEqual("IHDR"u8))
            throw new DataFormatException(source, "is not a readable PNG (the first chunk is not a 13-byte IHDR)");
        ReadOnlySpan<byte> h = png.Slice(at + 8, 13);
        uint width = BinaryPrimitives.ReadUInt32BigEndian(h),
            height = BinaryPrimitives.ReadUInt32BigEndian(h[4..]);
        int depth = h[8],
            colour = h[9];
        bool valid = colour switch
        {
            0 => depth is 1 or 2 or 4 or 8 or 16,
            3 => depth is 1 or 2 or 4 or 8,
            2 or 4 or 6 => depth is 8 or 16,
            _ => false,
        };
        if (!valid)
            throw new DataFormatException(
                source,
                $"is not a readable PNG (colour type {colour} with bit depth {depth})"
            );
        if (h[10] != 0 || h[11] != 0 || h[12] > 1)
            throw new DataFormatException(
                source,
                "is not a readable PNG (unknown compression, filter or interlace method)"
            );
        return new Header(
            (int)Math.Min(width, int.MaxValue),
            (int)Math.Min(height, int.MaxValue),
            depth,
            colour,
            h[12] == 1
        );
    }

    // PNG's five row filters, undone in place (the spec's "Filter Algorithms"): x (raw) and its left, up, up-left.
    private static void Unfilter(byte[] raw, int rowBytes, int bpp, string source)
    {
        int stride = rowBytes + 1;
        for (int y = 0; y < Side; y++)
        {
            Span<byte> row = raw.AsSpan(y * stride + 1, rowBytes);
            ReadOnlySpan<byte> up = y == 0 ? default : raw.AsSpan((y - 1) * stride + 1, rowBytes);
            int filter = raw[y * stride];
            for (int x = 0; x < rowBytes; x++)
            {
                int a = x >= bpp ? row[x - bpp] : 0,
                    b = y > 0 ? up[x] : 0,
                    c = x >= bpp && y > 0 ? up[x - bpp] : 0;
                row[x] += filter switch
                {
                    0 => 0,
                    1 => (byte)a,
                    2 => (byte)b,
                    3 => (byte)((a + b) >> 1),
                    4 => Paeth(a, b, c),
                    _ => throw new DataFormatException(
                        source,
                        $"is not a readable PNG (row {y} has filter type {filter})"
                    ),
                };
            }
        }
    }

    private static byte Paeth(int a, int b, int c)
    {
        int p = a + b - c,
            pa = Math.Abs(p - a),
            pb = Math.Abs(p - b),
            pc = Math.Abs(p - c);
        return (byte)(
            pa <= pb && pa <= pc ? a
            : pb <= pc ? b
            : c
        );
    }

    private static byte[] ToGrey(byte[] raw, int rowBytes, Header header, int channels, byte[]? palette, string source)
    {
        var grey = new byte[PixelCount];
        int depth = header.BitDepth,
            stride = rowBytes + 1;
        for (int y = 0; y < Side; y++)
        {
            ReadOnlySpan<byte> row = raw.AsSpan(y * stride + 1, rowBytes);
            for (int x = 0; x < Side; x++)
            {
                byte value;
                if (depth < 8)
                {
                    int bit = x * depth,
                        sample = (row[bit >> 3] >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
                    value =
                        header.ColourType == 3
                            ? PaletteGrey(palette!, sample, source)
                            : (byte)(sample * 255 / ((1 << depth) - 1));
                }
                else
                {
                    // 16-bit samples keep their high byte, as stb_image does
                    int step = depth / 8,
                        at = x * channels * step;
                    value = header.ColourType switch
                    {
                        0 or 4 => row[at],
                        3 => PaletteGrey(palette!, row[at], source),
                        _ => Luma(row[at], row[at + step], row[at + 2 * step]),
                    };
                }
                grey[y * Side + x] = value;
            }
        }
        return grey;
    }

    private static byte PaletteGrey(byte[] palette, int index, string source)
    {
        if (3 * index + 2 >= palette.Length)
            throw new DataFormatException(
                source,
                $"is not a readable PNG (palette index {index} beyond the PLTE chunk)"
            );
        return Luma(palette[3 * index], palette[3 * index + 1], palette[3 * index + 2]);
    }

    // stb_image's integer luma (77, 150, 29)/256, so colour PNGs read as they did before this reader
    private static byte Luma(int r, int g, int b) => (byte)((r * 77 + g * 150 + b * 29) >> 8);

    private static DataFormatException Truncated(string source) =>
        new(source, "is not a readable PNG (the file ends inside a chunk: truncated)");

    private static string Ascii(ReadOnlySpan<byte> type)
    {
        Span<char> chars = stackalloc char[type.Length];
        for (int i = 0; i < type.Length; i++)
            chars[i] = type[i] is >= 0x20 and < 0x7F ? (char)type[i] : '?';
        return new string(chars);
    }

    // Names what the bytes look like instead, so "photo.png" that is really a JPEG says so.
    private static string Guess(ReadOnlySpan<byte> bytes) =>
        bytes switch
        {
            [] => "the file is empty",
            [0xFF, 0xD8, ..] => "it looks like a JPEG",
            [(byte)'G', (byte)'I', (byte)'F', (byte)'8', ..] => "it looks like a GIF",
            [(byte)'B', (byte)'M', ..] => "it looks like a BMP",
            [(byte)'R', (byte)'I', (byte)'F', (byte)'F', ..] => "it looks like a RIFF/WebP file",
            [0x89, (byte)'P', (byte)'N', (byte)'G', ..] => "a damaged PNG signature",
            _ => $"it starts with {Convert.ToHexString(bytes[..Math.Min(4, bytes.Length)])}",
        };
}

using System.Buffers.Binary;
using System.IO.Compression;
using StbImageWriteSharp;

namespace MnistNative.Tests.Serving;

/// <summary>
/// PNG bytes for the tests: well-formed ones in several colour types, and the hostile files of defect 7.
/// </summary>
internal static class PngFiles
{
    private static ReadOnlySpan<byte> Signature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>A 28x28 grey image written by stb_image_write (filters chosen per row, zlib compressed).</summary>
    public static byte[] Grey(byte[] pixels) => Stb(pixels, ColorComponents.Grey);

    /// <summary>The same grey levels as RGB or RGBA (r = g = b, opaque), which read back as the same grey.</summary>
    public static byte[] Colour(byte[] pixels, bool alpha)
    {
        int channels = alpha ? 4 : 3;
        var data = new byte[pixels.Length * channels];
        for (int i = 0; i < pixels.Length; i++)
            for (int c = 0; c < channels; c++)
                data[i * channels + c] = c == 3 ? (byte)255 : pixels[i];
        return Stb(data, alpha ? ColorComponents.RedGreenBlueAlpha : ColorComponents.RedGreenBlue);
    }

    private static byte[] Stb(byte[] data, ColorComponents components)
    {
        using var stream = new MemoryStream();
        new ImageWriter().WritePng(data, 28, 28, components, stream);
        return stream.ToArray();
    }

    /// <summary>
    /// 28x28 grey at 16 bits (each byte b as b*257), filter 0 on every row, written here chunk by chunk.
    /// </summary>
    public static byte[] Grey16(byte[] pixels)
    {
        var raw = new byte[28 * (1 + 56)];
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++)
            {
                raw[y * 57 + 1 + 2 * x] = pixels[y * 28 + x];
                raw[y * 57 + 2 + 2 * x] = pixels[y * 28 + x];
            }
        return Png(28, 28, bitDepth: 16, colourType: 0, Deflate(raw));
    }

    /// <summary>A PNG header declaring any size, followed by <paramref name="idat"/> and IEND.</summary>
    public static byte[] Png(uint width, uint height, byte bitDepth, byte colourType, byte[] idat, bool end = true)
    {
        using var png = new MemoryStream();
        png.Write(Signature);
        var header = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(header, width);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(4), height);
        header[8] = bitDepth;
        header[9] = colourType;
        Chunk(png, "IHDR", header);
        if (idat.Length > 0)
            Chunk(png, "IDAT", idat);
        if (end)
            Chunk(png, "IEND", []);
        return png.ToArray();
    }

    public static byte[] Deflate(byte[] raw)
    {
        using var compressed = new MemoryStream();
        using (var zlib = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true))
            zlib.Write(raw);
        return compressed.ToArray();
    }

    /// <summary>The header of a 10000x10000 grey PNG and the first rows of its (all black) image data.</summary>
    public static byte[] Huge() => Png(10_000, 10_000, 8, 0, Deflate(new byte[64 * 10_001]), end: false);

    /// <summary>The first 11 bytes of a JPEG (SOI and the start of a JFIF APP0 segment).</summary>
    public static byte[] TruncatedJpeg() =>
        [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, (byte)'J', (byte)'F', (byte)'I', (byte)'F', 0x00];

    /// <summary>A 33-byte GIF whose logical screen and image descriptor declare 23170x23170.</summary>
    public static byte[] GifHeader()
    {
        var gif = new byte[33];
        "GIF89a"u8.CopyTo(gif);
        BinaryPrimitives.WriteUInt16LittleEndian(gif.AsSpan(6), 23170);
        BinaryPrimitives.WriteUInt16LittleEndian(gif.AsSpan(8), 23170);
        gif[13] = 0x2C; // image descriptor at (0,0), 23170x23170
        BinaryPrimitives.WriteUInt16LittleEndian(gif.AsSpan(18), 23170);
        BinaryPrimitives.WriteUInt16LittleEndian(gif.AsSpan(20), 23170);
        return gif;
    }

    private static void Chunk(Stream png, string type, byte[] data)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(word, (uint)data.Length);
        png.Write(word);
        byte[] typeBytes = System.Text.Encoding.ASCII.GetBytes(type);
        png.Write(typeBytes);
        png.Write(data);
        BinaryPrimitives.WriteUInt32BigEndian(word, Crc32([.. typeBytes, .. data]));
        png.Write(word);
    }

    // The CRC-32 of PNG's chunks (ISO 3309, reflected polynomial 0xEDB88320).
    private static uint Crc32(byte[] bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++)
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }
}

using MnistNative.Formats;
using System.Buffers.Binary;
using System.IO.Compression;
using MnistNative.Core;

namespace MnistNative.Data;

/// <summary>
/// Reader for the IDX files MNIST ships in (raw or .gz): a big-endian header (two zero bytes, a type code,
/// the number of dimensions, then each dimension as a 32-bit integer) followed by the values.
/// Header counts are checked against the bytes actually present before anything is allocated from them.
/// </summary>
public static class Idx
{
    public const int ImageMagic = 0x00000803; // unsigned bytes, 3 dimensions (n, 28, 28)
    public const int LabelMagic = 0x00000801; // unsigned bytes, 1 dimension (n)
    private const int MaxFileBytes = 256 << 20; // MNIST's largest file is 47 MB

    /// <summary>Reads an images file: returns n * 784 pixel bytes.</summary>
    public static byte[] ReadImages(string path, out int count)
    {
        byte[] file = ReadFile(path);
        var header = ParseHeader(path, file, ImageMagic, 3, "images");
        count = header[0];
        if (header[1] != 28 || header[2] != 28)
            throw new DataFormatException(path, $"images are {header[1]}x{header[2]}, expected 28x28");
        return Payload(path, file, 16, (long)count * LabeledImages.PixelsPerImage, $"{count} images");
    }

    /// <summary>Reads a labels file: returns n labels, each 0..9.</summary>
    public static byte[] ReadLabels(string path)
    {
        byte[] file = ReadFile(path);
        int count = ParseHeader(path, file, LabelMagic, 1, "labels")[0];
        byte[] labels = Payload(path, file, 8, count, $"{count} labels");
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] > 9) throw new DataFormatException(path, $"label {labels[i]} at index {i} is above 9");
        return labels;
    }

    /// <summary>Reads a matching pair of images and labels files.</summary>
    public static LabeledImages ReadPair(string imagesPath, string labelsPath)
    {
        byte[] pixels = ReadImages(imagesPath, out int count);
        byte[] labels = ReadLabels(labelsPath);
        if (labels.Length != count)
            throw new DataFormatException(labelsPath, $"holds {labels.Length} labels but {System.IO.Path.GetFileName(imagesPath)} holds {count} images");
        return new LabeledImages(pixels, labels);
    }

    /// <summary>Writes an IDX file of unsigned bytes (used by tests and tools).</summary>
    public static byte[] Encode(ReadOnlySpan<int> dims, ReadOnlySpan<byte> values)
    {
        var bytes = new byte[4 + 4 * dims.Length + values.Length];
        bytes[2] = 0x08;
        bytes[3] = (byte)dims.Length;
        for (int d = 0; d < dims.Length; d++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * d), dims[d]);
        values.CopyTo(bytes.AsSpan(4 + 4 * dims.Length));
        return bytes;
    }

    /// <summary>The file's bytes; a .gz file (by name or by its magic bytes) is decompressed, up to a cap.</summary>
    internal static byte[] ReadFile(string path)
    {
        byte[] raw;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new DataFormatException(path, "file not found");
            if (info.Length > MaxFileBytes) throw new DataFormatException(path, $"is {info.Length} bytes, larger than any MNIST file");
            raw = File.ReadAllBytes(path);
        }
        catch (IOException e) { throw new DataFormatException(path, $"cannot be read ({e.Message})"); }
        catch (UnauthorizedAccessException) { throw new DataFormatException(path, "permission denied"); }
        if (raw.Length >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) return Gunzip(path, raw);
        return raw;
    }

    private static byte[] Gunzip(string path, byte[] compressed)
    {
        try
        {
            using var gz = new GZipStream(new MemoryStream(compressed), CompressionMode.Decompress);
            using var output = new MemoryStream();
            var buffer = new byte[81920];
            int read;
            while ((read = gz.Read(buffer, 0, buffer.Length)) > 0)
            {
                if (output.Length + read > MaxFileBytes) throw new DataFormatException(path, "decompresses to more than any MNIST file");
                output.Write(buffer, 0, read);
            }
            return output.ToArray();
        }
        catch (InvalidDataException e) { throw new DataFormatException(path, $"is not valid gzip ({e.Message})"); }
        catch (EndOfStreamException) { throw new DataFormatException(path, "gzip stream is truncated"); }
    }

    private static int[] ParseHeader(string path, byte[] file, int expectedMagic, int dims, string what)
    {
        int headerBytes = 4 + 4 * dims;
        if (file.Length < 4) throw new DataFormatException(path, $"is truncated: {file.Length} bytes, too short for an IDX header");
        int magic = BinaryPrimitives.ReadInt32BigEndian(file);
        if (magic != expectedMagic)
            throw new DataFormatException(path, $"wrong magic number 0x{magic:x8} (expected 0x{expectedMagic:x8} for an IDX {what} file)");
        if (file.Length < headerBytes) throw new DataFormatException(path, $"is truncated: {file.Length} bytes, the header alone needs {headerBytes}");
        var result = new int[dims];
        for (int d = 0; d < dims; d++)
        {
            result[d] = BinaryPrimitives.ReadInt32BigEndian(file.AsSpan(4 + 4 * d));
            if (result[d] < 0) throw new DataFormatException(path, $"dimension {d} is negative ({result[d]})");
        }
        return result;
    }

    private static byte[] Payload(string path, byte[] file, int offset, long expected, string what)
    {
        long present = file.Length - offset;
        if (present < expected)
            throw new DataFormatException(path, $"is truncated: the header claims {what} ({expected} bytes) but only {present} bytes follow it");
        if (present > expected)
            throw new DataFormatException(path, $"has {present - expected} unexpected bytes after {what}");
        return file.AsSpan(offset, (int)expected).ToArray();
    }
}

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

    /// <summary>
    /// Reads an images file: returns the pixel bytes of its first min(n, <paramref name="take"/>) images; n, the
    /// file's own count, comes back in <paramref name="count"/>. The whole file is still checked for its size.
    /// </summary>
    public static byte[] ReadImages(string path, out int count, int take = int.MaxValue) =>
        Read(path, ImageMagic, out count, take);

    /// <summary>Reads a labels file: returns its first min(n, <paramref name="take"/>) labels, each 0..9.</summary>
    public static byte[] ReadLabels(string path, int take = int.MaxValue) => ReadLabels(path, out _, take);

    /// <summary>
    /// As <see cref="ReadLabels(string, int)"/>; n, the file's own count, comes back in <paramref name="count"/>.
    /// </summary>
    public static byte[] ReadLabels(string path, out int count, int take = int.MaxValue)
    {
        byte[] labels = Read(path, LabelMagic, out count, take);
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] > 9) throw new DataFormatException(path, $"label {labels[i]} at index {i} is above 9");
        return labels;
    }

    /// <summary>
    /// Reads a matching pair of images and labels files, keeping the first <paramref name="take"/> items.
    /// </summary>
    public static LabeledImages ReadPair(string imagesPath, string labelsPath, int take = int.MaxValue)
    {
        byte[] pixels = ReadImages(imagesPath, out int count, take);
        byte[] labels = ReadLabels(labelsPath, out int labelCount, take);
        if (labelCount != count)
            throw new DataFormatException(labelsPath,
                $"holds {labelCount} labels but {System.IO.Path.GetFileName(imagesPath)} holds {count} images");
        return new LabeledImages(pixels, labels);
    }

    /// <summary>
    /// Checks the header and the size of the payload it declares, then returns the first <paramref name="take"/>
    /// items. A raw file is read only as far as needed (the training run keeps 10,000 of 60,000 images, so it never
    /// holds the other 39 MB); a gzip file is inflated whole, up to the cap.
    /// </summary>
    private static byte[] Read(string path, int magic, out int count, int take)
    {
        bool images = magic == ImageMagic;
        string what = images ? "images" : "labels";
        int dims = images ? 3 : 1, headerBytes = 4 + 4 * dims, itemBytes = images ? LabeledImages.PixelsPerImage : 1;
        if (Directory.Exists(path)) throw new DataFormatException(path, "is a directory, not an IDX file");
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1,
                FileOptions.SequentialScan);
            if (stream.Length > MaxFileBytes)
                throw new DataFormatException(path, $"is {stream.Length} bytes, larger than any MNIST file");
            var head = new byte[Math.Min(headerBytes, stream.Length)];
            stream.ReadExactly(head);
            byte[]? inflated = head.Length >= 2 && head[0] == 0x1f && head[1] == 0x8b
                ? Gunzip(path, File.ReadAllBytes(path)) : null;
            int[] h = ParseHeader(path, inflated ?? head, magic, dims, what);
            if (images) CheckImageShape(path, h);
            CheckPayload(path, (inflated?.Length ?? stream.Length) - headerBytes, (long)h[0] * itemBytes,
                $"{h[0]} {what}");
            count = h[0];
            int keep = (int)(Math.Min(h[0], take) * (long)itemBytes);
            if (inflated != null) return inflated.AsSpan(headerBytes, keep).ToArray();
            var values = new byte[keep];
            stream.ReadExactly(values);
            return values;
        }
        catch (FileNotFoundException) { throw new DataFormatException(path, "file not found"); }
        catch (DirectoryNotFoundException) { throw new DataFormatException(path, "file not found"); }
        catch (UnauthorizedAccessException) { throw new DataFormatException(path, "permission denied"); }
        catch (EndOfStreamException) { throw new DataFormatException(path, "changed size while it was being read"); }
        catch (IOException e) { throw new DataFormatException(path, $"cannot be read ({e.Message})"); }
    }

    private static void CheckImageShape(string path, int[] header)
    {
        if (header[1] != 28 || header[2] != 28)
            throw new DataFormatException(path, $"images are {header[1]}x{header[2]}, expected 28x28");
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
                if (output.Length + read > MaxFileBytes)
                    throw new DataFormatException(path, "decompresses to more than any MNIST file");
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
        if (file.Length < 4)
            throw new DataFormatException(path, $"is truncated: {file.Length} bytes, too short for an IDX header");
        int magic = BinaryPrimitives.ReadInt32BigEndian(file);
        if (magic != expectedMagic)
            throw new DataFormatException(path,
                $"wrong magic number 0x{magic:x8} (expected 0x{expectedMagic:x8} for an IDX {what} file)");
        if (file.Length < headerBytes)
            throw new DataFormatException(path,
                $"is truncated: {file.Length} bytes, the header alone needs {headerBytes}");
        var result = new int[dims];
        for (int d = 0; d < dims; d++)
        {
            result[d] = BinaryPrimitives.ReadInt32BigEndian(file.AsSpan(4 + 4 * d));
            if (result[d] < 0) throw new DataFormatException(path, $"dimension {d} is negative ({result[d]})");
        }
        return result;
    }

    private static void CheckPayload(string path, long present, long expected, string what)
    {
        if (present < expected)
            throw new DataFormatException(path,
                $"is truncated: the header claims {what} ({expected} bytes) but only {present} bytes follow it");
        if (present > expected)
            throw new DataFormatException(path, $"has {present - expected} unexpected bytes after {what}");
    }
}

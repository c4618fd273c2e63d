using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace MnistNative.Formats;

/// <summary>One array from a .npy / .npz file: its dtype, shape (C order) and little-endian value bytes.</summary>
public sealed class NpyArray(string descr, int[] shape, byte[] data)
{
    public string Descr { get; } = descr;
    public int[] Shape { get; } = shape;
    public byte[] Data { get; } = data;
    public long Length => Shape.Aggregate(1L, (a, d) => a * d);

    public bool IsFloat => Descr is "<f4" or "<f8";

    /// <summary>The values as float64 (any numeric dtype this reader accepts).</summary>
    public double[] ToDoubles()
    {
        var v = new double[Length];
        ReadOnlySpan<byte> d = Data;
        switch (Descr)
        {
            case "<f8": for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadDoubleLittleEndian(d[(8 * i)..]); break;
            case "<f4": for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadSingleLittleEndian(d[(4 * i)..]); break;
            case "<i8": for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadInt64LittleEndian(d[(8 * i)..]); break;
            case "<i4": for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadInt32LittleEndian(d[(4 * i)..]); break;
            case "|u1": for (int i = 0; i < v.Length; i++) v[i] = d[i]; break;
            case "|i1": for (int i = 0; i < v.Length; i++) v[i] = (sbyte)d[i]; break;
            default: throw new InvalidOperationException($"dtype {Descr} has no numeric conversion");
        }
        return v;
    }
}

/// <summary>
/// numpy's .npz (a zip of .npy files): read without ever unpickling (object arrays are refused), and
/// written as np.savez does (stored entries, version 1.0 headers padded to 64 bytes), so np.load reads it.
/// </summary>
public static partial class Npz
{
    private static readonly Dictionary<string, int> ItemSizes = new()
    {
        ["<f8"] = 8, ["<f4"] = 4, ["<i8"] = 8, ["<i4"] = 4, ["|u1"] = 1, ["|i1"] = 1,
    };
    private const long MaxArrayBytes = 1L << 30;

    public static Dictionary<string, NpyArray> Read(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException(path, "file not found");
        try
        {
            using var file = File.OpenRead(path);
            return Read(file, path);
        }
        catch (IOException e) when (e is not FileNotFoundException and not EndOfStreamException) { throw new DataFormatException(path, $"cannot be read ({e.Message})"); }
    }

    /// <summary>Reads a .npz from a seekable stream (e.g. a model held in memory); <paramref name="name"/>
    /// stands for the file in error messages.</summary>
    public static Dictionary<string, NpyArray> Read(Stream stream, string name)
    {
        try
        {
            using var zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
            var arrays = new Dictionary<string, NpyArray>(StringComparer.Ordinal);
            foreach (var entry in zip.Entries)
            {
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal)) continue;
                string arrayName = entry.FullName[..^4];
                using Stream s = entry.Open();
                arrays[arrayName] = ReadNpy(name, arrayName, s, entry.Length);
            }
            return arrays;
        }
        catch (InvalidDataException e) { throw new DataFormatException(name, $"is not a valid .npz (zip) file ({e.Message})"); }
        catch (EndOfStreamException) { throw new DataFormatException(name, "is truncated"); }
        catch (IOException e) when (e is not FileNotFoundException) { throw new DataFormatException(name, $"cannot be read ({e.Message})"); }
    }

    private static NpyArray ReadNpy(string path, string name, Stream s, long entryLength)
    {
        Span<byte> pre = stackalloc byte[10];
        s.ReadExactly(pre);
        if (pre[0] != 0x93 || !pre[1..6].SequenceEqual("NUMPY"u8))
            throw new DataFormatException(path, $"array '{name}' is not a .npy entry (bad magic)");
        int major = pre[6];
        int headerLength;
        int prefix;
        if (major == 1) { headerLength = BinaryPrimitives.ReadUInt16LittleEndian(pre[8..]); prefix = 10; }
        else if (major is 2 or 3)
        {
            Span<byte> two = stackalloc byte[2];
            s.ReadExactly(two);
            Span<byte> len = [pre[8], pre[9], two[0], two[1]];
            headerLength = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(len), int.MaxValue);
            prefix = 12;
        }
        else throw new DataFormatException(path, $"array '{name}' has unsupported .npy version {major}");
        if (headerLength > 65536) throw new DataFormatException(path, $"array '{name}' has an implausible header length {headerLength}");
        var headerBytes = new byte[headerLength];
        s.ReadExactly(headerBytes);
        string header = Encoding.Latin1.GetString(headerBytes);

        Match descr = DescrPattern().Match(header);
        if (!descr.Success)
        {
            if (header.Contains("'descr': [", StringComparison.Ordinal))
                throw new DataFormatException(path, $"array '{name}' has a structured dtype, which is not supported");
            throw new DataFormatException(path, $"array '{name}' has an unreadable header");
        }
        string dtype = descr.Groups[1].Value;
        if (dtype.Contains('O'))
            throw new DataFormatException(path, $"array '{name}' holds Python objects (pickled data); refused, it is never deserialised");
        if (!ItemSizes.TryGetValue(dtype, out int itemSize))
            throw new DataFormatException(path, $"array '{name}' has unsupported dtype '{dtype}' (supported: {string.Join(", ", ItemSizes.Keys)})");
        bool fortran = FortranPattern().Match(header) is { Success: true } f && f.Groups[1].Value == "True";
        Match shapeMatch = ShapePattern().Match(header);
        if (!shapeMatch.Success) throw new DataFormatException(path, $"array '{name}' has no shape in its header");
        int[] shape;
        try
        {
            shape = shapeMatch.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => int.Parse(t, NumberStyles.None, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new DataFormatException(path, $"array '{name}' has an unreadable shape ({shapeMatch.Groups[1].Value})");
        }
        if (fortran && shape.Length > 2)
        {
            throw new DataFormatException(path,
                $"array '{name}' is Fortran-ordered with {shape.Length} dimensions; only 1-D and 2-D ones are supported");
        }
        long count = 1;
        foreach (int d in shape) count = checked(count * d);
        long bytes = count * itemSize;
        long available = entryLength - prefix - headerLength;
        if (bytes > available || bytes > MaxArrayBytes)
            throw new DataFormatException(path, $"array '{name}' is truncated: its header claims shape ({string.Join(", ", shape)}) = {bytes} bytes but the entry holds {Math.Max(0, available)}");
        var data = new byte[bytes];
        s.ReadExactly(data);
        if (fortran && shape.Length > 1) data = FortranToC(data, shape, itemSize);
        return new NpyArray(dtype, shape, data);
    }

    private static byte[] FortranToC(byte[] data, int[] shape, int itemSize)
    {
        if (shape.Length != 2) throw new NotSupportedException("Fortran-ordered arrays of more than 2 dimensions are not supported");
        int rows = shape[0], cols = shape[1];
        var c = new byte[data.Length];
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++)
                Buffer.BlockCopy(data, (k * rows + r) * itemSize, c, (r * cols + k) * itemSize, itemSize);
        return c;
    }

    /// <summary>One array to write: float64 values in C order with the given shape.</summary>
    public readonly record struct Entry(string Name, int[] Shape, double[] Values);

    /// <summary>Writes a .npz of float64 arrays, to a temp file first, then renamed over <paramref name="path"/>.</summary>
    public static void Write(string path, IEnumerable<Entry> arrays)
    {
        AtomicFile.Write(path, stream =>
        {
            using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
            foreach (Entry a in arrays)
            {
                if (a.Shape.Aggregate(1L, (x, d) => x * d) != a.Values.Length)
                    throw new ArgumentException($"array '{a.Name}': shape does not match {a.Values.Length} values");
                var entry = zip.CreateEntry(a.Name + ".npy", CompressionLevel.NoCompression);
                using Stream s = entry.Open();
                WriteNpy(s, a.Shape, a.Values);
            }
        });
    }

    private static void WriteNpy(Stream s, int[] shape, double[] values)
    {
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string dict = $"{{'descr': '<f8', 'fortran_order': False, 'shape': ({dims}), }}";
        int total = 10 + dict.Length + 1;
        int padded = (total + 63) / 64 * 64;
        string header = dict + new string(' ', padded - total) + "\n";
        Span<byte> pre = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, 0, 0];
        BinaryPrimitives.WriteUInt16LittleEndian(pre[8..], (ushort)header.Length);
        s.Write(pre);
        s.Write(Encoding.Latin1.GetBytes(header));
        var buffer = new byte[values.Length * 8];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(buffer.AsSpan(8 * i), values[i]);
        s.Write(buffer);
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}

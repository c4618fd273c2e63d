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
            case "<f8":
                for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadDoubleLittleEndian(d[(8 * i)..]);
                break;
            case "<f4":
                for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadSingleLittleEndian(d[(4 * i)..]);
                break;
            case "<i8":
                for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadInt64LittleEndian(d[(8 * i)..]);
                break;
            case "<i4":
                for (int i = 0; i < v.Length; i++) v[i] = BinaryPrimitives.ReadInt32LittleEndian(d[(4 * i)..]);
                break;
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
    /// <summary>
    /// Largest array this reader inflates (1 GiB, a Keras mnist.npz is 55 MB, a 784-4096-4096-10 model 160 MB).
    /// </summary>
    public const long MaxArrayBytes = 1L << 30;

    /// <summary>Largest sum of the declared sizes of the entries read from one file.</summary>
    public const long MaxTotalBytes = 1L << 30;

    /// <summary>
    /// Most entries one .npz may list (a 16-layer checkpoint holds under 100); checked before any is read.
    /// </summary>
    public const int MaxEntries = 1024;

    /// <summary>
    /// Reads the arrays of a .npz whose names <paramref name="wanted"/> accepts (all when null); the other entries are
    /// never inflated. Throws <see cref="DataFormatException"/> naming the file for anything it cannot read: too many
    /// entries, duplicate names, sizes over the caps, bad headers, truncation, an unreadable file.
    /// </summary>
    public static Dictionary<string, NpyArray> Read(string path, Func<string, bool>? wanted = null)
    {
        if (Directory.Exists(path)) throw new DataFormatException(path, "is a directory, not a .npz file");
        if (!File.Exists(path)) throw new DataFormatException(path, "file not found");
        try
        {
            using var file = File.OpenRead(path);
            return Read(file, path, wanted);
        }
        catch (IOException e) when (e is not FileNotFoundException and not EndOfStreamException)
        {
            throw new DataFormatException(path, $"cannot be read ({e.GetType().Name})");
        }
        catch (UnauthorizedAccessException)
        {
            throw new DataFormatException(path, "cannot be read (permission denied)");
        }
    }

    /// <summary>Reads a .npz from a seekable stream (e.g. a model held in memory); <paramref name="name"/>
    /// stands for the file in error messages. See <see cref="Read(string, Func{string, bool}?)"/>.</summary>
    public static Dictionary<string, NpyArray> Read(Stream stream, string name, Func<string, bool>? wanted = null)
    {
        try
        {
            long listed = DeclaredEntryCount(stream);
            if (listed > MaxEntries)
                throw new DataFormatException(name, $"lists {listed} entries; a .npz of this project holds at most " +
                    $"{MaxEntries}");
            using var zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
            if (zip.Entries.Count > MaxEntries)
                throw new DataFormatException(name, $"holds {zip.Entries.Count} entries; a .npz of this project " +
                    $"holds at most {MaxEntries}");
            var selected = new List<(string Array, ZipArchiveEntry Entry)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            long total = 0;
            foreach (ZipArchiveEntry entry in zip.Entries)
            {
                if (!seen.Add(entry.FullName))
                    throw new DataFormatException(name, $"holds the entry '{Printable(entry.FullName)}' twice");
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal)) continue;
                string arrayName = entry.FullName[..^4];
                if (wanted != null && !wanted(arrayName)) continue;
                if (entry.Length > MaxArrayBytes)
                    throw new DataFormatException(name, $"array '{Printable(arrayName)}' declares {entry.Length} " +
                        $"bytes; at most {MaxArrayBytes} are read");
                total += entry.Length;
                if (total > MaxTotalBytes)
                    throw new DataFormatException(name, $"its arrays declare over {MaxTotalBytes} bytes in all; " +
                        $"refused before inflating them");
                selected.Add((arrayName, entry));
            }
            var arrays = new Dictionary<string, NpyArray>(StringComparer.Ordinal);
            foreach (var (arrayName, entry) in selected)
            {
                using Stream s = entry.Open();
                arrays[arrayName] = ReadNpy(name, Printable(arrayName), s, entry.Length);
            }
            return arrays;
        }
        catch (InvalidDataException) { throw new DataFormatException(name, "is not a valid .npz (zip) file"); }
        catch (EndOfStreamException) { throw new DataFormatException(name, "is truncated"); }
        catch (IOException e) when (e is not FileNotFoundException)
        {
            throw new DataFormatException(name, $"cannot be read ({e.GetType().Name})");
        }
        catch (NotSupportedException)
        {
            throw new DataFormatException(name,
                "uses a zip feature this reader does not support (encryption, an unknown compression method)");
        }
    }

    /// <summary>
    /// The text with control characters and anything outside printable ASCII shown as '?', at most 64 characters.
    /// </summary>
    public static string Printable(string text)
    {
        var b = new StringBuilder(Math.Min(text.Length, 64));
        foreach (char c in text.Length > 64 ? text[..64] : text) b.Append(c is >= ' ' and <= '~' ? c : '?');
        if (text.Length > 64) b.Append("...");
        return b.ToString();
    }

    // The entry count of the end-of-central-directory record, read before ZipArchive lists (and allocates) every
    // entry; -1 when there is no such record (ZipArchive then reports the file as invalid).
    private static long DeclaredEntryCount(Stream stream)
    {
        if (!stream.CanSeek) return -1;
        long start = stream.Position;
        int tail = (int)Math.Min(stream.Length, 22 + 65535);
        var buffer = new byte[tail];
        stream.Seek(-tail, SeekOrigin.End);
        stream.ReadExactly(buffer);
        stream.Position = start;
        for (int i = tail - 22; i >= 0; i--)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(i)) != 0x06054b50) continue;
            ushort count = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(i + 10));
            return count == 0xFFFF ? -1 : count; // zip64: ZipArchive's own count is checked after listing
        }
        return -1;
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
        if (headerLength > 65536)
            throw new DataFormatException(path, $"array '{name}' has an implausible header length {headerLength}");
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
            throw new DataFormatException(path,
                $"array '{name}' holds Python objects (pickled data); refused, it is never deserialised");
        if (!ItemSizes.TryGetValue(dtype, out int itemSize))
            throw new DataFormatException(path,
                $"array '{name}' has unsupported dtype '{dtype}' (supported: {string.Join(", ", ItemSizes.Keys)})");
        bool fortran = FortranPattern().Match(header) is { Success: true } f && f.Groups[1].Value == "True";
        Match shapeMatch = ShapePattern().Match(header);
        if (!shapeMatch.Success) throw new DataFormatException(path, $"array '{name}' has no shape in its header");
        int[] shape;
        try
        {
            shape = shapeMatch.Groups[1].Value
                .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => int.Parse(t, NumberStyles.None, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new DataFormatException(path,
                $"array '{name}' has an unreadable shape ({shapeMatch.Groups[1].Value})");
        }
        if (shape.Length > 32)
            throw new DataFormatException(path,
                $"array '{name}' has {shape.Length} dimensions; numpy allows at most 32");
        if (fortran && shape.Length > 2)
            throw new DataFormatException(path, $"array '{name}' is a {shape.Length}-D Fortran-ordered array; only " +
                $"1-D and 2-D ones are supported");
        long bytes = itemSize;
        try
        {
            foreach (int d in shape) bytes = checked(bytes * d);
        }
        catch (OverflowException)
        {
            throw new DataFormatException(path, $"array '{name}' has a shape ({string.Join(", ", shape)}) whose size " +
                $"overflows");
        }
        long available = entryLength - prefix - headerLength;
        if (bytes > MaxArrayBytes)
            throw new DataFormatException(path, $"array '{name}' has shape ({string.Join(", ", shape)}) = {bytes} " +
                $"bytes; at most {MaxArrayBytes} are read");
        if (bytes > available)
            throw new DataFormatException(path,
                $"array '{name}' is truncated: its header claims shape ({string.Join(", ", shape)}) = {bytes} " +
                $"bytes but the entry holds {Math.Max(0, available)}");
        var data = new byte[bytes];
        s.ReadExactly(data);
        if (fortran && shape.Length == 2) data = FortranToC(data, shape, itemSize);
        return new NpyArray(dtype, shape, data);
    }

    private static byte[] FortranToC(byte[] data, int[] shape, int itemSize)
    {
        int rows = shape[0], cols = shape[1];
        var c = new byte[data.Length];
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++)
                Buffer.BlockCopy(data, (k * rows + r) * itemSize, c, (r * cols + k) * itemSize, itemSize);
        return c;
    }

    /// <summary>One array to write: float64 values in C order with the given shape.</summary>
    public readonly record struct Entry(string Name, int[] Shape, double[] Values);

    /// <summary>
    /// Writes a .npz of float64 arrays, to a temp file first, then renamed over <paramref name="path"/>.
    /// </summary>
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
        for (int i = 0; i < values.Length; i++)
            BinaryPrimitives.WriteDoubleLittleEndian(buffer.AsSpan(8 * i), values[i]);
        s.Write(buffer);
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}

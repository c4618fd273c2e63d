using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The training images' non-zero pixels, built once at upload in two layouts:
/// <list type="bullet">
/// <item>Rows (CSR, for the forward): sample i's non-zeros are <c>RowStart[i] .. RowStart[i + 1]</c> of
/// <see cref="Offsets"/> (k * rowWidth: where pixel k's row starts in a pixel-major (784, rowWidth) matrix) and
/// <see cref="Values"/> (the raw byte as a float), in pixel order. Finding a weight row takes no multiply and the
/// value is an FMA's broadcast memory operand: 3 instructions per non-zero. Packing both in one 32-bit word
/// (<c>offset &lt;&lt; 8 | byte</c>) halved the bytes but cost a shift, a mask and a table load per non-zero.</item>
/// <item>Columns of two adjacent pixels per tile (CSC, for the weight gradient): tile t's columns, each the pixels
/// (2j, 2j + 1) when one of them is non-zero in one of the tile's samples, are
/// <c>TileColumnStart[t] .. TileColumnStart[t + 1]</c>; column c is the row offset of its first pixel
/// <c>ColumnOffset[c]</c> (the second's row follows, rowWidth floats on) and the 32-bit entries
/// <c>ColumnEntries[ColumnEntryStart[c] .. ColumnEntryStart[c + 1])</c>, one per sample where either pixel is
/// non-zero, each <c>sample-in-tile &lt;&lt; 16 | second byte &lt;&lt; 8 | first byte</c> (one of them may be 0), in
/// sample order. The column's sums over the tile's samples stay in registers, each load of a sample's dz1 row feeds
/// both pixels, and the two gradient rows are read and written once per tile instead of once per non-zero.</item>
/// </list>
/// 8 bytes per non-zero in the rows and 4 per entry in the columns (MNIST: 0.58 entries per non-zero, 2.3 bytes; an
/// MNIST step streams ~12-15 MB; the dense path reads 7.8 MB of bytes); a tile's rows are read from memory once per
/// step, by the forward, and again from cache.
/// </summary>
internal sealed unsafe class SparseImages : IDisposable
{
    private SparseImages(NativeBuffer<int> rowStart, NativeBuffer<int> offsets, NativeBuffer<float> values,
        long nonZeros)
    {
        RowStart = rowStart;
        Offsets = offsets;
        Values = values;
        NonZeros = nonZeros;
        TileColumnStart = null!; ColumnOffset = null!; ColumnEntryStart = null!; ColumnEntries = null!;
    }

    /// <summary>(tiles + 1) indices into the column arrays.</summary>
    public NativeBuffer<int> TileColumnStart { get; private set; }
    /// <summary>Per column: 2j * rowWidth, the offset of its first pixel's row.</summary>
    public NativeBuffer<int> ColumnOffset { get; private set; }
    /// <summary>(columns + 1) indices into <see cref="ColumnEntries"/>.</summary>
    public NativeBuffer<int> ColumnEntryStart { get; private set; }
    public NativeBuffer<uint> ColumnEntries { get; private set; }

    /// <summary>The entries of all tiles' columns (samples where either pixel of a pair is non-zero).</summary>
    public long ColumnEntryCount { get; private set; }

    /// <summary>(rows + 1) indices into <see cref="Offsets"/> and <see cref="Values"/>; rows past the images' count are
    /// empty.</summary>
    public NativeBuffer<int> RowStart { get; }
    public NativeBuffer<int> Offsets { get; }
    public NativeBuffer<float> Values { get; }
    public long NonZeros { get; }

    /// <param name="pixels">count rows of 784 bytes.</param>
    /// <param name="rows">count or more: the padded row count (the rows past count are empty).</param>
    /// <param name="rowWidth">Floats per pixel row of the matrices the entries point into.</param>
    /// <param name="tile">Samples per tile of the column layout (at most 256); rows is a multiple of it.</param>
    public static SparseImages Build(ReadOnlySpan<byte> pixels, int count, int rows, int rowWidth, int tile)
    {
        if (tile is < 1 or > 256 || rows % tile != 0) throw new ArgumentOutOfRangeException(nameof(tile));
        const int In = MlpParameters.InputSize;
        long nonZeros = (long)pixels.Length - pixels.Count((byte)0);
        if (nonZeros > int.MaxValue)
            throw new ArgumentException($"{nonZeros} non-zero pixels do not fit the sparse layout");
        var rowStart = new NativeBuffer<int>(rows + 1);
        var offsets = new NativeBuffer<int>((int)Math.Max(1, nonZeros));
        var values = new NativeBuffer<float>((int)Math.Max(1, nonZeros));
        int* start = rowStart.Pointer, o = offsets.Pointer;
        float* v = values.Pointer;
        int next = 0;
        for (int i = 0; i < rows; i++)
        {
            start[i] = next;
            if (i >= count) continue;
            ReadOnlySpan<byte> image = pixels.Slice(i * In, In);
            for (int k = 0; k < In; k++)
                if (image[k] != 0)
                {
                    o[next] = k * rowWidth;
                    v[next++] = image[k];
                }
        }
        start[rows] = next;
        var images = new SparseImages(rowStart, offsets, values, nonZeros);
        images.BuildColumns(pixels, count, rows, rowWidth, tile);
        return images;
    }

    private void BuildColumns(ReadOnlySpan<byte> pixels, int count, int rows, int rowWidth, int tile)
    {
        const int In = MlpParameters.InputSize, Pairs = In / 2;
        int tiles = rows / tile;
        long columns = 0, entries = 0; // pass 1: how many columns and entries, to size the buffers exactly
        for (int t = 0; t < tiles; t++)
        {
            int samples = Math.Clamp(count - t * tile, 0, tile);
            for (int j = 0; j < Pairs; j++)
            {
                int lit = 0;
                for (int s = 0; s < samples; s++)
                    if (PairBytes(pixels, (t * tile + s) * In + 2 * j) != 0) lit++;
                entries += lit;
                if (lit > 0) columns++;
            }
        }
        if (entries > int.MaxValue)
            throw new ArgumentException($"{entries} pixel-pair entries do not fit the sparse layout");
        ColumnEntryCount = entries;
        TileColumnStart = new NativeBuffer<int>(tiles + 1);
        ColumnOffset = new NativeBuffer<int>((int)Math.Max(1, columns));
        ColumnEntryStart = new NativeBuffer<int>((int)columns + 1);
        ColumnEntries = new NativeBuffer<uint>((int)Math.Max(1, entries));
        int* tileStart = TileColumnStart.Pointer, offset = ColumnOffset.Pointer, entryStart = ColumnEntryStart.Pointer;
        uint* e = ColumnEntries.Pointer;
        int column = 0, next = 0;
        for (int t = 0; t < tiles; t++)
        {
            tileStart[t] = column;
            int samples = Math.Clamp(count - t * tile, 0, tile);
            for (int j = 0; j < Pairs; j++)
            {
                int first = next;
                for (int s = 0; s < samples; s++)
                {
                    uint both = PairBytes(pixels, (t * tile + s) * In + 2 * j);
                    if (both != 0) e[next++] = (uint)s << 16 | both;
                }
                if (next == first) continue;
                offset[column] = 2 * j * rowWidth;
                entryStart[column++] = first;
            }
        }
        tileStart[tiles] = column;
        entryStart[column] = next;
    }

    // second byte << 8 | first byte of the pixels (k, k + 1)
    private static uint PairBytes(ReadOnlySpan<byte> pixels, int k) => (uint)(pixels[k + 1] << 8 | pixels[k]);

    public void Dispose()
    {
        RowStart.Dispose();
        Offsets.Dispose();
        Values.Dispose();
        TileColumnStart.Dispose();
        ColumnOffset.Dispose();
        ColumnEntryStart.Dispose();
        ColumnEntries.Dispose();
    }
}

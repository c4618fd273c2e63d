using MnistNative.Core;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// The training images' non-zero pixels in compressed sparse rows, built once at upload: sample i's entries are
/// <c>Entries[RowStart[i] .. RowStart[i + 1])</c>, in pixel order. One entry is one 32-bit word,
/// <c>(k * rowWidth) &lt;&lt; 8 | value</c>: the offset of pixel k's row in a pixel-major (784, rowWidth) matrix and
/// the raw byte. Both sparse kernels walk the same rows (the forward gathers weight rows, the weight gradient
/// scatters into gradient rows), so one layout serves both, and a tile's 19 KB of entries are read from memory
/// once per step and again from cache. 4 bytes per non-zero (an MNIST step streams ~6 MB, the dense path 7.8 MB
/// of bytes) and no multiply to find the row.
/// </summary>
internal sealed unsafe class SparseImages : IDisposable
{
    /// <summary>The largest row offset an entry can hold (24 bits): 784 pixels times a row width of up to 21,399.</summary>
    public const int MaxOffset = (1 << 24) - 1;

    private SparseImages(NativeBuffer<int> rowStart, NativeBuffer<uint> entries, long nonZeros)
    {
        RowStart = rowStart;
        Entries = entries;
        NonZeros = nonZeros;
    }

    /// <summary>(rows + 1) offsets into <see cref="Entries"/>; rows past the images' count are empty.</summary>
    public NativeBuffer<int> RowStart { get; }
    public NativeBuffer<uint> Entries { get; }
    public long NonZeros { get; }

    /// <param name="pixels">count rows of 784 bytes.</param>
    /// <param name="rows">count or more: the padded row count (the rows past count are empty).</param>
    /// <param name="rowWidth">Floats per pixel row of the matrices the entries point into.</param>
    public static SparseImages Build(ReadOnlySpan<byte> pixels, int count, int rows, int rowWidth)
    {
        const int In = MlpParameters.InputSize;
        if ((long)(In - 1) * rowWidth > MaxOffset)
            throw new ArgumentOutOfRangeException(nameof(rowWidth), $"row width {rowWidth} is too wide for the sparse layout");
        long nonZeros = (long)pixels.Length - pixels.Count((byte)0);
        if (nonZeros > int.MaxValue) throw new ArgumentException($"{nonZeros} non-zero pixels do not fit the sparse layout");
        var rowStart = new NativeBuffer<int>(rows + 1);
        var entries = new NativeBuffer<uint>((int)Math.Max(1, nonZeros));
        int* start = rowStart.Pointer;
        uint* e = entries.Pointer;
        int next = 0;
        for (int i = 0; i < rows; i++)
        {
            start[i] = next;
            if (i >= count) continue;
            ReadOnlySpan<byte> image = pixels.Slice(i * In, In);
            for (int k = 0; k < In; k++)
                if (image[k] != 0) e[next++] = (uint)(k * rowWidth) << 8 | image[k];
        }
        start[rows] = next;
        return new SparseImages(rowStart, entries, nonZeros);
    }

    public void Dispose()
    {
        RowStart.Dispose();
        Entries.Dispose();
    }
}

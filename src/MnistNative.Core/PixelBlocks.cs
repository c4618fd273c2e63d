using System.Numerics;

namespace MnistNative.Core;

/// <summary>
/// A training set's non-zero pixels for the sample-blocked sparse kernels, built once at upload. The samples are
/// reordered (<see cref="OrderBySharedPixels"/>) and cut into blocks of <see cref="BlockSize"/> (a vector's floats);
/// a block keeps only the pixel columns in which at least one of its samples is non-zero, each as the block's raw
/// bytes of that pixel (zeros included). A kernel then puts the samples of a block across its
/// vector lanes: one pixel column is one vector of pixels, multiplied by a broadcast weight per hidden unit, so
/// every FMA is a whole vector and a pixel that is zero in all the block's samples costs nothing. Two copies of the
/// same entries:
/// <list type="bullet">
/// <item>by block (for the forward, z1 = w1 x): block b's entries are <c>BlockStart[b] .. BlockStart[b + 1]</c>,
/// <see cref="BlockColumn"/> the pixel index and <see cref="BlockBytes"/> the bytes, in pixel order;</item>
/// <item>by column of <see cref="PixelsPerColumn"/> adjacent pixels (for the weight gradient, dw1 = dz1 xᵀ): column
/// c's entries are <c>ColumnStart[c] .. ColumnStart[c + 1]</c>, <see cref="ColumnBlock"/> the block and
/// <see cref="ColumnBytes"/> the bytes of each of the column's pixels in turn (zeros for a pixel the block does not
/// keep), in block order, so a column's gradient rows are summed in registers by one thread. Two pixels per column
/// let one load of a block's dz1 serve both (neighbouring pixels are mostly kept together).</item>
/// </list>
/// </summary>
public sealed unsafe class PixelBlocks : IDisposable
{
    private const int In = MlpParameters.InputSize;

    /// <summary>
    /// How many not-yet-placed samples of the same label <see cref="OrderBySharedPixels"/> compares with the last
    /// placed one: bounds the ordering's cost to n x this x 13 popcounts; the blocks got no better beyond it
    /// (docs/journal/sparse-training.md).
    /// </summary>
    private const int CandidatePool = 512;

    private PixelBlocks(int blockSize, int pixelsPerColumn, int count, int rows, long entries, long columnEntries)
    {
        BlockSize = blockSize;
        PixelsPerColumn = pixelsPerColumn;
        Count = count;
        Rows = rows;
        Entries = entries;
        int stored = (int)Math.Max(1, entries), columnStored = (int)Math.Max(1, columnEntries);
        Order = new NativeBuffer<int>(rows);
        BlockStart = new NativeBuffer<int>(rows / BlockSize + 1);
        BlockColumn = new NativeBuffer<ushort>(stored);
        BlockBytes = new NativeBuffer<byte>(stored * blockSize);
        ColumnStart = new NativeBuffer<int>(In / pixelsPerColumn + 1);
        ColumnBlock = new NativeBuffer<int>(columnStored);
        ColumnBytes = new NativeBuffer<byte>(columnStored * pixelsPerColumn * blockSize);
    }

    /// <summary>Samples per block: the floats of one vector of the kernels that read the blocks (8 or 16).</summary>
    public int BlockSize { get; }

    /// <summary>Adjacent pixels per column of the by-column copy: 1 or 2.</summary>
    public int PixelsPerColumn { get; }

    /// <summary>The columns of the by-column copy: 784 / <see cref="PixelsPerColumn"/>.</summary>
    public int Columns => In / PixelsPerColumn;

    /// <summary>The images.</summary>
    public int Count { get; }

    /// <summary>Sample positions, a multiple of <see cref="BlockSize"/>; positions past <see cref="Count"/> are
    /// empty.</summary>
    public int Rows { get; }

    public int BlockCount => Rows / BlockSize;

    /// <summary>(block, pixel) entries: the pixel columns the blocks keep.</summary>
    public long Entries { get; }

    /// <summary>(Rows): the image at each sample position, -1 for the padding.</summary>
    public NativeBuffer<int> Order { get; }

    public NativeBuffer<int> BlockStart { get; }
    public NativeBuffer<ushort> BlockColumn { get; }
    public NativeBuffer<byte> BlockBytes { get; }
    public NativeBuffer<int> ColumnStart { get; }
    public NativeBuffer<int> ColumnBlock { get; }
    public NativeBuffer<byte> ColumnBytes { get; }

    /// <summary>Entries per block, as a fraction of the 784 pixel columns: the share of the dense FMAs the blocked
    /// kernels still do.</summary>
    public double ColumnFraction => Entries / ((double)Math.Max(1, BlockCount) * In);

    /// <param name="pixels">count images of 784 bytes.</param>
    /// <param name="labels">count labels (samples are grouped by label first).</param>
    /// <param name="rows">count or more, a multiple of <paramref name="blockSize"/>: the padded positions.</param>
    /// <param name="blockSize">Samples per block, 1 to 64.</param>
    /// <param name="pixelsPerColumn">Adjacent pixels per column of the by-column copy, 1 or 2.</param>
    public static PixelBlocks Build(ReadOnlySpan<byte> pixels, ReadOnlySpan<byte> labels, int rows, int blockSize,
        int pixelsPerColumn = 1)
    {
        int count = labels.Length;
        if (pixels.Length != count * In) throw new ArgumentException("pixels must be 784 bytes per label");
        if (blockSize is < 1 or > 64) throw new ArgumentOutOfRangeException(nameof(blockSize));
        if (pixelsPerColumn is not (1 or 2)) throw new ArgumentOutOfRangeException(nameof(pixelsPerColumn));
        if (rows < count || rows % blockSize != 0) throw new ArgumentOutOfRangeException(nameof(rows));
        int[] order = OrderBySharedPixels(pixels, labels, blockSize);
        int blocks = rows / blockSize, columns = In / pixelsPerColumn;

        // pass 1: which pixels each block keeps, and the entries per column, to size the buffers exactly
        var kept = new bool[(long)blocks * In];
        var perColumn = new int[columns];
        long entries = 0, columnEntries = 0;
        for (int b = 0; b < blocks; b++)
        {
            for (int k = 0; k < In; k++)
                if (kept[(long)b * In + k] = AnyNonZero(pixels, order, b * blockSize, blockSize, k)) entries++;
            for (int c = 0; c < columns; c++)
                if (KeepsColumn(kept, b, c, pixelsPerColumn))
                {
                    perColumn[c]++;
                    columnEntries++;
                }
        }
        if (entries > int.MaxValue / blockSize || columnEntries > int.MaxValue / (2 * blockSize))
            throw new ArgumentException($"{entries} pixel blocks do not fit the sparse layout");

        var layout = new PixelBlocks(blockSize, pixelsPerColumn, count, rows, entries, columnEntries);
        for (int i = 0; i < rows; i++) layout.Order.Pointer[i] = i < count ? order[i] : -1;
        int* columnStart = layout.ColumnStart.Pointer;
        columnStart[0] = 0;
        for (int c = 0; c < columns; c++) columnStart[c + 1] = columnStart[c] + perColumn[c];
        var columnNext = new int[columns];
        for (int c = 0; c < columns; c++) columnNext[c] = columnStart[c];

        // pass 2: fill both copies; blocks in order, so each column's entries come in block order
        int e = 0;
        for (int b = 0; b < blocks; b++)
        {
            layout.BlockStart.Pointer[b] = e;
            for (int k = 0; k < In; k++)
            {
                if (!kept[(long)b * In + k]) continue;
                byte* forward = layout.BlockBytes.Pointer + (long)e * blockSize;
                for (int s = 0; s < blockSize; s++) forward[s] = PixelAt(pixels, order, b * blockSize + s, k);
                layout.BlockColumn.Pointer[e++] = (ushort)k;
            }
            for (int c = 0; c < columns; c++)
            {
                if (!KeepsColumn(kept, b, c, pixelsPerColumn)) continue;
                int at = columnNext[c]++;
                byte* gradient = layout.ColumnBytes.Pointer + (long)at * pixelsPerColumn * blockSize;
                for (int p = 0, k = c * pixelsPerColumn; p < pixelsPerColumn; p++, k++)
                    for (int s = 0; s < blockSize; s++)
                        gradient[p * blockSize + s] = PixelAt(pixels, order, b * blockSize + s, k);
                layout.ColumnBlock.Pointer[at] = b;
            }
        }
        layout.BlockStart.Pointer[blocks] = e;
        return layout;
    }

    private static bool KeepsColumn(bool[] kept, int block, int column, int pixelsPerColumn)
    {
        for (int p = 0; p < pixelsPerColumn; p++)
            if (kept[(long)block * In + column * pixelsPerColumn + p]) return true;
        return false;
    }

    /// <summary>
    /// An order of the samples in which blocks of <paramref name="blockSize"/> consecutive ones share non-zero pixels,
    /// so that they keep few pixel columns: by label (in label order), then within a label greedily, among the next
    /// <see cref="CandidatePool"/> unplaced samples: a block's first sample the one with the largest
    /// 2 x (non-zeros shared with the last placed sample) - (its non-zeros), every other one the one that adds the
    /// fewest pixels to its block's union; the first on ties. Deterministic. On the seed's 10,000 images it cuts the
    /// columns per block of 16 from 410 of 784 (the given order) to about 265, per block of 8 from 362 to about 230.
    /// </summary>
    public static int[] OrderBySharedPixels(ReadOnlySpan<byte> pixels, ReadOnlySpan<byte> labels, int blockSize)
    {
        const int Words = (In + 63) / 64;
        int count = labels.Length;
        var bits = new ulong[(long)count * Words];
        var size = new int[count];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> image = pixels.Slice(i * In, In);
            for (int k = 0; k < In; k++)
                if (image[k] != 0) bits[i * Words + k / 64] |= 1UL << (k % 64);
            size[i] = image.Length - image.Count((byte)0);
        }
        var order = new int[count];
        Span<ulong> union = stackalloc ulong[Words];
        int placed = 0;
        var group = new List<int>();
        for (int label = 0; label < 256; label++)
        {
            group.Clear();
            for (int i = 0; i < count; i++) if (labels[i] == label) group.Add(i);
            while (group.Count > 0)
            {
                bool blockStart = placed % blockSize == 0;
                int best = 0, bestScore = int.MinValue, pool = Math.Min(CandidatePool, group.Count);
                ReadOnlySpan<ulong> last = placed > 0 ? bits.AsSpan(order[placed - 1] * Words, Words) : union;
                if (blockStart) union.Clear();
                for (int c = 0; c < pool && !(placed == 0 && c > 0); c++)
                {
                    ReadOnlySpan<ulong> candidate = bits.AsSpan(group[c] * Words, Words);
                    int score = 0;
                    if (blockStart)
                    {
                        for (int w = 0; w < Words; w++) score += BitOperations.PopCount(last[w] & candidate[w]);
                        score = 2 * score - size[group[c]];
                    }
                    else
                        for (int w = 0; w < Words; w++) score -= BitOperations.PopCount(candidate[w] & ~union[w]);
                    if (score > bestScore)
                    {
                        bestScore = score;
                        best = c;
                    }
                }
                int chosen = group[best];
                group.RemoveAt(best);
                for (int w = 0; w < Words; w++) union[w] |= bits[chosen * Words + w];
                order[placed++] = chosen;
            }
        }
        return order;
    }

    private static byte PixelAt(ReadOnlySpan<byte> pixels, int[] order, int position, int k) =>
        position < order.Length ? pixels[order[position] * In + k] : (byte)0;

    private static bool AnyNonZero(ReadOnlySpan<byte> pixels, int[] order, int first, int samples, int k)
    {
        for (int s = first; s < first + samples; s++)
            if (PixelAt(pixels, order, s, k) != 0) return true;
        return false;
    }

    public void Dispose()
    {
        Order.Dispose();
        BlockStart.Dispose();
        BlockColumn.Dispose();
        BlockBytes.Dispose();
        ColumnStart.Dispose();
        ColumnBlock.Dispose();
        ColumnBytes.Dispose();
    }
}

using MnistNative.Core;
using Xunit;

namespace MnistNative.Tests.Training;

public sealed unsafe class PixelBlocksTests
{
    /// <summary>Both copies hold exactly the images' pixels: every non-zero pixel of every image at its position, in a
    /// column its block keeps, and nothing else (the blocks' zeros are the images' zeros).</summary>
    [Theory]
    [InlineData(8, 1)]
    [InlineData(16, 2)]
    [InlineData(8, 2)]
    public void BothCopiesReproduceTheImages(int blockSize, int pixelsPerColumn)
    {
        LabeledImages images = Images(203, seed: 3); // not a multiple of the block
        int rows = (images.Count + 31) / 32 * 32;
        using var blocks = PixelBlocks.Build(images.Pixels, images.Labels, rows, blockSize, pixelsPerColumn);
        Assert.Equal(rows / blockSize, blocks.BlockCount);
        int[] order = new Span<int>(blocks.Order.Pointer, rows).ToArray();
        Assert.Equal(Enumerable.Range(0, images.Count), order.Where(i => i >= 0).Order());
        Assert.All(order[images.Count..], i => Assert.Equal(-1, i));

        var fromBlocks = new byte[rows * 784];
        for (int b = 0; b < blocks.BlockCount; b++)
            for (int e = blocks.BlockStart.Pointer[b]; e < blocks.BlockStart.Pointer[b + 1]; e++)
                for (int s = 0; s < blockSize; s++)
                    fromBlocks[(b * blockSize + s) * 784 + blocks.BlockColumn.Pointer[e]] =
                        blocks.BlockBytes.Pointer[e * blockSize + s];
        var fromColumns = new byte[rows * 784];
        for (int c = 0; c < blocks.Columns; c++)
            for (int e = blocks.ColumnStart.Pointer[c]; e < blocks.ColumnStart.Pointer[c + 1]; e++)
            {
                if (e > blocks.ColumnStart.Pointer[c])
                    Assert.True(blocks.ColumnBlock.Pointer[e] > blocks.ColumnBlock.Pointer[e - 1], "block order");
                for (int p = 0; p < pixelsPerColumn; p++)
                    for (int s = 0; s < blockSize; s++)
                        fromColumns[(blocks.ColumnBlock.Pointer[e] * blockSize + s) * 784 + c * pixelsPerColumn + p] =
                            blocks.ColumnBytes.Pointer[(e * pixelsPerColumn + p) * blockSize + s];
            }
        for (int position = 0; position < rows; position++)
        {
            byte[] expected = order[position] < 0 ? new byte[784] : images.Image(order[position]).ToArray();
            Assert.Equal(expected, fromBlocks.AsSpan(position * 784, 784).ToArray());
            Assert.Equal(expected, fromColumns.AsSpan(position * 784, 784).ToArray());
        }
        // a block keeps a column only where one of its samples is non-zero
        for (int b = 0; b < blocks.BlockCount; b++)
            for (int e = blocks.BlockStart.Pointer[b]; e < blocks.BlockStart.Pointer[b + 1]; e++)
                Assert.Contains(Enumerable.Range(0, blockSize), s => blocks.BlockBytes.Pointer[e * blockSize + s] != 0);
    }

    [Fact]
    public void AllZeroImagesKeepNothingAndADenseImageKeepsEveryColumn()
    {
        var pixels = new byte[3 * 784];
        using (var empty = PixelBlocks.Build(pixels, [1, 2, 3], 16, 16))
        {
            Assert.Equal(0, empty.Entries);
            Assert.Equal(0, empty.BlockStart.Pointer[1]);
            Assert.Equal(0.0, empty.ColumnFraction);
        }
        Array.Fill(pixels, (byte)255, 784, 784); // the second image lights every pixel
        using var dense = PixelBlocks.Build(pixels, [1, 2, 3], 16, 16, pixelsPerColumn: 2);
        Assert.Equal(784, dense.Entries);
        Assert.Equal(392, dense.ColumnStart.Pointer[392]);
        Assert.Equal(1.0, dense.ColumnFraction);
    }

    /// <summary>Grouping similar images cuts the kept columns: two kinds of image, interleaved, each lighting its own
    /// half of the pixels; in the given order every block keeps both halves, ordered by label each keeps one.</summary>
    [Fact]
    public void OrderingGroupsImagesThatShareTheirPixels()
    {
        const int n = 64;
        var pixels = new byte[n * 784];
        var labels = new byte[n];
        for (int i = 0; i < n; i++)
        {
            labels[i] = (byte)(i % 2);
            for (int k = 0; k < 392; k++) pixels[i * 784 + (i % 2) * 392 + k] = 1;
        }
        using var blocks = PixelBlocks.Build(pixels, labels, n, 16);
        Assert.Equal(0.5, blocks.ColumnFraction);
        int[] order = PixelBlocks.OrderBySharedPixels(pixels, labels, 16);
        Assert.All(order[..32], i => Assert.Equal(0, labels[i]));
        Assert.Equal(order, PixelBlocks.OrderBySharedPixels(pixels, labels, 16)); // deterministic
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        var pixels = new byte[2 * 784];
        Assert.Throws<ArgumentOutOfRangeException>(() => PixelBlocks.Build(pixels, [0, 1], 12, 8)); // rows % block
        Assert.Throws<ArgumentOutOfRangeException>(() => PixelBlocks.Build(pixels, [0, 1], 0, 8));  // rows < count
        Assert.Throws<ArgumentOutOfRangeException>(() => PixelBlocks.Build(pixels, [0, 1], 8, 8, 3));
        Assert.Throws<ArgumentException>(() => PixelBlocks.Build(pixels, [0], 8, 8));
    }

    private static LabeledImages Images(int count, int seed)
    {
        var rng = new Random(seed);
        var pixels = new byte[count * 784];
        var labels = new byte[count];
        for (int i = 0; i < count; i++)
        {
            labels[i] = (byte)rng.Next(10);
            int centre = 200 + 40 * labels[i]; // a stroke per label, so the ordering has something to find
            for (int k = 0; k < 784; k++)
                if (Math.Abs(k - centre) < 60 && rng.Next(3) > 0) pixels[i * 784 + k] = (byte)rng.Next(1, 256);
        }
        return new LabeledImages(pixels, labels);
    }
}

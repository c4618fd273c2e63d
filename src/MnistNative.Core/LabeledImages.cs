namespace MnistNative.Core;

/// <summary>
/// MNIST-style images as the IDX files store them: Count rows of 784 raw bytes (0..255, row-major 28x28)
/// and one label (0..9) per image. Backends scale pixels by 1/255 as the seed does.
/// </summary>
public sealed class LabeledImages
{
    public const int PixelsPerImage = MlpParameters.InputSize;

    public LabeledImages(byte[] pixels, byte[] labels)
    {
        if (pixels.Length != labels.Length * PixelsPerImage)
            throw new ArgumentException(
                $"{labels.Length} labels need {labels.Length * PixelsPerImage} pixels, got {pixels.Length}");
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] > 9) throw new ArgumentException($"label {labels[i]} at index {i} is above 9");
        Pixels = pixels;
        Labels = labels;
    }

    public byte[] Pixels { get; }
    public byte[] Labels { get; }
    public int Count => Labels.Length;

    public ReadOnlySpan<byte> Image(int index) => Pixels.AsSpan(index * PixelsPerImage, PixelsPerImage);

    /// <summary>The first <paramref name="count"/> images (the seed trains on the first 10,000).</summary>
    public LabeledImages Take(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count > Count)
            throw new ArgumentOutOfRangeException(nameof(count), $"asked for {count} images, only {Count} available");
        if (count == Count) return this;
        return new LabeledImages(Pixels.AsSpan(0, count * PixelsPerImage).ToArray(), Labels.AsSpan(0, count).ToArray());
    }
}

using MnistNative.Core;

namespace MnistNative.Tests.OpenCl;

/// <summary>Images, batches and differences for the OpenCL tests (and this branch's minimal conformance suite).
/// </summary>
internal static class OpenClTestData
{
    /// <summary>n random images with random labels; image 0 is empty (all zero) and image 1 fully dense (all 255).
    /// Pixels are zero with probability 0.8, as on MNIST, so sparse and dense paths both matter.</summary>
    public static LabeledImages Images(int n, int seed)
    {
        var rng = new Random(seed);
        var pixels = new byte[n * MlpParameters.InputSize];
        var labels = new byte[n];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = rng.NextDouble() < 0.8 ? (byte)0 : (byte)rng.Next(1, 256);
        pixels.AsSpan(0, MlpParameters.InputSize).Clear();
        pixels.AsSpan(MlpParameters.InputSize, MlpParameters.InputSize).Fill(255);
        for (int i = 0; i < n; i++) labels[i] = (byte)rng.Next(MlpParameters.Classes);
        return new LabeledImages(pixels, labels);
    }

    /// <summary>A batch of <paramref name="size"/> indices, wrapping around count (repeats allowed); size 0: the
    /// whole set (no indices).</summary>
    public static int[] Batch(int size, int step, int count) =>
        Enumerable.Range(0, size).Select(i => (i * 7 + step * 13) % count).ToArray();

    public static double MaxAbsDiff(MlpParameters a, MlpParameters b)
    {
        double worst = 0;
        for (int l = 0; l < a.LayerCount; l++)
        {
            for (int i = 0; i < a.W[l].Length; i++) worst = Math.Max(worst, Math.Abs(a.W[l][i] - b.W[l][i]));
            for (int i = 0; i < a.B[l].Length; i++) worst = Math.Max(worst, Math.Abs(a.B[l][i] - b.B[l][i]));
        }
        return worst;
    }
}

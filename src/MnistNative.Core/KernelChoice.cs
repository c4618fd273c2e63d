namespace MnistNative.Core;

/// <summary>Which layer-1 kernels a backend runs: the dense products, the sparse ones that skip zero pixels, or its own
/// pick.</summary>
public enum KernelMode
{
    /// <summary>The backend picks from the shape and the measured density of the uploaded images.</summary>
    Auto,
    Dense,
    Sparse,
}

/// <summary>
/// The layer-1 kernels a backend chose at upload and why, with the work they do: <see cref="UsefulFlopsPerStep"/>
/// counts only the multiply-adds on non-zero pixels (what a sparse kernel executes, give or take its padding),
/// next to the dense-equivalent count of <see cref="FlopCount.TrainingStep"/>.
/// </summary>
public sealed record KernelChoice(KernelMode Kernel, string Reason, double Density, double UsefulFlopsPerStep)
{
    /// <summary>"dense" or "sparse".</summary>
    public string Name => Kernel == KernelMode.Sparse ? "sparse" : "dense";

    /// <summary>
    /// FLOPs of one full-batch step that touch a non-zero pixel or are outside layer 1's two big products:
    /// the dense count with its two 784-wide products scaled by the density.
    /// </summary>
    public static double UsefulFlops(int n, int hidden, double density)
    {
        const int In = MlpParameters.InputSize;
        double layer1 = 2.0 * 2.0 * n * hidden * In;
        return FlopCount.TrainingStep(n, hidden) - layer1 + layer1 * density;
    }

    /// <summary>Fraction of non-zero bytes among <paramref name="pixels"/> (0 for none).</summary>
    public static double MeasureDensity(ReadOnlySpan<byte> pixels)
    {
        if (pixels.IsEmpty) return 0;
        long zeros = pixels.Count((byte)0);
        return (double)(pixels.Length - zeros) / pixels.Length;
    }
}

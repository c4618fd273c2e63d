namespace MnistNative.Core;

/// <summary>
/// The weights (or gradients) of an MLP in the seed's orientation: layer l has W[l] of shape
/// (Sizes[l+1], Sizes[l]) stored row-major (row = output unit) and B[l] of length Sizes[l+1].
/// For the seed, Sizes = [784, 10, 10]: w1 is 10 x 784, b1 10, w2 10 x 10, b2 10.
/// Values are kept in float64 on the host; float32 backends round when they upload.
/// </summary>
public sealed class MlpParameters
{
    public const int InputSize = 784;
    public const int Classes = 10;

    public MlpParameters(IReadOnlyList<int> sizes)
    {
        if (sizes.Count < 2)
            throw new ArgumentException("an MLP needs at least an input and an output size", nameof(sizes));
        foreach (int s in sizes)
            if (s < 1) throw new ArgumentException($"layer sizes must be positive, got {s}", nameof(sizes));
        Sizes = sizes.ToArray();
        W = new double[Sizes.Length - 1][];
        B = new double[Sizes.Length - 1][];
        for (int l = 0; l < W.Length; l++)
        {
            W[l] = new double[Sizes[l + 1] * Sizes[l]];
            B[l] = new double[Sizes[l + 1]];
        }
    }

    /// <summary>784-H-10 with one hidden layer (the seed's model when H = 10).</summary>
    public static MlpParameters ForHidden(int hidden) => new([InputSize, hidden, Classes]);

    public int[] Sizes { get; }
    public double[][] W { get; }
    public double[][] B { get; }
    public int LayerCount => W.Length;

    /// <summary>Width of the first hidden layer (the seed's H).</summary>
    public int Hidden => Sizes[1];

    public MlpParameters Clone()
    {
        var c = new MlpParameters(Sizes);
        for (int l = 0; l < W.Length; l++)
        {
            W[l].CopyTo(c.W[l], 0);
            B[l].CopyTo(c.B[l], 0);
        }
        return c;
    }

    public bool AllFinite()
    {
        for (int l = 0; l < W.Length; l++)
        {
            foreach (double v in W[l]) if (!double.IsFinite(v)) return false;
            foreach (double v in B[l]) if (!double.IsFinite(v)) return false;
        }
        return true;
    }

    public bool SameShape(MlpParameters other) => Sizes.AsSpan().SequenceEqual(other.Sizes);

    /// <summary>
    /// The seed's initialisation, in the seed's call order (w1, b1, w2, b2, ...):
    /// w ~ N(0,1) * sqrt(1 / fan_in), b ~ N(0,1) * 0.01, drawn from numpy's legacy generator so that
    /// seed 0 gives exactly the arrays of np.random.seed(0) in the notebook.
    /// </summary>
    public static MlpParameters Initialize(IReadOnlyList<int> sizes, uint seed)
    {
        var p = new MlpParameters(sizes);
        var rng = new NumpyLegacyRandom(seed);
        for (int l = 0; l < p.LayerCount; l++)
        {
            double scale = Math.Sqrt(1.0 / p.Sizes[l]);
            for (int i = 0; i < p.W[l].Length; i++) p.W[l][i] = rng.NextGaussian() * scale;
            for (int i = 0; i < p.B[l].Length; i++) p.B[l][i] = rng.NextGaussian() * 0.01;
        }
        return p;
    }
}

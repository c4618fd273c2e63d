using MnistNative.Formats;
using MnistNative.Core;
using MnistNative.Data;

namespace MnistNative.Tests;

/// <summary>Where the tests find the repository, its committed fixtures and the real MNIST files.</summary>
public static class TestPaths
{
    private static readonly Lazy<(LabeledImages Train, LabeledImages Test)> Mnist = new(LoadMnist);

    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>
    /// The seed notebook's float64 run from np.random.seed(0) (init.npz, final.npz, expected.json), made by
    /// benchmarks/reference/seed_numpy.py --fixtures; generated.json beside them says how.
    /// </summary>
    public static string SeedParity => Path.Combine(RepoRoot, "tests", "fixtures", "seed-parity");

    /// <summary>
    /// MNIST_DATA_DIR, else the repository's default store data/mnist (filled by `build.sh --target=Data`).
    /// </summary>
    public static string MnistDir => Environment.GetEnvironmentVariable("MNIST_DATA_DIR") is { Length: > 0 } d
        ? d
        : Path.Combine(RepoRoot, "data", "mnist");

    public static LabeledImages Train => Mnist.Value.Train;
    public static LabeledImages Test => Mnist.Value.Test;

    private static (LabeledImages, LabeledImages) LoadMnist()
    {
        if (!MnistFiles.Present(MnistDir))
            throw new InvalidOperationException(
                $"MNIST is not in {MnistDir}: run `./build.sh --target=Data` (or set MNIST_DATA_DIR)");
        return MnistFiles.Load(MnistDir);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MnistNative.sln"))) return dir.FullName;
        throw new InvalidOperationException("cannot find MnistNative.sln above " + AppContext.BaseDirectory);
    }
}

using MnistNative.Formats;
using System.Security.Cryptography;
using MnistNative.Core;

namespace MnistNative.Data;

/// <summary>The four original MNIST files and their SHA-256 sums (the raw, decompressed IDX bytes).</summary>
public static class MnistFiles
{
    public const string TrainImages = "train-images-idx3-ubyte";
    public const string TrainLabels = "train-labels-idx1-ubyte";
    public const string TestImages = "t10k-images-idx3-ubyte";
    public const string TestLabels = "t10k-labels-idx1-ubyte";

    public static IReadOnlyDictionary<string, string> Sha256 { get; } = new Dictionary<string, string>
    {
        [TestImages] = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        [TestLabels] = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        [TrainImages] = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        [TrainLabels] = "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    };

    public static IReadOnlyList<string> All { get; } = [TrainImages, TrainLabels, TestImages, TestLabels];

    /// <summary>The size in bytes of each raw file (a header of 16 or 8 bytes, then 28x28 images or labels).</summary>
    public static IReadOnlyDictionary<string, long> Sizes { get; } = new Dictionary<string, long>
    {
        [TrainImages] = 16 + 60000L * 784,
        [TrainLabels] = 8 + 60000,
        [TestImages] = 16 + 10000L * 784,
        [TestLabels] = 8 + 10000,
    };

    public static string HashFile(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>True when <paramref name="dir"/> holds all four raw files (present; not yet verified).</summary>
    public static bool Present(string dir) => All.All(n => File.Exists(Path.Combine(dir, n)));

    /// <summary>Checks each raw file's SHA-256; throws naming the first file that is missing or differs.</summary>
    public static void Verify(string dir)
    {
        foreach (string name in All)
        {
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) throw new DataFormatException(path, "file not found");
            VerifyFile(path, name);
        }
    }

    /// <summary>
    /// Returns the file's SHA-256, or throws naming the file when it is not that of MNIST's
    /// <paramref name="name"/>.
    /// </summary>
    public static string VerifyFile(string path, string name, string hint = "")
    {
        string actual = HashFile(path);
        if (actual != Sha256[name])
            throw new DataFormatException(path, $"checksum mismatch: SHA-256 {actual}, expected {Sha256[name]}{hint}");
        return actual;
    }

    /// <summary>
    /// Loads train and test sets from a directory holding the four raw IDX files (verified by SHA-256),
    /// or failing that Keras's mnist.npz; only the first <paramref name="trainCount"/> training images are kept
    /// (and, from raw IDX files, only they are read).
    /// </summary>
    public static (LabeledImages Train, LabeledImages Test) Load(string dir, bool verify = true,
        int trainCount = int.MaxValue)
    {
        if (Present(dir))
        {
            if (verify) Verify(dir);
            return (Idx.ReadPair(Path.Combine(dir, TrainImages), Path.Combine(dir, TrainLabels), trainCount),
                    Idx.ReadPair(Path.Combine(dir, TestImages), Path.Combine(dir, TestLabels)));
        }
        string npz = Path.Combine(dir, "mnist.npz");
        if (File.Exists(npz))
        {
            var (train, test) = KerasMnist.Read(npz);
            return (train.Take(Math.Min(trainCount, train.Count)), test);
        }
        throw new DataFormatException(dir,
            $"holds neither the four MNIST IDX files ({string.Join(", ", All)}) nor mnist.npz");
    }
}

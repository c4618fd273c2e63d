using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using MnistNative.Data;
using MnistNative.Formats;

namespace MnistNative.Tests.Inference;

/// <summary>The trained seed model (final.npz), the 10,000 MNIST test images, and small model builders.</summary>
public static class InferenceFixtures
{
    private static readonly Lazy<(byte[] Images, byte[] Labels)?> TestSetLazy = new(LoadTestSet);

    public static string FinalModel => Path.Combine(TestPaths.SeedParity, "final.npz");

    /// <summary>The directory holding t10k-*-ubyte: MNIST_DATA_DIR or the repository's data/mnist.</summary>
    public static string MnistDir => TestPaths.MnistDir;

    public static (byte[] Images, byte[] Labels) TestSet
    {
        get
        {
            Xunit.Skip.If(TestSetLazy.Value == null, $"MNIST test files are not in {MnistDir} (set MNIST_DATA_DIR)");
            return TestSetLazy.Value!.Value;
        }
    }

    public static string TestImagesPath => Path.Combine(MnistDir, MnistFiles.TestImages);
    public static string TestLabelsPath => Path.Combine(MnistDir, MnistFiles.TestLabels);

    private static (byte[], byte[])? LoadTestSet()
    {
        if (!File.Exists(TestImagesPath) || !File.Exists(TestLabelsPath)) return null;
        var pair = Idx.ReadPair(TestImagesPath, TestLabelsPath);
        return (pair.Pixels, pair.Labels);
    }

    /// <summary>A random model with the given sizes (784 first, 10 last), seed's init scale.</summary>
    public static (double[][] W, double[][] B) RandomModel(int[] sizes, int seed)
    {
        var rng = new Random(seed);
        var w = new double[sizes.Length - 1][];
        var b = new double[sizes.Length - 1][];
        for (int l = 0; l < w.Length; l++)
        {
            double scale = Math.Sqrt(2.0 / sizes[l]);
            w[l] = Enumerable.Range(0, sizes[l + 1] * sizes[l])
                .Select(_ => (rng.NextDouble() * 2 - 1) * scale * 1.7).ToArray();
            b[l] = Enumerable.Range(0, sizes[l + 1]).Select(_ => (rng.NextDouble() * 2 - 1) * 0.1).ToArray();
        }
        return (w, b);
    }

    /// <summary>
    /// A .npz in memory; float32 arrays when <paramref name="float32"/>, else float64; biases as columns.
    /// </summary>
    public static byte[] NpzBytes(int[] sizes, double[][] w, double[][] b, bool float32,
        Action<List<(string Name, string Descr, int[] Shape, byte[] Data)>>? edit = null)
    {
        var arrays = new List<(string, string, int[], byte[])>();
        for (int l = 0; l < w.Length; l++)
        {
            arrays.Add(($"w{l + 1}", float32 ? "<f4" : "<f8", [sizes[l + 1], sizes[l]], Encode(w[l], float32)));
            arrays.Add(($"b{l + 1}", float32 ? "<f4" : "<f8", [sizes[l + 1], 1], Encode(b[l], float32)));
        }
        edit?.Invoke(arrays);
        using var ms = new MemoryStream();
        using (var zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, descr, shape, data) in arrays)
            {
                using Stream s = zip.CreateEntry(name + ".npy", CompressionLevel.NoCompression).Open();
                string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
                string header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}";
                header += new string(' ', (64 - (10 + header.Length + 1) % 64) % 64) + "\n";
                var pre = new byte[10] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, 0, 0 };
                BinaryPrimitives.WriteUInt16LittleEndian(pre.AsSpan(8), (ushort)header.Length);
                s.Write(pre);
                s.Write(Encoding.Latin1.GetBytes(header));
                s.Write(data);
            }
        return ms.ToArray();
    }

    public static byte[] Encode(double[] values, bool float32)
    {
        var bytes = new byte[values.Length * (float32 ? 4 : 8)];
        for (int i = 0; i < values.Length; i++)
            if (float32) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), (float)values[i]);
            else BinaryPrimitives.WriteDoubleLittleEndian(bytes.AsSpan(8 * i), values[i]);
        return bytes;
    }

    /// <summary>The seed's dense forward pass in float64: logits of one image (pixels / 255).</summary>
    public static double[] ReferenceLogits(double[][] w, double[][] b, ReadOnlySpan<byte> pixels)
    {
        double[] a = new double[784];
        for (int k = 0; k < 784; k++) a[k] = pixels[k] / 255.0;
        for (int l = 0; l < w.Length; l++)
        {
            int outputs = b[l].Length, inputs = a.Length;
            var z = new double[outputs];
            for (int j = 0; j < outputs; j++)
            {
                double s = 0;
                for (int k = 0; k < inputs; k++) s += w[l][j * inputs + k] * a[k];
                z[j] = s + b[l][j];
                if (l < w.Length - 1) z[j] = Math.Max(z[j], 0);
            }
            a = z;
        }
        return a;
    }

    public static double[] Softmax(double[] z)
    {
        double max = z.Max();
        double[] e = z.Select(v => Math.Exp(v - max)).ToArray();
        double sum = e.Sum();
        return e.Select(v => v / sum).ToArray();
    }
}

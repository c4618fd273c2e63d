using System.IO.Compression;
using System.Text;
using MnistNative.Core;
using MnistNative.Data;
using StbImageWriteSharp;

namespace MnistNative.Fuzz;

/// <summary>
/// Writes the starting corpus (tests/fuzz/TARGET/seed-*) with the project's own writers: small valid files of
/// each format, so the fuzzer starts from inputs that reach deep into each parser. Kept small (AFL++ mutates
/// small inputs far faster): one-hidden-unit models, a one-image IDX file.
/// </summary>
public static class Seeds
{
    public static void Write(string corpusRoot)
    {
        byte[] image = new byte[28 * 28];
        for (int i = 0; i < image.Length; i++) image[i] = (byte)(i % 28 is > 9 and < 18 ? 255 : 0);
        byte[] images = Data.Idx.Encode([1, 28, 28], image);
        byte[] labels = Data.Idx.Encode([3], [7, 0, 9]);
        byte[] noImages = Data.Idx.Encode([0, 28, 28], []);
        Put(corpusRoot, "idx", "seed-images-1", images);
        Put(corpusRoot, "idx", "seed-labels-3", labels);
        Put(corpusRoot, "idx", "seed-images-0", noImages);
        Put(corpusRoot, "idx-gz", "seed-images-1.gz", Gzip(images));
        Put(corpusRoot, "idx-gz", "seed-labels-3.gz", Gzip(labels));

        byte[] model = ModelBytes(MlpParameters.Initialize([784, 1, 10], 0));
        Put(corpusRoot, "load-memory", "seed-model-h1.npz", model);
        byte[] deeper = ModelBytes(MlpParameters.Initialize([784, 1, 2, 10], 1));
        Put(corpusRoot, "load-memory", "seed-model-h1-h2.npz", deeper);

        Put(corpusRoot, "npz", "seed-model-h1.npz", model);
        Put(corpusRoot, "npz", "seed-f8-2x3.npy", Npy("<f8", "(2, 3)", false, new byte[48]));
        Put(corpusRoot, "npz", "seed-f4-fortran-2x2.npy", Npy("<f4", "(2, 2)", true, new byte[16]));
        Put(corpusRoot, "npz", "seed-u1-5.npy", Npy("|u1", "(5,)", false, [1, 2, 3, 4, 5]));
        Put(corpusRoot, "npz", "seed-i8-scalar.npy", Npy("<i8", "()", false, new byte[8]));
        Put(corpusRoot, "npz", "seed-i4-deflated.npz", Zip(CompressionLevel.Optimal,
            ("a.npy", Npy("<i4", "(3,)", false, new byte[12])), ("b.npy", Npy("|i1", "(2, 1)", false, [255, 1]))));

        Put(corpusRoot, "checkpoint", "seed-checkpoint-h1.npz", CheckpointBytes());

        var png = new ImageWriter();
        using (var stream = new MemoryStream())
        {
            png.WritePng(image, 28, 28, ColorComponents.Grey, stream);
            Put(corpusRoot, "png", "seed-grey-28.png", stream.ToArray());
        }
        using (var stream = new MemoryStream())
        {
            png.WritePng(new byte[28 * 28 * 3], 28, 28, ColorComponents.RedGreenBlue, stream);
            Put(corpusRoot, "png", "seed-rgb-28.png", stream.ToArray());
        }
    }

    private static byte[] ModelBytes(MlpParameters p) => ViaFile("model.npz", path => ModelFile.Save(path, p));

    private static byte[] CheckpointBytes()
    {
        MlpParameters w = MlpParameters.Initialize([784, 1, 10], 2);
        var checkpoint = new TrainingCheckpoint
        {
            Weights = w, Optimizer = new OptimizerState(3, [new MlpParameters(w.Sizes)]), Epoch = 1, BatchInEpoch = 2,
            Step = 3, EpochLossSum = 1.5, EpochCorrect = 4, EpochCount = 8, TrainSeconds = 0.25,
            History = [new EpochEntry(0, 2, 2.1, 0.3, 0.25, 0.1)], RunKey = "seed",
        };
        return ViaFile(CheckpointFile.FileName, path => CheckpointFile.Save(Path.GetDirectoryName(path)!, checkpoint));
    }

    private static byte[] ViaFile(string name, Action<string> write)
    {
        string directory = Directory.CreateTempSubdirectory("mnistnative-seeds-").FullName;
        try
        {
            string path = Path.Combine(directory, name);
            write(path);
            return File.ReadAllBytes(path);
        }
        finally { Directory.Delete(directory, recursive: true); }
    }

    private static byte[] Npy(string descr, string shape, bool fortran, byte[] data)
    {
        string header = $"{{'descr': '{descr}', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': {shape}, }}";
        header += new string(' ', (64 - (10 + header.Length + 1) % 64) % 64) + "\n";
        var bytes = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0,
            (byte)header.Length, (byte)(header.Length >> 8) };
        bytes.AddRange(Encoding.Latin1.GetBytes(header));
        bytes.AddRange(data);
        return bytes.ToArray();
    }

    private static byte[] Zip(CompressionLevel level, params (string Name, byte[] Content)[] entries)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, content) in entries)
            {
                using Stream s = zip.CreateEntry(name, level).Open();
                s.Write(content);
            }
        return buffer.ToArray();
    }

    private static byte[] Gzip(byte[] content)
    {
        using var buffer = new MemoryStream();
        using (var gz = new GZipStream(buffer, CompressionLevel.Optimal, leaveOpen: true)) gz.Write(content);
        return buffer.ToArray();
    }

    private static void Put(string root, string target, string name, byte[] content)
    {
        string directory = Path.Combine(root, target);
        Directory.CreateDirectory(directory);
        File.WriteAllBytes(Path.Combine(directory, name), content);
    }
}

using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Formats;
using MnistNative.Inference;
using MnistNative.Tests.Inference;
using Xunit;

namespace MnistNative.Tests.Reliability;

/// <summary>
/// Issue 13, defects 4, 5, 11, 12 and 13: .npz / .npy / checkpoint files built to hurt. Each must end in one
/// <see cref="DataFormatException"/> that names the file and the problem in printable text.
/// </summary>
public sealed class NpzHardeningTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-hostile-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Npy(string descr, string shape, int dataBytes, string fortran = "False")
    {
        string dict = $"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}";
        string header = dict.PadRight(((10 + dict.Length + 1 + 63) / 64 * 64) - 11) + "\n";
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange("NUMPY"u8.ToArray());
        bytes.AddRange([1, 0, (byte)header.Length, (byte)(header.Length >> 8)]);
        bytes.AddRange(Encoding.Latin1.GetBytes(header));
        bytes.AddRange(new byte[dataBytes]);
        return bytes.ToArray();
    }

    private static byte[] ZipBytes(IEnumerable<(string Entry, byte[] Bytes)> entries,
        CompressionLevel level = CompressionLevel.NoCompression)
    {
        using var ms = new MemoryStream();
        using (var zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (entry, bytes) in entries)
            {
                using Stream s = zip.CreateEntry(entry, level).Open();
                s.Write(bytes);
            }
        return ms.ToArray();
    }

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static void AssertPrintable(string message)
    {
        Assert.DoesNotContain(message, c => char.IsControl(c));
        Assert.DoesNotContain("Destination array", message);
    }

    [Fact]
    public void TooManyEntriesAreRefusedBeforeAnyIsRead()
    {
        var entries = Enumerable.Range(0, Npz.MaxEntries + 1).Select(i => ($"a{i}.npy", Npy("<f8", "(1,)", 8)));
        string path = Write("many.npz", ZipBytes(entries));
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(path));
        Assert.StartsWith(path, e.Message);
        Assert.Contains($"{Npz.MaxEntries + 1} entries", e.Message);
    }

    [Fact]
    public void DuplicateEntriesAreRefused()
    {
        byte[] zip = ZipBytes([("w1.npy", Npy("<f8", "(1,)", 8)), ("w1.npy", Npy("<f8", "(2,)", 16))]);
        string path = Write("dup.npz", zip);
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(path));
        Assert.Contains("holds the entry 'w1.npy' twice", e.Message);
    }

    // The sizes a zip's central directory declares are checked, in total, before anything is inflated; here two
    // stored entries claim 700 MB each (the central directory is patched; the data are 8 bytes).
    [Fact]
    public void EntriesWhoseDeclaredSizesAddUpToGiBsAreRefusedBeforeInflating()
    {
        byte[] zip = ZipBytes([("a.npy", Npy("<f8", "(1,)", 8)), ("b.npy", Npy("<f8", "(1,)", 8))]);
        int patched = 0;
        for (int i = 0; i + 46 <= zip.Length; i++)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(zip.AsSpan(i)) != 0x02014b50) continue;
            BinaryPrimitives.WriteUInt32LittleEndian(zip.AsSpan(i + 24), 700_000_000); // uncompressed size
            patched++;
        }
        Assert.Equal(2, patched);
        string path = Write("declares.npz", zip);
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(path));
        Assert.Contains("declare over", e.Message);
    }

    // A model reader inflates only w<i>/b<i>: a corrupt entry under another name is never opened.
    [Fact]
    public void OnlyTheWantedArraysAreInflated()
    {
        var sizes = new[] { 784, 3, 10 };
        var (w, b) = InferenceFixtures.RandomModel(sizes, 2);
        byte[] model = InferenceFixtures.NpzBytes(sizes, w, b, float32: false);
        var entries = new List<(string, byte[])>();
        using (var zip = new ZipArchive(new MemoryStream(model), ZipArchiveMode.Read))
            foreach (ZipArchiveEntry entry in zip.Entries)
            {
                using var s = entry.Open();
                var ms = new MemoryStream();
                s.CopyTo(ms);
                entries.Add((entry.FullName, ms.ToArray()));
            }
        entries.Add(("notes.npy", "not an npy at all"u8.ToArray()));
        string path = Write("extra.npz", ZipBytes(entries));
        MlpParameters p = ModelFile.Load(path);
        Assert.Equal([784, 3, 10], p.Sizes);
        Assert.Contains("'notes' is not a .npy entry (bad magic)", Assert.Throws<DataFormatException>(() =>
            Npz.Read(path)).Message);
    }

    [Theory]
    [InlineData("(2147483647, 2147483647, 2147483647)", "False", "overflows")]
    [InlineData("(2, 2, 2)", "True", "3-D Fortran-ordered array")]
    public void HostileShapesAreDataFormatErrors(string shape, string fortran, string expected)
    {
        string path = Write("shape.npz", ZipBytes([("w1.npy", Npy("<f8", shape, 64, fortran))]));
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(path));
        Assert.StartsWith(path, e.Message);
        Assert.Contains(expected, e.Message);
        var c = Assert.Throws<DataFormatException>(() => MnistClassifier.Load(File.ReadAllBytes(path)));
        Assert.Contains(expected, c.Message);
    }

    [Fact]
    public void ADirectoryIsNamedAsOne()
    {
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(_dir));
        Assert.Equal($"{_dir}: is a directory, not a .npz file", e.Message);
    }

    [Fact]
    public void EvalOfADirectoryOrAnOverflowingShapeIsExitTwo()
    {
        var (code, _, stderr) = CliTests.Run("eval", "--model", _dir, "--data", TestPaths.MnistDir);
        Assert.Equal(Cli.ExitCodes.BadInput, code);
        Assert.Contains("is a directory, not a model file", stderr);
        byte[] overflowing = ZipBytes([("w1.npy", Npy("<f8", "(2147483647, 2147483647, 2147483647)", 64))]);
        string path = Write("overflow.npz", overflowing);
        (code, _, stderr) = CliTests.Run("eval", "--model", path, "--data", TestPaths.MnistDir);
        Assert.Equal(Cli.ExitCodes.BadInput, code);
        Assert.Contains("overflows", stderr);
        Assert.DoesNotContain("unexpected", stderr);
    }

    // Before: the line carried whatever bytes the file's name (or a key read from a file) held, NUL and ESC included.
    [Fact]
    public void ControlCharactersNeverReachTheErrorLine()
    {
        string path = Path.Combine(_dir, "model\u0001\u001b[2J.npz");
        File.WriteAllBytes(path, [1, 2, 3]);
        var (code, _, stderr) = CliTests.Run("eval", "--model", path, "--data", TestPaths.MnistDir);
        Assert.Equal(Cli.ExitCodes.BadInput, code);
        string error = Assert.Single(stderr.Split('\n'), l =>
            l.StartsWith("mnistnative: error:", StringComparison.Ordinal));
        Assert.Contains("model??[2J.npz", error);
        AssertPrintable(error);
    }

    [Fact]
    public void AMissingW2IsNamedByTheDataReaderToo()
    {
        var sizes = new[] { 784, 3, 10 };
        var (w, b) = InferenceFixtures.RandomModel(sizes, 3);
        byte[] model = InferenceFixtures.NpzBytes(sizes, w, b, float32: false, a => a.RemoveAll(x => x.Name == "w2"));
        string path = Write("no-w2.npz", model);
        var e = Assert.Throws<DataFormatException>(() => ModelFile.Load(path));
        Assert.Contains("has no array 'w2' (it has b2)", e.Message);
    }

    // ---- checkpoints (defects 11 and 13) ---------------------------------------------------------------------

    private string SaveCheckpoint(Action<Dictionary<string, (int[] Shape, double[] Values)>> edit)
    {
        int[] sizes = [784, 4, 10];
        var w = MlpParameters.Initialize(sizes, 0);
        MlpParameters Moment(double v)
        {
            var m = new MlpParameters(sizes);
            for (int l = 0; l < m.LayerCount; l++) { Array.Fill(m.W[l], v); Array.Fill(m.B[l], v); }
            return m;
        }
        var checkpoint = new TrainingCheckpoint
        {
            Weights = w, Optimizer = new OptimizerState(12, [Moment(0.1), Moment(0.2)]), Epoch = 1, BatchInEpoch = 2,
            Step = 12,
            EpochLossSum = 3.5, EpochCorrect = 150, EpochCount = 200, TrainSeconds = 1.5,
            History = [new EpochEntry(1, 10, 0.9, 0.7, double.NaN, 1.2)], RunKey = "784-4-10|batch 100",
            FirstLoss = 2.3,
        };
        string dir = Path.Combine(_dir, "ckpt");
        CheckpointFile.Save(dir, checkpoint);
        string path = CheckpointFile.PathIn(dir);
        var arrays = Npz.Read(path).ToDictionary(kv => kv.Key, kv =>
            (Shape: kv.Value.Shape, Values: kv.Value.ToDoubles()));
        edit(arrays);
        Npz.Write(path, arrays.Select(kv => new Npz.Entry(kv.Key, kv.Value.Shape, kv.Value.Values)));
        return dir;
    }

    [Fact]
    public void AnUneditedCheckpointLoads()
    {
        TrainingCheckpoint c = CheckpointFile.Load(SaveCheckpoint(_ => { }));
        Assert.Equal(12, c.Step);
        Assert.Equal(2, c.Optimizer.Moments.Length);
        Assert.Equal(0.2, c.Optimizer.Moments[1].B[1][9]);
        Assert.Equal(2.3, c.FirstLoss);
        Assert.True(double.IsNaN(c.History[0].ValidationAccuracy));
    }

    public static TheoryData<string, string> BadCheckpoints() => new()
    {
        { "short-moment", "field 'm0_w1' has shape (4, 783)" },
        { "nan-moment", "field 'm1_b2' holds NaN or infinite values" },
        { "inf-moment", "field 'm0_w2' holds NaN or infinite values" },
        { "negative-steps", "field 'state[7] (optimizer steps)' is -1" },
        { "huge-moment-count", "field 'state[8] (optimizer moments)' is 1000000000" },
        { "fractional-step", "field 'state[2] (step)' is 2.5" },
        { "nan-loss-sum", "field 'state[3] (epoch loss sum)' is NaN" },
        { "garbage-key", "field 'run_key' holds codes that are not printable" },
        { "history-shape", "field 'history' has shape (1, 5)" },
        { "history-accuracy", "field 'history[0] (train accuracy)' is 7" },
        { "no-state", "has no array 'state'" },
    };

    // Before: short moments were copied as a prefix (resume then diverged), a negative count exited 1, a count of
    // 1e9 allocated gigabytes, and a garbage run key put NUL bytes into the message.
    [Theory]
    [MemberData(nameof(BadCheckpoints))]
    public void EveryCheckpointFieldIsCheckedOnLoad(string kind, string expected)
    {
        string dir = SaveCheckpoint(a =>
        {
            switch (kind)
            {
                case "short-moment": a["m0_w1"] = ([4, 783], new double[4 * 783]); break;
                case "nan-moment": a["m1_b2"].Values[3] = double.NaN; break;
                case "inf-moment": a["m0_w2"].Values[0] = double.PositiveInfinity; break;
                case "negative-steps": a["state"].Values[7] = -1; break;
                case "huge-moment-count": a["state"].Values[8] = 1e9; break;
                case "fractional-step": a["state"].Values[2] = 2.5; break;
                case "nan-loss-sum": a["state"].Values[3] = double.NaN; break;
                case "garbage-key": a["run_key"] = ([5], [0, 1, 65, 0x7f, 200]); break;
                case "history-shape": a["history"] = ([1, 5], new double[5]); break;
                case "history-accuracy": a["history"].Values[3] = 7; break;
                case "no-state": a.Remove("state"); break;
            }
        });
        var e = Assert.Throws<DataFormatException>(() => CheckpointFile.Load(dir));
        Assert.StartsWith(CheckpointFile.PathIn(dir), e.Message);
        Assert.Contains(expected, e.Message);
        AssertPrintable(e.Message);
    }

    [Fact]
    public void AGarbageCheckpointEndsTheCliWithExitTwoAndOnePrintableLine()
    {
        string dir = SaveCheckpoint(a => a["run_key"] = ([3], [0, 0, 0]));
        var (code, _, stderr) = CliTests.Run("train", "--batch-size", "100", "--epochs", "1", "--hidden", "4",
            "--train-count", "200", "--backend", "scalar", "--data", TestPaths.MnistDir,
            "--checkpoint", dir, "--resume", "--out", Path.Combine(_dir, "m.npz"));
        Assert.Equal(Cli.ExitCodes.BadInput, code);
        string error = Assert.Single(stderr.Split('\n'), l =>
            l.StartsWith("mnistnative: error:", StringComparison.Ordinal));
        Assert.Contains("field 'run_key'", error);
        AssertPrintable(error);
    }
}

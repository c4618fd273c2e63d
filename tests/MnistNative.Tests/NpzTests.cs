using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Formats;
using Xunit;

namespace MnistNative.Tests;

public sealed class NpzTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-npz-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A .npy entry written by hand, so the tests do not trust our own writer.</summary>
    private static byte[] Npy(string descr, string shape, byte[] data, string fortran = "False")
    {
        string dict = $"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}";
        string header = dict.PadRight(((10 + dict.Length + 1 + 63) / 64 * 64) - 11) + "\n";
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange("NUMPY"u8.ToArray());
        bytes.AddRange([1, 0, (byte)header.Length, (byte)(header.Length >> 8)]);
        bytes.AddRange(Encoding.Latin1.GetBytes(header));
        bytes.AddRange(data);
        return bytes.ToArray();
    }

    private static byte[] F64(params double[] v)
    {
        var b = new byte[v.Length * 8];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(b.AsSpan(8 * i), v[i]);
        return b;
    }

    private static byte[] F32(params double[] v)
    {
        var b = new byte[v.Length * 4];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(4 * i), (float)v[i]);
        return b;
    }

    private string Zip(string name, params (string Entry, byte[] Bytes)[] entries)
    {
        string path = Path.Combine(_dir, name);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var (entry, bytes) in entries)
        {
            using var s = zip.CreateEntry(entry + ".npy").Open();
            s.Write(bytes);
        }
        return path;
    }

    private static double[] Seq(int n, double scale = 0.01) => Enumerable.Range(0, n).Select(i => i * scale).ToArray();

    [Fact]
    public void SavedModelRoundTripsWithTheSeedsNamesAndColumnBiases()
    {
        MlpParameters p = MlpParameters.Initialize([784, 7, 10], 3);
        string path = Path.Combine(_dir, "m.npz");
        ModelFile.Save(path, p);
        var arrays = Npz.Read(path);
        Assert.Equal(["b1", "b2", "w1", "w2"], arrays.Keys.Order());
        Assert.Equal([7, 784], arrays["w1"].Shape);
        Assert.Equal([7, 1], arrays["b1"].Shape);
        Assert.Equal([10, 7], arrays["w2"].Shape);
        Assert.Equal("<f8", arrays["w1"].Descr);
        MlpParameters back = ModelFile.Load(path);
        Assert.Equal(p.W[0], back.W[0]);
        Assert.Equal(p.B[1], back.B[1]);
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    [Fact]
    public void LoadsFloat32WeightsWithFlatBiases()
    {
        string path = Zip("f32.npz",
            ("w1", Npy("<f4", "(2, 784)", F32(Seq(1568)))), ("b1", Npy("<f4", "(2,)", F32(0.5, -0.5))),
            ("w2", Npy("<f4", "(10, 2)", F32(Seq(20)))), ("b2", Npy("<f4", "(10,)", F32(Seq(10)))));
        MlpParameters p = ModelFile.Load(path);
        Assert.Equal(2, p.Hidden);
        Assert.Equal(-0.5, p.B[0][1]);
        Assert.Equal((double)(float)0.19, p.W[1][19]);
    }

    [Fact]
    public void FortranOrderedArraysAreTransposedIntoCOrder()
    {
        // a (2,3) array stored column by column: C order [[0,1,2],[3,4,5]]
        string path = Zip("f.npz", ("a", Npy("<f8", "(2, 3)", F64(0, 3, 1, 4, 2, 5), fortran: "True")));
        Assert.Equal([0, 1, 2, 3, 4, 5], Npz.Read(path)["a"].ToDoubles());
    }

    [Fact]
    public void ObjectArraysAreRefusedNeverUnpickled()
    {
        string path = Zip("pickle.npz", ("w1", Npy("|O", "(2,)", "\x80\x04\x95cos\nsystem\n"u8.ToArray())));
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(path));
        Assert.Equal($"{path}: array 'w1' holds Python objects (pickled data); refused, it is never deserialised",
            e.Message);
    }

    [Fact]
    public void HeaderClaimingMoreDataThanTheEntryHoldsIsRefused()
    {
        string path = Zip("liar.npz", ("w1", Npy("<f8", "(100000, 784)", F64(1, 2, 3))));
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(path));
        Assert.Contains("array 'w1' is truncated: its header claims shape (100000, 784)", e.Message);
    }

    [Fact]
    public void NonFiniteWeightsAreRefused()
    {
        double[] w1 = Seq(784 * 2);
        w1[5] = double.NaN;
        string path = Zip("nan.npz",
            ("w1", Npy("<f8", "(2, 784)", F64(w1))), ("b1", Npy("<f8", "(2, 1)", F64(0, 0))),
            ("w2", Npy("<f8", "(10, 2)", F64(Seq(20)))), ("b2", Npy("<f8", "(10, 1)", F64(Seq(10)))));
        var e = Assert.Throws<DataFormatException>(() => ModelFile.Load(path));
        Assert.Equal($"{path}: w1 holds NaN or infinite values", e.Message);
    }

    [Theory]
    [InlineData("(2, 783)", "(2, 1)", "(10, 2)", "w1 has shape (2, 783); its second dimension must be 784")]
    [InlineData("(2, 784)", "(3, 1)", "(10, 2)", "b1 has shape (3, 1) and dtype <f8; float (2,) or (2, 1) expected")]
    [InlineData("(2, 784)", "(2, 1)", "(9, 2)", "w2 has 9 rows; the output layer must have 10")]
    public void WrongShapesAreNamed(string w1Shape, string b1Shape, string w2Shape, string problem)
    {
        static int Count(string shape) => shape.Trim('(', ')').Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(int.Parse).Aggregate(1, (a, b) => a * b);
        string path = Zip("shape.npz",
            ("w1", Npy("<f8", w1Shape, F64(Seq(Count(w1Shape))))),
            ("b1", Npy("<f8", b1Shape, F64(Seq(Count(b1Shape))))),
            ("w2", Npy("<f8", w2Shape, F64(Seq(Count(w2Shape))))), ("b2", Npy("<f8", "(10, 1)", F64(Seq(10)))));
        var e = Assert.Throws<DataFormatException>(() => ModelFile.Load(path));
        Assert.Equal($"{path}: {problem}", e.Message);
    }

    [Fact]
    public void MissingArrayIsNamed()
    {
        string path = Zip("none.npz", ("x", Npy("<f8", "(1,)", F64(1))));
        var e = Assert.Throws<DataFormatException>(() => ModelFile.Load(path));
        Assert.Equal($"{path}: has no array 'w1' (found: x)", e.Message);
    }

    [Fact]
    public void NotAZipFile()
    {
        string path = Path.Combine(_dir, "text.npz");
        File.WriteAllText(path, "hello");
        var e = Assert.Throws<DataFormatException>(() => Npz.Read(path));
        Assert.StartsWith($"{path}: is not a valid .npz (zip) file", e.Message);
    }

    [Fact]
    public void ReadsKerasMnistNpz()
    {
        var x = Enumerable.Range(0, 2 * 784).Select(i => (byte)i).ToArray();
        string path = Zip("mnist.npz",
            ("x_train", Npy("|u1", "(2, 28, 28)", x)), ("y_train", Npy("|u1", "(2,)", [3, 4])),
            ("x_test", Npy("|u1", "(1, 28, 28)", x[..784])), ("y_test", Npy("|u1", "(1,)", [9])));
        var (train, test) = KerasMnist.Read(path);
        Assert.Equal(2, train.Count);
        Assert.Equal([3, 4], train.Labels);
        Assert.Equal(9, test.Labels[0]);
        Assert.Equal(x, train.Pixels);
    }

    [Fact]
    public void KerasMnistWithBadLabelIsRefused()
    {
        var x = new byte[784];
        string path = Zip("mnist.npz",
            ("x_train", Npy("|u1", "(1, 28, 28)", x)), ("y_train", Npy("|u1", "(1,)", [12])),
            ("x_test", Npy("|u1", "(1, 28, 28)", x)), ("y_test", Npy("|u1", "(1,)", [1])));
        var e = Assert.Throws<DataFormatException>(() => KerasMnist.Read(path));
        Assert.Equal($"{path}: y_train[0] = 12 is above 9", e.Message);
    }
}

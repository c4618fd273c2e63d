using System.Security.Cryptography;
using System.Text.Json;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MnistNative.Cli;
using MnistNative.Formats;
using MnistNative.Inference;
using Onnx;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

/// <summary>
/// ONNX import: the PyTorch exports in tests/fixtures/onnx (made by benchmarks/reference/export_torch_models.py)
/// against the accuracy PyTorch measured and ONNX Runtime's predictions, image by image; graphs written here in
/// other exporters' forms (MatMul + Add, float64); and the refusals, each one line naming the node and op type.
/// </summary>
public sealed class OnnxImportTests(ITestOutputHelper output)
{
    public static string FixtureDir => Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "onnx");

    public static TheoryData<string> TorchExports() => [.. Manifest.Models.Select(m => m.File)];

    [SkippableTheory]
    [MemberData(nameof(TorchExports))]
    public void TorchExportMatchesPyTorchAccuracyAndOnnxRuntimeImageByImage(string file)
    {
        var (images, labels) = InferenceFixtures.TestSet;
        ManifestModel expected = Manifest.Models.Single(m => m.File == file);
        string path = Path.Combine(FixtureDir, file);
        using var c = MnistClassifier.Load(path);
        Assert.Equal(expected.Sizes, c.Sizes);

        var ours = new int[labels.Length];
        c.PredictBatch(images, ours);
        int correct = ours.Where((p, i) => p == labels[i]).Count();
        int[] ort = OnnxRuntimeLabels(path, images, expected.InputShape.Count == 4);
        int disagreements = ours.Where((p, i) => p != ort[i]).Count();
        string sha = Convert.ToHexStringLower(SHA256.HashData(ours.Select(p => (byte)p).ToArray()));
        output.WriteLine($"{file}: core {correct}/{labels.Length}, PyTorch {expected.PytorchTestCorrect}; "
            + $"{disagreements} disagreements with ONNX Runtime; predictions sha256 {sha} (PyTorch "
                + $"{expected.PytorchPredictionsSha256})");
        Assert.Equal(0, disagreements);
        Assert.Equal(expected.PytorchTestCorrect, correct);
        Assert.Equal(expected.PytorchPredictionsSha256, sha);

        // one image at a time, bytes and floats, agrees with the batch
        var scaled = new float[MnistClassifier.PixelCount];
        for (int i = 0; i < labels.Length; i += 97)
        {
            ReadOnlySpan<byte> image = images.AsSpan(i * MnistClassifier.PixelCount, MnistClassifier.PixelCount);
            for (int k = 0; k < scaled.Length; k++) scaled[k] = image[k] * (1f / 255f);
            Assert.Equal(ours[i], c.Predict(image));
            Assert.Equal(ours[i], c.Predict(scaled));
        }
    }

    [SkippableFact]
    public void OnnxAndNpzOfOneModelPredictTheSame()
    {
        var (images, _) = InferenceFixtures.TestSet;
        int[] sizes = [784, 40, 24, 10];
        var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 5);
        using var fromNpz = MnistClassifier.Load(InferenceFixtures.NpzBytes(sizes, w, b, float32: true));
        foreach (var form in new[] { GraphForm.Gemm, GraphForm.MatMulAdd, GraphForm.Float64MatMulAdd })
        {
            using var fromOnnx = MnistClassifier.Load(OnnxModels.Mlp(sizes, w, b, form).ToByteArray());
            Assert.Equal(sizes, fromOnnx.Sizes);
            var a = new int[10_000];
            var e = new int[10_000];
            fromNpz.PredictBatch(images, e);
            fromOnnx.PredictBatch(images, a);
            Assert.Equal(e, a);
        }
    }

    [SkippableFact]
    public void InGraphNormalisationIsFoldedIntoTheFirstLayer()
    {
        var (images, _) = InferenceFixtures.TestSet;
        int[] sizes = [784, 32, 10];
        var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 9);
        ModelProto model = OnnxModels.Mlp(sizes, w, b, GraphForm.MatMulAdd, normalise: (0.1307f, 0.3081f));
        string path = Path.Combine(Directory.CreateTempSubdirectory("mnistnative-onnx-").FullName, "norm.onnx");
        try
        {
            File.WriteAllBytes(path, model.ToByteArray());
            using var c = MnistClassifier.Load(path);
            int[] ort = OnnxRuntimeLabels(path, images, nchw: false);
            var ours = new int[ort.Length];
            c.PredictBatch(images, ours);
            int disagreements = ours.Where((p, i) => p != ort[i]).Count();
            output.WriteLine($"normalised MatMul + Add graph: {disagreements} disagreements with ONNX Runtime");
            Assert.Equal(0, disagreements);
        }
        finally { Directory.Delete(Path.GetDirectoryName(path)!, recursive: true); }
    }

    public static TheoryData<string, string> BadGraphs() => new()
    {
        { "conv", "node 'conv1' (Conv) is a convolution" },
        { "second-input", "has 2 inputs ('pixels', 'extra')" },
        { "unknown-op", "node 'sine' (Sin) is not supported" },
        { "external-data", "initializer 'w1' is stored as external data" },
        { "sigmoid", "node 'act1' (Sigmoid) is an activation other than ReLU" },
        { "not-784", "node 'gemm1' (Gemm) takes 100 inputs" },
        { "nine-classes", "node 'softmax' (Softmax) is not applied to the 10 outputs of the last linear layer" },
        { "branch", "node 'skip' (Add) reads 'z1'" },
        { "opset-5", "uses opset 5; opsets 7 to 23 are supported" },
    };

    [Theory]
    [MemberData(nameof(BadGraphs))]
    public void UnsupportedGraphsAreRefusedWithOneLineNamingTheNode(string kind, string expected)
    {
        byte[] bytes = OnnxModels.Bad(kind).ToByteArray();
        var e = Assert.Throws<DataFormatException>(() => MnistClassifier.Load(bytes));
        output.WriteLine(e.Message);
        Assert.StartsWith("<memory>: ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void TruncatedAndRandomFilesNamedOnnxAreRefused()
    {
        string dir = Directory.CreateTempSubdirectory("mnistnative-onnx-").FullName;
        try
        {
            byte[] good = File.ReadAllBytes(Path.Combine(FixtureDir, "mlp_784_64_10_dynamic.onnx"));
            string truncated = Path.Combine(dir, "truncated.onnx"), random = Path.Combine(dir, "random.onnx");
            File.WriteAllBytes(truncated, good[..(good.Length / 2)]);
            var bytes = new byte[4096];
            new Random(3).NextBytes(bytes);
            File.WriteAllBytes(random, bytes);
            foreach (string path in new[] { truncated, random })
            {
                var e = Assert.Throws<DataFormatException>(() => MnistClassifier.Load(path));
                output.WriteLine(e.Message);
                Assert.StartsWith($"{path}: is not a valid ONNX model", e.Message);
                Assert.DoesNotContain('\n', e.Message);
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [SkippableFact]
    public void CliEvalPrintsPyTorchsAccuracyAndExportRoundTrips()
    {
        _ = InferenceFixtures.TestSet;
        ManifestModel norm = Manifest.Models.Single(m => m.File == "mlp_784_128_64_10_norm.onnx");
        string fixture = Path.Combine(FixtureDir, norm.File);
        var (code, stdout, stderr) = CliTests.Run("eval", "--model", fixture);
        Assert.True(code == 0, stderr);
        Assert.Contains($"Test accuracy = {norm.PytorchTestAccuracy:F4}", stdout);

        string dir = Directory.CreateTempSubdirectory("mnistnative-onnx-").FullName;
        try
        {
            string back = Path.Combine(dir, "back.onnx");
            (code, _, stderr) = CliTests.Run("export", "--model", fixture, "--onnx", back);
            Assert.True(code == 0, stderr);
            (code, stdout, stderr) = CliTests.Run("eval", "--model", back);
            Assert.True(code == 0, stderr);
            Assert.Contains($"Test accuracy = {norm.PytorchTestAccuracy:F4}", stdout);

            (code, stdout, stderr) = CliTests.Run("predict", "--model", fixture,
                "--idx", InferenceFixtures.TestImagesPath,
                "--index", "0..2");
            Assert.True(code == 0, stderr);
            Assert.Equal(3, stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);

            string trained = Path.Combine(dir, "trained.npz");
            (code, stdout, stderr) = CliTests.Run("train",
                "--init-weights", Path.Combine(FixtureDir, "mlp_784_128_10_gemm.onnx"),
                "--iterations", "2", "--train-count", "500", "--backend", "scalar", "--out", trained);
            Assert.True(code == 0, stderr);
            Assert.Contains("Training 784-128-10", stdout);
            Assert.True(File.Exists(trained));

            // a deeper model trains from its own sizes; --hidden that disagrees with them is refused
            (code, stdout, stderr) = CliTests.Run("train", "--init-weights", fixture, "--iterations", "1",
                "--train-count", "200", "--backend", "scalar", "--out", trained);
            Assert.True(code == 0, stderr);
            Assert.Contains(
                $"Training {string.Join('-', MnistNative.Data.ModelFile.Load(trained).Sizes)} on 200 images", stdout);
            (code, _, stderr) = CliTests.Run("train", "--init-weights", fixture, "--hidden", "10", "--iterations", "1",
                "--out", trained);
            Assert.Equal(ExitCodes.BadInput, code);
            Assert.Contains("does not match --init-weights", stderr);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void CliRefusesBadGraphsWithExitTwoAndOneLine()
    {
        string dir = Directory.CreateTempSubdirectory("mnistnative-onnx-").FullName;
        try
        {
            byte[] good = File.ReadAllBytes(Path.Combine(FixtureDir, "mlp_784_48_10_opset9.onnx"));
            var random = new byte[2048];
            new Random(8).NextBytes(random);
            var files = new Dictionary<string, byte[]>
            {
                ["conv"] = OnnxModels.Bad("conv").ToByteArray(),
                ["second-input"] = OnnxModels.Bad("second-input").ToByteArray(),
                ["unknown-op"] = OnnxModels.Bad("unknown-op").ToByteArray(),
                ["external-data"] = OnnxModels.Bad("external-data").ToByteArray(),
                ["truncated"] = good[..(good.Length * 2 / 3)],
                ["random"] = random,
            };
            foreach (var (kind, bytes) in files)
            {
                string path = Path.Combine(dir, kind + ".onnx");
                File.WriteAllBytes(path, bytes);
                string[][] commands = [["eval", "--model", path], ["export", "--model", path, "--onnx", path + ".out"]];
                foreach (string[] args in commands)
                {
                    var (code, stdout, stderr) = CliTests.Run(args);
                    output.WriteLine(stderr.TrimEnd());
                    Assert.Equal(ExitCodes.BadInput, code);
                    Assert.Equal("", stdout);
                    Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
                    Assert.Contains(path, stderr);
                    Assert.DoesNotContain("   at ", stderr);
                }
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    // ONNX Runtime's argmax per image: float input pixels * (1/255); a fixed batch of 1 runs image by image.
    internal static int[] OnnxRuntimeLabels(string path, byte[] images, bool nchw)
    {
        int n = images.Length / MnistClassifier.PixelCount;
        using var session = new InferenceSession(path);
        string input = session.InputMetadata.Keys.Single();
        int[] shape = session.InputMetadata[input].Dimensions;
        int batch = shape[0] > 0 ? shape[0] : n;
        var labels = new int[n];
        for (int start = 0; start < n; start += batch)
        {
            int count = Math.Min(batch, n - start);
            int[] dims = nchw ? [count, 1, 28, 28] : [count, MnistClassifier.PixelCount];
            var tensor = new DenseTensor<float>(dims);
            Span<float> buffer = tensor.Buffer.Span;
            for (int i = 0; i < count * MnistClassifier.PixelCount; i++)
                buffer[i] = images[start * MnistClassifier.PixelCount + i] * (1f / 255f);
            using var results = session.Run([NamedOnnxValue.CreateFromTensor(input, tensor)]);
            float[] scores = results[0].AsEnumerable<float>().ToArray();
            for (int i = 0; i < count; i++)
            {
                int best = 0;
                for (int j = 1; j < 10; j++) if (scores[i * 10 + j] > scores[i * 10 + best]) best = j;
                labels[start + i] = best;
            }
        }
        return labels;
    }

    public sealed record ManifestModel(string File, int[] Sizes, int Opset, List<JsonElement> InputShape,
        int PytorchTestCorrect,
        double PytorchTestAccuracy, string PytorchPredictionsSha256);

    private sealed record ManifestFile(string TorchVersion, List<ManifestModel> Models);

    private static readonly Lazy<ManifestFile> ManifestLazy = new(() => JsonSerializer.Deserialize<ManifestFile>(
        File.ReadAllText(Path.Combine(FixtureDir, "manifest.json")),
        new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!);

    private static ManifestFile Manifest => ManifestLazy.Value;
}

public enum GraphForm { Gemm, MatMulAdd, Float64MatMulAdd }

/// <summary>
/// ONNX graphs built with OnnxSharp's messages: MLPs in several exporters' forms, and unsupported graphs.
/// </summary>
public static class OnnxModels
{
    public static ModelProto Mlp(int[] sizes, double[][] w, double[][] b, GraphForm form,
        (float Mean, float Std)? normalise = null)
    {
        var g = new GraphProto { Name = "mlp" };
        g.Input.Add(Value("pixels", 784));
        string x = "pixels";
        if (normalise is var (mean, std))
        {
            g.Initializer.Add(Tensor("mean", [], [mean], float64: false));
            g.Initializer.Add(Tensor("std", [], [std], float64: false));
            g.Node.Add(Node("sub", "Sub", [x, "mean"], "centred"));
            g.Node.Add(Node("div", "Div", ["centred", "std"], "normalised"));
            x = "normalised";
        }
        for (int l = 0; l < w.Length; l++)
        {
            int inputs = sizes[l], outputs = sizes[l + 1];
            string z = $"z{l + 1}";
            if (form == GraphForm.Gemm)
            {
                g.Initializer.Add(Tensor($"w{l + 1}", [outputs, inputs], w[l], float64: false));
                g.Initializer.Add(Tensor($"b{l + 1}", [outputs], b[l], float64: false));
                NodeProto gemm = Node($"gemm{l + 1}", "Gemm", [x, $"w{l + 1}", $"b{l + 1}"], z);
                var transB = new AttributeProto { Name = "transB", I = 1 };
                transB.Type = AttributeProto.Types.AttributeType.Int;
                gemm.Attribute.Add(transB);
                g.Node.Add(gemm);
            }
            else
            {
                // tf2onnx / Keras: a (in, out) kernel, then the bias added
                var kernel = new double[inputs * outputs];
                for (int j = 0; j < outputs; j++)
                    for (int k = 0; k < inputs; k++) kernel[k * outputs + j] = w[l][j * inputs + k];
                bool f64 = form == GraphForm.Float64MatMulAdd;
                g.Initializer.Add(Tensor($"kernel{l + 1}", [inputs, outputs], kernel, f64));
                g.Initializer.Add(Tensor($"bias{l + 1}", [outputs], b[l], f64));
                g.Node.Add(Node($"matmul{l + 1}", "MatMul", [x, $"kernel{l + 1}"], $"m{l + 1}"));
                g.Node.Add(Node($"add{l + 1}", "Add", [$"m{l + 1}", $"bias{l + 1}"], z));
            }
            x = z;
            if (l < w.Length - 1)
            {
                g.Node.Add(Node($"relu{l + 1}", "Relu", [x], $"a{l + 1}"));
                x = $"a{l + 1}";
            }
        }
        g.Node.Add(Node("softmax", "Softmax", [x], "probabilities"));
        g.Output.Add(Value("probabilities", 10));
        return Model(g, 13);
    }

    public static ModelProto Bad(string kind)
    {
        int[] sizes = kind == "nine-classes" ? [784, 16, 9] : [784, 16, 10];
        var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 2);
        ModelProto m = Mlp(sizes, w, b, GraphForm.Gemm);
        GraphProto g = m.Graph;
        switch (kind)
        {
            case "conv":
                g.Initializer.Add(Tensor("kernel", [1, 1, 3, 3], new double[9], float64: false));
                g.Node.Insert(0, Node("conv1", "Conv", ["pixels", "kernel"], "features"));
                g.Node[1].Input[0] = "features";
                break;
            case "second-input":
                g.Input.Add(Value("extra", 784));
                g.Node[0].Input[0] = "extra";
                break;
            case "unknown-op":
                g.Node.Insert(1, Node("sine", "Sin", ["z1"], "s1"));
                g.Node[2].Input[0] = "s1";
                break;
            case "external-data":
                TensorProto t = g.Initializer.Single(i => i.Name == "w1");
                t.RawData = ByteString.Empty;
                t.DataLocation = TensorProto.Types.DataLocation.External;
                t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.bin" });
                break;
            case "sigmoid":
                g.Node[1].OpType = "Sigmoid";
                g.Node[1].Name = "act1";
                break;
            case "not-784":
                g.Initializer.Remove(g.Initializer.Single(i => i.Name == "w1"));
                g.Initializer.Add(Tensor("w1", [16, 100], new double[1600], float64: false));
                break;
            case "branch":
                g.Node.Insert(3, Node("skip", "Add", ["z2", "z1"], "z2skip"));
                g.Node[4].Input[0] = "z2skip";
                break;
            case "opset-5":
                m.OpsetImport[0].Version = 5;
                break;
            case "nine-classes":
                break;
            default: throw new ArgumentException(kind);
        }
        return m;
    }

    private static ModelProto Model(GraphProto g, long opset)
    {
        var m = new ModelProto { IrVersion = 8, ProducerName = "mnistnative-tests", Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = opset });
        return m;
    }

    private static NodeProto Node(string name, string op, string[] inputs, string output)
    {
        var n = new NodeProto { Name = name, OpType = op };
        n.Input.Add(inputs);
        n.Output.Add(output);
        return n;
    }

    private static ValueInfoProto Value(string name, int width)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = width });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor
                {
                    ElemType = (int)TensorProto.Types.DataType.Float,
                    Shape = shape,
                },
            },
        };
    }

    private static TensorProto Tensor(string name, long[] dims, IReadOnlyList<double> values, bool float64)
    {
        var t = new TensorProto { Name = name };
        t.Dims.Add(dims);
        if (float64)
        {
            t.DataType = (int)TensorProto.Types.DataType.Double;
            t.DoubleData.Add(values);
        }
        else
        {
            t.DataType = (int)TensorProto.Types.DataType.Float;
            var bytes = new byte[values.Count * 4];
            for (int i = 0; i < values.Count; i++)
                System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), (float)values[i]);
            t.RawData = ByteString.CopyFrom(bytes);
        }
        return t;
    }

    private static TensorProto Tensor(string name, long[] dims, float[] values, bool float64) =>
        Tensor(name, dims, values.Select(v => (double)v).ToArray(), float64);
}

/// <summary>The deep models' calls: no allocation per call once loaded.</summary>
public sealed class DeepModelAllocationTests
{
    [SkippableFact]
    public void DeepOnnxModelCallsAllocateNothing()
    {
        using var c = MnistClassifier.Load(Path.Combine(OnnxImportTests.FixtureDir, "mlp_784_384_128_10.onnx"));
        MnistClassifierTests.AssertCallsAllocateNothing(c, singleImages: 200, rounds: 3);
    }
}

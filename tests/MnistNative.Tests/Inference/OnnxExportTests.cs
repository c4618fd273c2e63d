using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MnistNative.Cli.Onnx;
using MnistNative.Inference;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

public sealed class OnnxExportTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void OnnxRuntimeOnTheExportedModelPredictsLikeMnistClassifier()
    {
        var (images, _) = InferenceFixtures.TestSet;
        string dir = Directory.CreateTempSubdirectory("mnistnative-onnx-").FullName;
        try
        {
            string onnx = Path.Combine(dir, "final.onnx");
            OnnxExporter.Export(InferenceFixtures.FinalModel, onnx);
            Assert.Empty(Directory.GetFiles(dir, "*.tmp"));

            int n = images.Length / 784;
            var input = new DenseTensor<float>([n, 784]);
            for (int i = 0; i < images.Length; i++) input.Buffer.Span[i] = images[i] * (1f / 255f);
            using var session = new InferenceSession(onnx);
            using var results = session.Run([NamedOnnxValue.CreateFromTensor(OnnxExporter.InputName, input)]);
            float[] probs = results.Single(r => r.Name == OnnxExporter.OutputName).AsEnumerable<float>().ToArray();
            Assert.Equal(n * 10, probs.Length);

            using var c = MnistClassifier.Load(InferenceFixtures.FinalModel);
            var ours = new float[10];
            int mismatches = 0;
            double maxDiff = 0;
            for (int i = 0; i < n; i++)
            {
                ReadOnlySpan<float> row = probs.AsSpan(i * 10, 10);
                int onnxLabel = 0;
                for (int j = 1; j < 10; j++) if (row[j] > row[onnxLabel]) onnxLabel = j;
                if (onnxLabel != c.Predict(images.AsSpan(i * 784, 784))) mismatches++;
                c.Probabilities(images.AsSpan(i * 784, 784), ours);
                for (int j = 0; j < 10; j++) maxDiff = Math.Max(maxDiff, Math.Abs(ours[j] - row[j]));
            }
            output.WriteLine($"{n} images: {mismatches} label mismatches, max |prob diff| {maxDiff:E2}");
            Assert.Equal(0, mismatches);
            Assert.True(maxDiff < 1e-5, $"max probability difference {maxDiff}");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}

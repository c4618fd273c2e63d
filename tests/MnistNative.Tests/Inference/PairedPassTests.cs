using MnistNative.Inference;
using MnistNative.Inference.Onnx;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

// The paired integer layer 1 of deep models (PairedFirstLayer): a certified answer is the exact model's argmax, turning
// the pass on changes no prediction, and what the bound cannot certify (near ties, over-bright images) goes to the
// float path.
public sealed class PairedPassTests(ITestOutputHelper output)
{
    public static TheoryData<string> Models() =>
        new() { "mlp_784_384_128_10.onnx", "mlp_784_128_10_gemm.onnx", "mlp_784_128_64_10_norm.onnx" };

    private static MnistClassifier LoadPaired(string file)
    {
        var c = MnistClassifier.Load(Path.Combine(OnnxImportTests.FixtureDir, file));
        Skip.IfNot(c.Path is PairedFirstLayerPath, "this CPU has no AVX-512BW: the paired integer pass does not run");
        return c;
    }

    // The classifier's model exactly: float32-rounded weights, inputs fl(r * (1/255f)), float64 arithmetic.
    private static double[] ExactLogits(MlpWeights m, ReadOnlySpan<byte> pixels)
    {
        double[] a = new double[784];
        for (int k = 0; k < 784; k++) a[k] = pixels[k] * (1f / 255f);
        for (int l = 0; l < m.W.Length; l++)
        {
            int outputs = m.B[l].Length, inputs = a.Length;
            var z = new double[outputs];
            for (int j = 0; j < outputs; j++)
            {
                double s = (float)m.B[l][j];
                for (int k = 0; k < inputs; k++) s += (double)(float)m.W[l][j * inputs + k] * a[k];
                z[j] = l < m.W.Length - 1 ? Math.Max(s, 0) : s;
            }
            a = z;
        }
        return a;
    }

    [SkippableTheory]
    [MemberData(nameof(Models))]
    public unsafe void CertifiedAnswersAreTheExactArgmaxAndFewImagesFallBack(string file)
    {
        var (images, _) = InferenceFixtures.TestSet;
        string path = Path.Combine(OnnxImportTests.FixtureDir, file);
        using MnistClassifier c = LoadPaired(file);
        var paired = (PairedFirstLayerPath)c.Path;
        MlpWeights m = OnnxImporter.Import(File.ReadAllBytes(path), path);
        byte* scratch = stackalloc byte[64 * 1024];
        int fallbacks = 0;
        double smallestCertifiedLead = double.MaxValue;
        for (int i = 0; i < 10000; i++)
        {
            ReadOnlySpan<byte> image = images.AsSpan(i * 784, 784);
            int label;
            fixed (byte* p = image) label = paired.CertifiedLabel(p, scratch);
            if (label < 0) { fallbacks++; continue; }
            double[] exact = ExactLogits(m, image);
            int top = Array.IndexOf(exact, exact.Max());
            Assert.True(top == label, $"image {i}: certified {label}, exact argmax {top}");
            smallestCertifiedLead = Math.Min(smallestCertifiedLead, exact[top] - exact.Where((_, k) => k != top).Max());
        }
        output.WriteLine($"{file}: {fallbacks} of 10,000 images left to the float path; smallest exact lead among " +
            $"certified answers {smallestCertifiedLead:E3}");
        Assert.True(fallbacks < 500, $"{fallbacks} images fell back: the bound is too loose to help");
    }

    [SkippableTheory]
    [MemberData(nameof(Models))]
    public void ThePairedPassChangesNoPrediction(string file)
    {
        var (images, _) = InferenceFixtures.TestSet;
        using MnistClassifier paired = LoadPaired(file);
        using MnistClassifier floatOnly = MnistClassifier.Load(Path.Combine(OnnxImportTests.FixtureDir, file));
        floatOnly.DisableInt16Pass();
        Assert.IsType<SparsePath<Width512, System.Runtime.Intrinsics.Vector512<float>>>(floatOnly.Path);
        var expected = new int[10000];
        var labels = new int[10000];
        floatOnly.PredictBatch(images, expected, maxThreads: 1);
        paired.PredictBatch(images, labels);
        Assert.Equal(expected, labels);
        for (int i = 0; i < 10000; i += 7) Assert.Equal(expected[i], paired.Predict(images.AsSpan(i * 784, 784)));
    }

    // A white image (pixel sum 199,920) could overflow the int32 sums: it takes the float path, whose answer stands.
    [SkippableFact]
    public unsafe void ImagesTooBrightForTheIntegerSumsTakeTheFloatPath()
    {
        using MnistClassifier paired = LoadPaired("mlp_784_128_10_gemm.onnx");
        using MnistClassifier floatOnly =
            MnistClassifier.Load(Path.Combine(OnnxImportTests.FixtureDir, "mlp_784_128_10_gemm.onnx"));
        floatOnly.DisableInt16Pass();
        byte[] white = Enumerable.Repeat((byte)255, 784).ToArray();
        byte* scratch = stackalloc byte[64 * 1024];
        fixed (byte* p = white) Assert.Equal(-1, ((PairedFirstLayerPath)paired.Path).CertifiedLabel(p, scratch));
        Assert.Equal(floatOnly.Predict(white), paired.Predict(white));
        // just below the limit: certified or not, the same answer as the float path
        byte[] bright = new byte[784];
        for (int k = 0; k < PairedFirstLayer.MaxPixelSum / 255; k++)
            bright[k * 784 / (PairedFirstLayer.MaxPixelSum / 255)] = 255;
        Assert.Equal(floatOnly.Predict(bright), paired.Predict(bright));
    }
}

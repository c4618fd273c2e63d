using MnistNative.Inference;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

// The integer first pass (Int16FirstLayer): its logits stay within the bound it certifies with, a certified answer is
// the exact model's argmax, and turning it on changes no prediction.
public sealed class Int16PassTests(ITestOutputHelper output)
{
    private static MnistClassifier LoadInt16(byte[] npz)
    {
        var c = MnistClassifier.Load(npz);
        Skip.IfNot(c.Int16Pass, "this CPU has no AVX2 + FMA: the integer first pass does not run");
        return c;
    }

    // float32-rounded weights: the classifier's model, evaluated exactly (float64) by the reference
    private static (double[][] W, double[][] B) AsFloat32(double[][] w, double[][] b) =>
        (w.Select(a => a.Select(v => (double)(float)v).ToArray()).ToArray(),
            b.Select(a => a.Select(v => (double)(float)v).ToArray()).ToArray());

    private static double[] LogitsOf(ReadOnlySpan<float> hidden, double[][] w, double[][] b)
    {
        int units = b[0].Length;
        var z = new double[10];
        for (int k = 0; k < 10; k++)
        {
            z[k] = b[1][k];
            for (int j = 0; j < units; j++) z[k] += w[1][k * units + j] * hidden[j];
        }
        return z;
    }

    private static int ArgMax(double[] z) => Array.IndexOf(z, z.Max());

    private static double Lead(double[] z)
    {
        int top = ArgMax(z);
        return z[top] - z.Where((_, k) => k != top).Max();
    }

    [SkippableFact]
    public void LogitsStayWithinTheBoundAndCertifiedAnswersAreTheExactArgmax()
    {
        var (images, _) = InferenceFixtures.TestSet;
        MlpParametersView p = MlpParametersView.Load(InferenceFixtures.FinalModel);
        var (w, b) = AsFloat32(p.W, p.B);
        using MnistClassifier c = LoadInt16(File.ReadAllBytes(InferenceFixtures.FinalModel));
        double bound = c.Int16Threshold / 2, worst = 0;
        int settledByFloat = 0;
        var hidden = new float[16];
        for (int i = 0; i < 10000; i++)
        {
            ReadOnlySpan<byte> image = images.AsSpan(i * 784, 784);
            int label = c.Int16Only(image, hidden);
            double[] exact = InferenceFixtures.ReferenceLogits(w, b, image);
            double[] approx = LogitsOf(hidden, w, b);
            for (int k = 0; k < 10; k++) worst = Math.Max(worst, Math.Abs(approx[k] - exact[k]));
            Assert.All(hidden[10..], v => Assert.Equal(0f, v));
            if (label < 0)
            {
                settledByFloat++;
                Assert.True(Lead(exact) < 4 * bound, $"image {i}: lead {Lead(exact)} yet not certified");
            }
            else Assert.Equal(ArgMax(exact), label);
        }
        output.WriteLine($"threshold {c.Int16Threshold:E3}; largest logit error {worst:E3} ({worst / bound:P1} of the "
            + $"bound); {settledByFloat} of 10,000 images settled by the float kernels");
        Assert.True(worst <= bound, $"logit error {worst} beyond the bound {bound}");
        Assert.True(settledByFloat < 200,
            $"{settledByFloat} images fell back to the float kernels: the bound is too loose to help");
    }

    [SkippableFact]
    public void TheIntegerPassChangesNoPrediction()
    {
        var (images, _) = InferenceFixtures.TestSet;
        byte[] npz = File.ReadAllBytes(InferenceFixtures.FinalModel);
        using MnistClassifier withPass = LoadInt16(npz);
        foreach (InferenceKernel kernel in new[] { InferenceKernel.Avx2, InferenceKernel.Avx512 })
        {
            if (!ForwardKernels.IsSupported(kernel)) continue;
            using MnistClassifier floatOnly = MnistClassifier.Load(npz);
            floatOnly.ForceKernel(kernel);
            floatOnly.DisableInt16Pass();
            withPass.ForceKernel(kernel);
            Assert.True(withPass.Int16Pass);
            var a = new int[10000];
            var e = new int[10000];
            withPass.PredictBatch(images, a);
            floatOnly.PredictBatch(images, e);
            Assert.Equal(e, a);
            for (int i = 0; i < 10000; i += 7) Assert.Equal(e[i], withPass.Predict(images.AsSpan(i * 784, 784)));
        }
    }

    // Saturated images on weights of one sign: the int32 lanes and their fold stay in range (98 * 255 * 32767 per
    // lane, twice that after the fold), and the hidden values match the exact ones.
    [SkippableFact]
    public void ExtremeSumsNeitherOverflowNorLoseTheBound()
    {
        int[] sizes = [784, 10, 10];
        var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 21);
        for (int k = 0; k < 784; k++)
        {
            w[0][0 * 784 + k] = 0.75;            // +0.75 * 784 at a saturated image
            w[0][1 * 784 + k] = -0.75;           // the same, negative: ReLU gives 0
            w[0][2 * 784 + k] = k % 2 == 0 ? 3 : -3;
            w[0][3 * 784 + k] = k == 400 ? 1e-3 : 0; // one tiny weight: the finest scale
        }
        for (int j = 4; j < 10; j++) for (int k = 0; k < 784; k++) w[0][j * 784 + k] = 0;
        var (wf, bf) = AsFloat32(w, b);
        using MnistClassifier c = LoadInt16(InferenceFixtures.NpzBytes(sizes, w, b, float32: true));
        var hidden = new float[16];
        foreach (byte value in new byte[] { 255, 1, 0 })
        {
            byte[] image = Enumerable.Repeat(value, 784).ToArray();
            int label = c.Int16Only(image, hidden);
            double[] exactHidden = Enumerable.Range(0, 10).Select(j => Math.Max(0,
                Enumerable.Range(0, 784).Sum(k => wf[0][j * 784 + k] * value / 255.0) + bf[0][j])).ToArray();
            double[] exact = InferenceFixtures.ReferenceLogits(wf, bf, image);
            double[] approx = LogitsOf(hidden, wf, bf);
            for (int j = 0; j < 10; j++)
                Assert.True(Math.Abs(hidden[j] - exactHidden[j]) <= 1e-3 * (1 + exactHidden[j]),
                    $"pixel value {value}, unit {j}: {hidden[j]} vs {exactHidden[j]}");
            for (int k = 0; k < 10; k++)
                Assert.True(Math.Abs(approx[k] - exact[k]) <= c.Int16Threshold / 2, $"pixel value {value}, logit {k}");
            if (label >= 0) Assert.Equal(ArgMax(exact), label);
            Assert.Equal(ArgMax(exact), c.Predict(image));
        }
    }

    // Equal logits (classes 2 and 5 identical) are never certified: the float kernels answer, first class first.
    [SkippableFact]
    public void TiesAreLeftToTheFloatKernels()
    {
        var (images, _) = InferenceFixtures.TestSet;
        int[] sizes = [784, 10, 10];
        var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 4);
        for (int j = 0; j < 10; j++) w[1][2 * 10 + j] = w[1][5 * 10 + j] = Math.Abs(w[1][2 * 10 + j]) + 1;
        b[1][2] = b[1][5] = 50;
        using MnistClassifier c = LoadInt16(InferenceFixtures.NpzBytes(sizes, w, b, float32: true));
        var hidden = new float[16];
        for (int i = 0; i < 50; i++)
        {
            Assert.Equal(-1, c.Int16Only(images.AsSpan(i * 784, 784), hidden));
            Assert.Equal(2, c.Predict(images.AsSpan(i * 784, 784)));
        }
    }

    [SkippableFact]
    public void OnlyOneHiddenLayerOfAtMostTenUnitsTakesThePass()
    {
        Skip.IfNot(ForwardKernels.IsSupported(InferenceKernel.Avx2), "no AVX2 + FMA");
        int[][] shapes = [[784, 1, 10], [784, 7, 10], [784, 10, 10], [784, 11, 10], [784, 16, 10], [784, 10, 10, 10]];
        foreach (int[] sizes in shapes)
        {
            var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 2);
            using var c = MnistClassifier.Load(InferenceFixtures.NpzBytes(sizes, w, b, float32: false));
            Assert.Equal(sizes.Length == 3 && sizes[1] <= 10, c.Int16Pass);
            c.ForceKernel(InferenceKernel.Scalar);
            Assert.False(c.Int16Pass);
        }
    }

    // Weights near float32's limit on both layers: the bound passes float32's range, so the pass is left off and the
    // float kernels run.
    [SkippableFact]
    public void HugeWeightsLeaveThePassOff()
    {
        int[] sizes = [784, 10, 10];
        var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 6);
        w[0][5] = 3e38;  // unit 0, pixel 5
        w[1][0] = 3e38;  // class 0, unit 0
        using var c = MnistClassifier.Load(InferenceFixtures.NpzBytes(sizes, w, b, float32: true));
        Assert.False(c.Int16Pass, $"threshold {c.Int16Threshold}");
    }
}

using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using MnistNative.Tests.Training;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>The reference by finite differences at depth 3 and by the per-layer functions' own contracts.</summary>
public sealed class ReferenceTests(ITestOutputHelper output)
{
    [Fact]
    public void GradientsMatchFiniteDifferencesTwoHiddenLayers()
    {
        int[] sizes = [784, 6, 5, 10];
        using var backend = new ReferenceBackend<double>(sizes, OptimizerSettings.Gd);
        backend.Upload(TinyData.Images(4));
        MlpParameters w = MlpParameters.Initialize(sizes, 7);
        int[] batch = [0, 1, 2, 3];
        backend.SetWeights(w);
        var g = new MlpParameters(sizes);
        backend.ComputeGradients(TrainingBatch.Of(batch), g);
        var scratch = new MlpParameters(sizes);
        double Loss(MlpParameters p)
        {
            backend.SetWeights(p);
            return backend.ComputeGradients(TrainingBatch.Of(batch), scratch).Loss;
        }
        double worst = 0;
        var rng = new Random(1);
        for (int l = 0; l < sizes.Length - 1; l++)
        {
            // first-layer weights of pixels that are zero in every image have zero gradient: probe the others
            int[] candidates = Enumerable.Range(0, w.W[l].Length).Where(i => Math.Abs(g.W[l][i]) > 1e-6).ToArray();
            for (int probe = 0; probe < 8; probe++)
            {
                foreach (bool bias in new[] { false, true })
                {
                    double[] arr = bias ? w.B[l] : w.W[l];
                    int i = bias ? rng.Next(arr.Length) : candidates[rng.Next(candidates.Length)];
                    double saved = arr[i], h = 1e-6;
                    arr[i] = saved + h; double up = Loss(w);
                    arr[i] = saved - h; double down = Loss(w);
                    arr[i] = saved;
                    double numeric = (up - down) / (2 * h), analytic = (bias ? g.B[l] : g.W[l])[i];
                    double err = Math.Abs(numeric - analytic) / Math.Max(1e-4, Math.Abs(numeric) + Math.Abs(analytic));
                    worst = Math.Max(worst, err);
                }
            }
        }
        output.WriteLine($"worst relative error {worst:E2}");
        Assert.True(worst < 1e-5, $"worst relative error {worst:E2}");
    }

    /// <summary>A sampled batch of every sample in order is the whole set, term for term.</summary>
    [Fact]
    public void WholeSetAndTheSampledBatchOfAllSamplesInOrderAreBitwiseTheSame()
    {
        int[] sizes = [784, 9, 7, 10];
        var data = TinyData.Images(40);
        var o = new OptimizerSettings(OptimizerKind.Adam, WeightDecay: 1e-3);
        MlpParameters Run(bool wholeSet)
        {
            using var b = new ReferenceBackend<double>(sizes, o);
            b.Upload(data);
            b.SetWeights(MlpParameters.Initialize(sizes, 3));
            int[] all = Enumerable.Range(0, 40).ToArray();
            for (int i = 0; i < 3; i++)
                b.Step(wholeSet ? TrainingBatch.WholeSet : TrainingBatch.Of(all), 1e-3, measure: false);
            return b.GetWeights();
        }
        Assert.Equal(0, Conformance.TrainingBackendConformance.MaxDiff(Run(true), Run(false), 0, 0, exact: true));
    }

    /// <summary>The one loss formula: logsumexp(z) - z[y] stays finite and exact where -log(softmax) would give
    /// infinity (a probability that rounds to zero).</summary>
    [Fact]
    public void CrossEntropyIsLogSumExpMinusTheLabelsLogit()
    {
        double[] z = [1000, 0, -1000, 3, 2, 1, 0, 0, 0, 0];
        Assert.Equal(2000, Reference.CrossEntropy<double>(z, 2), 9);
        double[] small = [0.5, 1.5, -2, 0, 0, 0, 0, 0, 0, 0];
        double logSum = Math.Log(small.Sum(Math.Exp));
        Assert.Equal(logSum - 1.5, Reference.CrossEntropy<double>(small, 1), 14);
        var probs = new double[10];
        StepMetrics m = Reference.SoftmaxCrossEntropyForward<double>(probs, small, [1], 1, 10);
        Assert.Equal(1, m.Correct);
        Assert.Equal(logSum - 1.5, m.LossSum, 14);
        Assert.Equal(1.0, probs.Sum(), 14);
    }

    [Fact]
    public void PixelsAreDividedBy255()
    {
        byte[] pixels = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        var x = new float[256];
        Reference.ScalePixels<float>(x, pixels);
        for (int i = 0; i < 256; i++) Assert.Equal(i / 255f, x[i]);
    }
}

using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using Xunit;

namespace MnistNative.Tests.Training;

/// <summary>Each optimizer and schedule against updates computed by hand on tiny problems.</summary>
public sealed class OptimizerTests
{
    private static double[] Step(OptimizerSettings o, double lr, long t, double[] w, double[] g, double[] m, double[] v)
    {
        OptimizerMath.Apply<double>(o, lr, t, w, g, m, v);
        return w;
    }

    [Fact]
    public void GradientDescentIsWMinusLrG()
    {
        double[] w = Step(OptimizerSettings.Gd, 0.1, 1, [1, 2], [0.5, -1], [], []);
        Assert.Equal(0.95, w[0], 15);
        Assert.Equal(2.1, w[1], 15);
    }

    [Fact]
    public void WeightDecayAddsWdTimesWToTheGradient()
    {
        double[] w = Step(new OptimizerSettings(WeightDecay: 0.1), 0.1, 1, [1], [0.5], [], []);
        Assert.Equal(1 - 0.1 * (0.5 + 0.1 * 1), w[0], 15); // 0.94
    }

    [Fact]
    public void MomentumAccumulatesVelocity()
    {
        var o = new OptimizerSettings(OptimizerKind.Momentum, Momentum: 0.9);
        double[] w = [1], m = [0];
        Step(o, 0.1, 1, w, [0.5], m, []);
        Assert.Equal(0.5, m[0], 15);
        Assert.Equal(0.95, w[0], 15);
        Step(o, 0.1, 2, w, [0.5], m, []);
        Assert.Equal(0.95, m[0], 15);          // 0.9 * 0.5 + 0.5
        Assert.Equal(0.855, w[0], 14);         // 0.95 - 0.1 * 0.95
    }

    [Fact]
    public void AdamMatchesTheBiasCorrectedUpdateByHand()
    {
        var o = new OptimizerSettings(OptimizerKind.Adam);
        double[] w = [1], m = [0], v = [0];
        Step(o, 0.1, 1, w, [0.5], m, v);
        Assert.Equal(0.05, m[0], 15);          // 0.1 * 0.5
        Assert.Equal(0.00025, v[0], 15);       // 0.001 * 0.25
        // mhat = 0.05 / 0.1 = 0.5, vhat = 0.00025 / 0.001 = 0.25
        double w1 = 1 - 0.1 * 0.5 / (Math.Sqrt(0.25) + 1e-8);
        Assert.Equal(w1, w[0], 14);
        Step(o, 0.1, 2, w, [-0.25], m, v);
        Assert.Equal(0.02, m[0], 15);          // 0.9 * 0.05 + 0.1 * -0.25
        Assert.Equal(0.00031225, v[0], 15);    // 0.999 * 0.00025 + 0.001 * 0.0625
        double mhat = 0.02 / (1 - 0.81), vhat = 0.00031225 / (1 - 0.998001);
        Assert.Equal(w1 - 0.1 * mhat / (Math.Sqrt(vhat) + 1e-8), w[0], 13);
    }

    [Fact]
    public void SchedulesByHand()
    {
        var constant = new LearningRateSchedule(ScheduleKind.Constant, 0.5, 100);
        Assert.Equal(0.5, constant.Rate(0));
        Assert.Equal(0.5, constant.Rate(99));
        var step = new LearningRateSchedule(ScheduleKind.Step, 1, 100);
        Assert.Equal(1, step.Rate(49));
        Assert.Equal(0.1, step.Rate(50), 15);
        Assert.Equal(0.01, step.Rate(75), 15);
        var cosine = new LearningRateSchedule(ScheduleKind.Cosine, 1, 100);
        Assert.Equal(1, cosine.Rate(0), 15);
        Assert.Equal(0.5, cosine.Rate(50), 15);
        Assert.Equal(0, cosine.Rate(100), 15);
        var warm = new LearningRateSchedule(ScheduleKind.Cosine, 1, 110, WarmupSteps: 10);
        Assert.Equal(0.1, warm.Rate(0), 15);   // (0 + 1) / 10
        Assert.Equal(0.5, warm.Rate(4), 15);
        Assert.Equal(1, warm.Rate(10), 15);    // warm-up done: the cosine starts at the base rate
        Assert.Equal(0.5, warm.Rate(60), 15);
    }

    /// <summary>The reference's StepBatch applies exactly w - lr * g (gd) to the gradient it reports.</summary>
    [Theory]
    [InlineData(OptimizerKind.Gd)]
    [InlineData(OptimizerKind.Momentum)]
    [InlineData(OptimizerKind.Adam)]
    public void ReferenceStepAppliesTheOptimizerToItsGradient(OptimizerKind kind)
    {
        var data = TinyData.Images(6);
        int[] sizes = [784, 3, 10];
        var o = new OptimizerSettings(kind, WeightDecay: 0.01);
        using var backend = new ReferenceBackend<double>(sizes, o);
        backend.Upload(data);
        MlpParameters w0 = MlpParameters.Initialize(sizes, 3);
        backend.SetWeights(w0);
        int[] batch = [0, 2, 5];
        var g = new MlpParameters(sizes);
        backend.ComputeGradients(TrainingBatch.Of(batch), g);
        backend.Step(TrainingBatch.Of(batch), 0.05, measure: false);
        MlpParameters w1 = backend.GetWeights();
        for (int l = 0; l < w0.LayerCount; l++)
            for (int i = 0; i < w0.W[l].Length; i += 97)
            {
                double gi = g.W[l][i] + 0.01 * w0.W[l][i];
                double expected = kind switch
                {
                    OptimizerKind.Gd => w0.W[l][i] - 0.05 * gi,
                    OptimizerKind.Momentum => w0.W[l][i] - 0.05 * gi,                    // v = g on the first step
                    _ => w0.W[l][i] - 0.05 * gi / (Math.Abs(gi) + 1e-8),                // mhat = g, vhat = g^2
                };
                Assert.Equal(expected, w1.W[l][i], 12);
            }
    }
}

internal static class TinyData
{
    /// <summary>The first n MNIST training images (real digits: sparse like the full set).</summary>
    public static LabeledImages Images(int n) => TestPaths.Train.Take(n);
}

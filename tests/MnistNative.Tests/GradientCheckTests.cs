using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using MnistNative.Tests.Conformance;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>The reference's analytic gradients against central finite differences of its own loss (float64).</summary>
public sealed class GradientCheckTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(3, 5)]
    [InlineData(1, 4)]
    [InlineData(7, 9)]
    public void AnalyticGradientsMatchFiniteDifferences(int hidden, int n)
    {
        var (data, weights) = Conformance.TrainingBackendConformance.RandomProblem([784, hidden, 10], n, seed: 11);
        using var backend = new ReferenceBackend<double>([784, hidden, 10], OptimizerSettings.Gd);
        backend.Upload(data);
        backend.SetWeights(weights);
        var analytic = MlpParameters.ForHidden(hidden);
        backend.ComputeGradients(TrainingBatch.WholeSet, analytic);

        double Loss(MlpParameters p)
        {
            backend.SetWeights(p);
            return backend.ComputeGradients(TrainingBatch.WholeSet, MlpParameters.ForHidden(hidden)).Loss;
        }

        const double eps = 1e-6;
        var rng = new Random(5);
        double worst = 0;
        int checkedCount = 0;
        for (int l = 0; l < 2; l++)
        {
            foreach (bool isBias in new[] { false, true })
            {
                double[] values = isBias ? weights.B[l] : weights.W[l];
                double[] grad = isBias ? analytic.B[l] : analytic.W[l];
                // every bias and second-layer weight; a random sample of the 784*H first-layer weights,
                // biased towards non-zero gradients so the check is not vacuous
                IEnumerable<int> indices = values.Length <= 200
                    ? Enumerable.Range(0, values.Length)
                    : Enumerable.Range(0, values.Length).Where(i => grad[i] != 0).OrderBy(_ => rng.Next()).Take(60);
                foreach (int i in indices)
                {
                    MlpParameters plus = weights.Clone(), minus = weights.Clone();
                    (isBias ? plus.B[l] : plus.W[l])[i] += eps;
                    (isBias ? minus.B[l] : minus.W[l])[i] -= eps;
                    double numeric = (Loss(plus) - Loss(minus)) / (2 * eps);
                    double diff = Math.Abs(numeric - grad[i]);
                    worst = Math.Max(worst, diff);
                    checkedCount++;
                    Assert.True(diff <= 1e-7 + 1e-5 * Math.Abs(numeric),
                        $"{(isBias ? "b" : "w")}{l + 1}[{i}]: analytic {grad[i]:R}, finite difference {numeric:R}");
                }
            }
        }
        output.WriteLine($"checked {checkedCount} partial derivatives; max |analytic - numeric| = {worst:E2}");
        Assert.True(checkedCount > 30);
    }
}

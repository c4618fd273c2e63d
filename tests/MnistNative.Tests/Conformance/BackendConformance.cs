using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Conformance;

/// <summary>
/// The full-batch suite of the old contract, kept only for OpenClConformance until the OpenCL backend moves onto
/// <see cref="TrainingBackendConformance"/> (then this file goes). One suite, instantiated once per backend and vector width: forward probabilities, gradients and one
/// update compared with the float64 scalar reference on random MNIST-like data, with odd shapes on purpose
/// (hidden widths and sample counts that are not multiples of any vector width or work-group size).
/// A backend this machine cannot run is skipped, except under CI=true, where it fails.
/// </summary>
public abstract class BackendConformance(ITestOutputHelper output)
{
    /// <summary>Creates the backend under test; throws <see cref="BackendUnavailableException"/> when it cannot run here.</summary>
    protected abstract IFullBatchBackend Create(int hidden);

    /// <summary>|got - want| must be at most AbsoluteTolerance + RelativeTolerance * |want|.</summary>
    protected virtual double AbsoluteTolerance => 2e-5;
    protected virtual double RelativeTolerance => 2e-3;

    public static TheoryData<int, int> Shapes => new()
    {
        { 1, 37 }, { 7, 100 }, { 10, 257 }, { 33, 63 }, { 64, 50 }, { 128, 129 }, { 256, 31 },
    };

    [SkippableTheory]
    [MemberData(nameof(Shapes))]
    public void ForwardProbabilitiesMatchReference(int hidden, int n)
    {
        var (data, weights) = RandomProblem(hidden, n, seed: 1);
        using var reference = Reference(hidden, data, weights);
        using var backend = Open(hidden, data, weights);
        var want = new double[n * 10];
        var got = new double[n * 10];
        reference.Predict(data.Pixels, want);
        backend.Predict(data.Pixels, got);
        AssertClose("probabilities", want, got);
    }

    [SkippableTheory]
    [MemberData(nameof(Shapes))]
    public void GradientsMatchReference(int hidden, int n)
    {
        var (data, weights) = RandomProblem(hidden, n, seed: 2);
        using var reference = Reference(hidden, data, weights);
        using var backend = Open(hidden, data, weights);
        var want = MlpParameters.ForHidden(hidden);
        var got = MlpParameters.ForHidden(hidden);
        StepMetrics wantMetrics = reference.ComputeGradients(want);
        StepMetrics gotMetrics = backend.ComputeGradients(got);
        Assert.Equal(wantMetrics.Correct, gotMetrics.Correct);
        AssertClose("loss", [wantMetrics.LossSum / n], [gotMetrics.LossSum / n]);
        AssertParameters("gradient", want, got);
    }

    [SkippableTheory]
    [MemberData(nameof(Shapes))]
    public void OneUpdateMatchesReference(int hidden, int n)
    {
        var (data, weights) = RandomProblem(hidden, n, seed: 3);
        using var reference = Reference(hidden, data, weights);
        using var backend = Open(hidden, data, weights);
        StepMetrics wantMetrics = reference.Step(0.5, measure: true);
        StepMetrics gotMetrics = backend.Step(0.5, measure: true);
        Assert.Equal(wantMetrics.Correct, gotMetrics.Correct);
        Assert.Equal(n, gotMetrics.Count);
        AssertClose("loss", [wantMetrics.LossSum / n], [gotMetrics.LossSum / n]);
        AssertParameters("updated weight", reference.GetWeights(), backend.GetWeights());
        Assert.Equal(default, backend.Step(0.5, measure: false));
    }

    /// <summary>
    /// Images a sparse kernel handles differently: all-zero images (no entries at all), one fully dense image
    /// (784 entries), a count that is not a multiple of any tile, and odd hidden widths.
    /// </summary>
    [SkippableTheory]
    [InlineData(7, 45)]
    [InlineData(33, 77)]
    public void EmptyAndFullyDenseImagesMatchReference(int hidden, int n)
    {
        var (data, weights) = RandomProblem(hidden, n, seed: 6);
        byte[] pixels = data.Pixels.ToArray();
        Array.Clear(pixels, 0, 5 * 784);                             // images 0..4: all zero
        for (int k = 0; k < 784; k++) pixels[6 * 784 + k] = (byte)(1 + k % 255); // image 6: no zero pixel
        Array.Clear(pixels, (n - 1) * 784, 784);                     // the last image: all zero
        data = new LabeledImages(pixels, data.Labels);
        using var reference = Reference(hidden, data, weights);
        using var backend = Open(hidden, data, weights);
        var want = MlpParameters.ForHidden(hidden);
        var got = MlpParameters.ForHidden(hidden);
        Assert.Equal(reference.ComputeGradients(want).Correct, backend.ComputeGradients(got).Correct);
        AssertParameters("gradient", want, got);
        reference.Step(0.5, measure: false);
        backend.Step(0.5, measure: false);
        AssertParameters("updated weight", reference.GetWeights(), backend.GetWeights());
        var wantProbabilities = new double[n * 10];
        var gotProbabilities = new double[n * 10];
        reference.Predict(data.Pixels, wantProbabilities);
        backend.Predict(data.Pixels, gotProbabilities);
        AssertClose("probabilities after the update", wantProbabilities, gotProbabilities);
    }

    [SkippableFact]
    public void SetThenGetWeightsRoundTrips()
    {
        var (data, weights) = RandomProblem(10, 20, seed: 4);
        using var backend = Open(10, data, weights);
        AssertParameters("weight", weights, backend.GetWeights());
    }

    private IFullBatchBackend Open(int hidden, LabeledImages data, MlpParameters weights)
    {
        IFullBatchBackend backend;
        try
        {
            backend = Create(hidden);
        }
        catch (BackendUnavailableException e) when (Environment.GetEnvironmentVariable("CI") != "true")
        {
            Skip.If(true, $"backend unavailable on this machine: {e.Message}");
            throw;
        }
        backend.Upload(data);
        backend.SetWeights(weights);
        return backend;
    }

    private static IFullBatchBackend Reference(int hidden, LabeledImages data, MlpParameters weights)
    {
        IFullBatchBackend r = new ReferenceBackend<double>([784, hidden, 10], OptimizerSettings.Gd);
        r.Upload(data);
        r.SetWeights(weights);
        return r;
    }

    /// <summary>MNIST-like: about 80% zero pixels, the rest uniform 1..255; labels uniform 0..9.</summary>
    public static (LabeledImages Data, MlpParameters Weights) RandomProblem(int hidden, int n, int seed) =>
        TrainingBackendConformance.RandomProblem([784, hidden, 10], n, seed);

    private void AssertParameters(string what, MlpParameters want, MlpParameters got)
    {
        Assert.Equal(want.Sizes, got.Sizes);
        for (int l = 0; l < want.LayerCount; l++)
        {
            AssertClose($"{what} w{l + 1}", want.W[l], got.W[l]);
            AssertClose($"{what} b{l + 1}", want.B[l], got.B[l]);
        }
    }

    private void AssertClose(string what, double[] want, double[] got)
    {
        Assert.Equal(want.Length, got.Length);
        double maxDiff = 0;
        int worst = -1;
        for (int i = 0; i < want.Length; i++)
        {
            double diff = Math.Abs(got[i] - want[i]);
            if (double.IsNaN(got[i])) diff = double.PositiveInfinity;
            double excess = diff - (AbsoluteTolerance + RelativeTolerance * Math.Abs(want[i]));
            if (diff > maxDiff) maxDiff = diff;
            if (excess > 0 && worst < 0) worst = i;
        }
        output.WriteLine($"{what}: max |difference| {maxDiff:E2} over {want.Length} values");
        if (worst >= 0)
            Assert.Fail($"{what}[{worst}] = {got[worst]:R}, reference {want[worst]:R} (max |difference| {maxDiff:E2}, tolerance {AbsoluteTolerance:E1} + {RelativeTolerance:E1} * |reference|)");
    }
}

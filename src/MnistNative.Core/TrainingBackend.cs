namespace MnistNative.Core;

/// <summary>
/// The samples one training step uses: the whole uploaded set in its own order (full-batch gradient descent, the
/// seed's step) or the uploaded samples at some indices (a mini-batch). A backend may run the whole set on
/// kernels that only fit that case (the SIMD backend's fused 784-H-10 tile kernels, for one), so the case is
/// named rather than detected from the indices.
/// </summary>
public readonly ref struct TrainingBatch
{
    private readonly ReadOnlySpan<int> _indices;

    private TrainingBatch(ReadOnlySpan<int> indices, bool wholeSet)
    {
        _indices = indices;
        IsWholeSet = wholeSet;
    }

    /// <summary>Every uploaded sample, in upload order.</summary>
    public static TrainingBatch WholeSet => new(default, wholeSet: true);

    /// <summary>The uploaded samples at <paramref name="indices"/> (each in [0, uploaded count)).</summary>
    public static TrainingBatch Of(ReadOnlySpan<int> indices) => new(indices, wholeSet: false);

    public bool IsWholeSet { get; }

    /// <summary>The sample indices; empty for <see cref="WholeSet"/>.</summary>
    public ReadOnlySpan<int> Indices => _indices;

    /// <summary>Samples in the batch, given the uploaded count.</summary>
    public int Count(int uploaded) => IsWholeSet ? uploaded : _indices.Length;
}

/// <summary>
/// The one contract of a training backend: an MLP of any depth (sizes [784, h1, ..., 10]), batches of any size
/// up to the whole uploaded set, every optimizer. It is coarse on purpose, so a backend can fuse passes and keep
/// data resident: the host uploads the training set once, asks for steps, and downloads the weights when it
/// needs them. Inside, each backend keeps the per-layer forward/backward pairs of <c>Reference</c> so the math
/// sits in the same place everywhere. Losses are means over the batch (torch's CrossEntropyLoss); full-batch
/// gradient descent (<see cref="TrainingBatch.WholeSet"/>, <see cref="OptimizerKind.Gd"/>) is the seed's step.
/// </summary>
public interface ITrainingBackend : IDisposable
{
    BackendInfo Info { get; }

    /// <summary>Layer sizes, input first: [784, 10, 10] for the seed.</summary>
    IReadOnlyList<int> Sizes { get; }

    OptimizerSettings Optimizer { get; }

    /// <summary>
    /// The most samples one step takes, a whole-set step included (the backend's scratch is sized by it).
    /// </summary>
    int MaxBatch { get; }

    /// <summary>The layer-1 kernels chosen at the last <see cref="Upload"/> and why; null before it.</summary>
    KernelChoice? KernelChoice { get; }

    /// <summary>
    /// Where the backend records its phases (<see cref="Phases"/>); null when profiling is off, which then costs
    /// one null check per phase.
    /// </summary>
    Profiler? Profiler { get; set; }

    /// <summary>
    /// Uploads the training images and labels; called before any step. A later call replaces the set.
    /// </summary>
    void Upload(LabeledImages train);

    /// <summary>Replaces the weights; their sizes must equal <see cref="Sizes"/>.</summary>
    void SetWeights(MlpParameters weights);

    /// <summary>The current weights, as float64.</summary>
    MlpParameters GetWeights();

    OptimizerState GetOptimizerState();

    void SetOptimizerState(OptimizerState state);

    /// <summary>
    /// One optimizer step on <paramref name="batch"/> (the mean gradient over it). With <paramref name="measure"/>,
    /// returns the metrics of this step's forward pass, measured before the update; otherwise default.
    /// </summary>
    StepMetrics Step(TrainingBatch batch, double learningRate, bool measure);

    /// <summary>The mean gradients over <paramref name="batch"/> at the current weights, without updating them, and
    /// the metrics of the forward pass (for the trainer's final check and the conformance tests).</summary>
    StepMetrics ComputeGradients(TrainingBatch batch, MlpParameters gradients);

    /// <summary>Softmax probabilities (count * 10) of images given as rows of 784 raw bytes.</summary>
    void Predict(ReadOnlySpan<byte> images, Span<double> probabilities);

    /// <summary>
    /// Waits until every queued step has finished. Steps that do not measure may run asynchronously (OpenCL
    /// enqueues them); timing from the host calls this before reading the clock. CPU backends are synchronous.
    /// </summary>
    void Synchronize() { }
}

/// <summary>Checks of the arguments every backend's <see cref="ITrainingBackend.Predict"/> takes.</summary>
public static class PredictArguments
{
    /// <summary>The number of images, after checking that <paramref name="images"/> is whole rows of 784 bytes and
    /// <paramref name="probabilities"/> holds 10 values for each.</summary>
    public static int ImageCount(ReadOnlySpan<byte> images, Span<double> probabilities)
    {
        const int In = MlpParameters.InputSize, Out = MlpParameters.Classes;
        int n = images.Length / In;
        if (images.Length != n * In)
            throw new ArgumentException($"images must be rows of {In} bytes, got {images.Length} bytes");
        if (probabilities.Length != n * Out)
            throw new ArgumentException($"need {n * Out} probabilities for {n} images, got {probabilities.Length}");
        return n;
    }
}

/// <summary>
/// The phase names every backend records into a <see cref="Core.Profiler"/>, so a profile reads the same on each.
/// A backend may add a suffix after a space (a layer, "layer 2 forward"; a kernel, "device: hidden_forward").
/// </summary>
public static class Phases
{
    public const string Forward = "forward";
    public const string SoftmaxLoss = "softmax/loss";
    public const string Backward = "backward";
    public const string Reduce = "reduce";
    public const string Update = "update";
    public const string Gather = "gather";
    public const string TransferToDevice = "transfer: to device";
    public const string TransferFromDevice = "transfer: from device";

    /// <summary>Prefix of the rows timed by a device's clock (OpenCL event profiling), one per kernel.</summary>
    public const string DevicePrefix = "device: ";
}

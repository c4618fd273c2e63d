namespace MnistNative.Core;

public enum Precision
{
    F32,
    F64,
}

/// <summary>What a backend is and where it runs; printed by the CLI and carried into --json.</summary>
public sealed record BackendInfo(string Name, Precision Precision, int Threads, string Device);

/// <summary>
/// Metrics of one forward pass over the training set: correct predictions and the summed cross-entropy.
/// </summary>
public readonly record struct StepMetrics(int Correct, double LossSum, int Count)
{
    public double Accuracy => Count == 0 ? 0 : (double)Correct / Count;
    public double Loss => Count == 0 ? 0 : LossSum / Count;
}

/// <summary>
/// The contract every backend implements. It is coarse on purpose, so a backend can fuse passes and keep
/// data resident: the host uploads the training set once, asks for steps, and downloads the weights when it
/// needs them. Inside, each backend keeps the llm.c pairs (HiddenForward / HiddenBackward, OutputForward /
/// OutputBackward) so the math sits in the same place everywhere.
/// </summary>
public interface IFullBatchBackend : IDisposable
{
    BackendInfo Info { get; }

    /// <summary>Uploads the training images and labels. Called once, before anything else.</summary>
    void Upload(LabeledImages train);

    /// <summary>Replaces the weights. The shape must be 784-H-10 with H the backend's hidden width.</summary>
    void SetWeights(MlpParameters weights);

    /// <summary>The current weights, as float64.</summary>
    MlpParameters GetWeights();

    /// <summary>
    /// One full-batch gradient-descent step on the uploaded set, exactly as the seed: forward, backward,
    /// then w -= lr * dw. When <paramref name="measure"/> is true, returns the metrics of this step's forward
    /// pass (measured before the update); otherwise returns default.
    /// </summary>
    StepMetrics Step(double learningRate, bool measure);

    /// <summary>
    /// The full-batch mean gradients at the current weights, without updating them, and the metrics of the
    /// forward pass. For conformance tests against the reference.
    /// </summary>
    StepMetrics ComputeGradients(MlpParameters gradients);

    /// <summary>
    /// Forward-only inference: for each of the images (rows of 784 raw bytes) writes the 10 softmax
    /// probabilities into <paramref name="probabilities"/> (length count * 10).
    /// </summary>
    void Predict(ReadOnlySpan<byte> images, Span<double> probabilities);

    /// <summary>
    /// Waits until every queued step has finished. Steps that do not measure may run asynchronously (OpenCL
    /// enqueues them); timing from the host calls this before reading the clock. CPU backends are synchronous.
    /// </summary>
    void Synchronize() { }
}

/// <summary>A backend that cannot run here (missing instruction set, no OpenCL device, ...).</summary>
public sealed class BackendUnavailableException(string message) : Exception(message);

/// <summary>Training diverged: the loss or the weights stopped being finite.</summary>
public sealed class DivergenceException(string message) : Exception(message);

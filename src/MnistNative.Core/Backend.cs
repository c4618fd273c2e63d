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

/// <summary>A backend that cannot run here (missing instruction set, no OpenCL device, ...).</summary>
public sealed class BackendUnavailableException(string message) : Exception(message);

/// <summary>Training diverged: the loss or the weights stopped being finite.</summary>
public sealed class DivergenceException(string message) : Exception(message);

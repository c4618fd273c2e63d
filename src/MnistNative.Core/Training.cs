using System.Diagnostics;

namespace MnistNative.Core;

public sealed record TrainingOptions(int Iterations, double LearningRate, int LogEvery)
{
    public static TrainingOptions Seed { get; } = new(1000, 0.1, 50);
}

/// <summary>One logged iteration: accuracy and mean loss of that iteration's forward pass, before its update.</summary>
public sealed record LogEntry(int Iteration, double TrainAccuracy, double Loss);

public sealed record TrainingResult(IReadOnlyList<LogEntry> Log, MlpParameters Weights, TimeSpan TrainTime, int Iterations)
{
    public double MillisecondsPerIteration => Iterations == 0 ? 0 : TrainTime.TotalMilliseconds / Iterations;
}

/// <summary>Full-batch gradient descent, the seed's loop, on any backend.</summary>
public static class FullBatchTrainer
{
    /// <summary>
    /// A loss above this multiple of the run's first loss counts as divergence. A softmax over 10 classes starts
    /// near ln 10 = 2.3; a run at 10x that has lost all it learned and keeps oscillating (the seed at --lr 1000
    /// wanders between losses of 300 and 500 without ever reaching NaN).
    /// </summary>
    public const double DivergenceFactor = 10;

    /// <summary>
    /// Runs the loop. With a <paramref name="profiler"/>, a backend that can record its own phases does so;
    /// any other backend's steps are recorded whole as "step".
    /// </summary>
    /// <exception cref="DivergenceException">The loss of some iteration, the final loss or the final weights are
    /// not finite, or a loss is over <see cref="DivergenceFactor"/> times the first one.</exception>
    public static TrainingResult Run(IFullBatchBackend backend, TrainingOptions options, Action<LogEntry>? onLog = null, Profiler? profiler = null)
    {
        var profiled = backend as IProfiledBackend;
        if (profiled != null) profiled.Profiler = profiler;
        Profiler? stepProfiler = profiled == null ? profiler : null;
        TrainingResult result;
        try
        {
            result = RunLoop(backend, options, onLog, stepProfiler);
        }
        finally
        {
            if (profiled != null) profiled.Profiler = null;
        }
        if (result.Log.Count > 0)
        {
            // the last update is not covered by any step's loss: one more forward pass, outside the clock and the
            // profile, at the final weights (iteration 0, always logged, holds the first loss)
            StepMetrics final = backend.ComputeGradients(MlpParameters.ForHidden(result.Weights.Hidden));
            CheckLoss(final.Loss, result.Log[0].Loss, $"after iteration {options.Iterations - 1} (the final weights)",
                options.LearningRate);
        }
        return result;
    }

    /// <summary>Throws when <paramref name="loss"/> (a mean) shows divergence against the run's first loss.</summary>
    public static void CheckLoss(double loss, double firstLoss, string where, double learningRate)
    {
        if (!double.IsFinite(loss))
            throw new DivergenceException($"training diverged {where}: the loss is {loss} (learning rate " +
                $"{learningRate} is too high?)");
        if (loss > DivergenceFactor * firstLoss)
            throw new DivergenceException($"training diverged {where}: the loss {loss:G4} is over " +
                $"{DivergenceFactor}x its first value {firstLoss:G4} (learning rate {learningRate} is too high?)");
    }

    // Every step measures its forward pass: a diverged run is stopped at the step where its loss blows up, not at
    // the next logged one, which may be past the end of the run (--lr 1e6 --iterations 50 logs iteration 0 only).
    private static TrainingResult RunLoop(IFullBatchBackend backend, TrainingOptions options, Action<LogEntry>? onLog, Profiler? stepProfiler)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(options.Iterations);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.LogEvery, 1);
        var log = new List<LogEntry>(options.Iterations / options.LogEvery + 1);
        int hidden = backend.GetWeights().Hidden;
        int samples = 0;
        double firstLoss = double.NaN;
        var clock = Stopwatch.StartNew();
        long rateStart = clock.ElapsedTicks;
        int rateIterations = 0;
        for (int i = 0; i < options.Iterations; i++)
        {
            long t = Profiler.Now();
            StepMetrics m = backend.Step(options.LearningRate, measure: true);
            stepProfiler?.Record("step", t);
            samples = m.Count;
            EngineMetrics.Iterations.Add(1);
            EngineMetrics.SamplesTrained.Add(samples);
            rateIterations++;
            if (i == 0) firstLoss = m.Loss;
            CheckLoss(m.Loss, firstLoss, $"at iteration {i}", options.LearningRate);
            if (i % options.LogEvery != 0) continue;
            double seconds = (clock.ElapsedTicks - rateStart) / (double)Stopwatch.Frequency;
            if (seconds > 0) EngineMetrics.TrainingRate(rateIterations / seconds, rateIterations * FlopCount.TrainingStep(samples, hidden) / seconds / 1e9);
            rateStart = clock.ElapsedTicks;
            rateIterations = 0;
            var entry = new LogEntry(i, m.Accuracy, m.Loss);
            log.Add(entry);
            onLog?.Invoke(entry);
        }
        clock.Stop();
        MlpParameters weights = backend.GetWeights();
        if (!weights.AllFinite())
            throw new DivergenceException($"training diverged: the weights are not finite after {options.Iterations} iterations (learning rate {options.LearningRate} is too high?)");
        return new TrainingResult(log, weights, clock.Elapsed, options.Iterations);
    }
}

public static class Evaluation
{
    /// <summary>Index of the largest value; the first one on ties, as numpy's argmax.</summary>
    public static int ArgMax(ReadOnlySpan<double> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>Predicted class of every image through the backend's forward-only path.</summary>
    public static int[] Predict(IFullBatchBackend backend, ReadOnlySpan<byte> images, int count)
    {
        const int chunk = 2048;
        long start = Stopwatch.GetTimestamp();
        var predictions = new int[count];
        var probs = new double[Math.Min(chunk, Math.Max(count, 1)) * MlpParameters.Classes];
        for (int begin = 0; begin < count; begin += chunk)
        {
            int n = Math.Min(chunk, count - begin);
            Span<double> p = probs.AsSpan(0, n * MlpParameters.Classes);
            backend.Predict(images.Slice(begin * LabeledImages.PixelsPerImage, n * LabeledImages.PixelsPerImage), p);
            for (int i = 0; i < n; i++)
                predictions[begin + i] = ArgMax(p.Slice(i * MlpParameters.Classes, MlpParameters.Classes));
        }
        EngineMetrics.SamplesInferred.Add(count);
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        if (seconds > 0) EngineMetrics.InferenceRate(count / seconds);
        return predictions;
    }

    /// <summary>confusion[true, predicted] counts.</summary>
    public static int[,] ConfusionMatrix(ReadOnlySpan<int> predictions, ReadOnlySpan<byte> labels)
    {
        var m = new int[MlpParameters.Classes, MlpParameters.Classes];
        for (int i = 0; i < labels.Length; i++) m[labels[i], predictions[i]]++;
        return m;
    }

    public static double Accuracy(ReadOnlySpan<int> predictions, ReadOnlySpan<byte> labels)
    {
        int correct = 0;
        for (int i = 0; i < labels.Length; i++) if (predictions[i] == labels[i]) correct++;
        return labels.Length == 0 ? 0 : (double)correct / labels.Length;
    }
}

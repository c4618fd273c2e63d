using System.Diagnostics;

namespace MnistNative.Core;

/// <summary>
/// How to run mini-batch training. Exactly one of <see cref="Epochs"/> and <see cref="Iterations"/> bounds the
/// run: with Iterations set, the run stops after that many steps (possibly mid-epoch). A batch as large as the
/// training set is full-batch gradient descent in the samples' own order (no shuffle), the seed's loop.
/// </summary>
public sealed record MiniBatchOptions(int BatchSize, int Epochs, long? Iterations, uint ShuffleSeed, LearningRateSchedule Schedule)
{
    public long StepsPerEpoch(int trainCount) => (trainCount + BatchSize - 1) / BatchSize;

    public long TotalSteps(int trainCount) => Iterations ?? Epochs * StepsPerEpoch(trainCount);
}

/// <summary>One finished (or, at the end of an --iterations run, partial) epoch.</summary>
public sealed record EpochEntry(int Epoch, long Step, double TrainLoss, double TrainAccuracy, double ValidationAccuracy, double TrainSeconds);

/// <summary>
/// Everything a run needs to continue exactly where it stopped: weights, optimizer state, where in which epoch
/// it was (the epoch's permutation is recomputed from the seed), the partial sums of the epoch's metrics,
/// the epochs logged so far, and the training time spent. <see cref="RunKey"/> names the settings that must
/// match for a resume to be exact (sizes, batch, seed, optimizer, data).
/// </summary>
public sealed class TrainingCheckpoint
{
    public required MlpParameters Weights { get; init; }
    public required OptimizerState Optimizer { get; init; }
    public required int Epoch { get; init; }
    public required long BatchInEpoch { get; init; }
    public required long Step { get; init; }
    public required double EpochLossSum { get; init; }
    public required long EpochCorrect { get; init; }
    public required long EpochCount { get; init; }
    public required double TrainSeconds { get; init; }
    public required IReadOnlyList<EpochEntry> History { get; init; }
    public required string RunKey { get; init; }

    /// <summary>The loss of the run's first step, the reference of the divergence check (NaN: not recorded).</summary>
    public double FirstLoss { get; init; } = double.NaN;

    /// <summary>
    /// Null when the weights and every optimizer moment are finite, else the first array that is not.
    /// </summary>
    public string? FirstNonFinite()
    {
        if (!Weights.AllFinite()) return "the weights";
        for (int k = 0; k < Optimizer.Moments.Length; k++)
            if (!Optimizer.Moments[k].AllFinite()) return $"optimizer moment {k}";
        return double.IsFinite(EpochLossSum) ? null : "the epoch's loss sum";
    }
}

public sealed record MiniBatchResult(IReadOnlyList<EpochEntry> Epochs, MlpParameters Weights, TimeSpan TrainTime, long Steps, bool Cancelled);

/// <summary>Callbacks and hooks of a mini-batch run; every one is optional.</summary>
public sealed record MiniBatchHooks
{
    /// <summary>Called after each epoch (outside the training clock).</summary>
    public Action<EpochEntry>? OnEpoch { get; init; }

    /// <summary>Called after each step: (epoch, batch in epoch, batches per epoch, running epoch loss, running epoch accuracy). Keep it cheap.</summary>
    public Action<int, long, long, double, double>? OnStep { get; init; }

    /// <summary>Saves a checkpoint (after each epoch and when cancelled); outside the training clock.</summary>
    public Action<TrainingCheckpoint>? SaveCheckpoint { get; init; }

    /// <summary>Start from this checkpoint instead of the backend's current weights.</summary>
    public TrainingCheckpoint? Resume { get; init; }

    /// <summary>Held-out images whose accuracy is logged per epoch (outside the training clock).</summary>
    public LabeledImages? Validation { get; init; }

    /// <summary>Identifies the run's settings in checkpoints; a resume with another key is refused.</summary>
    public string RunKey { get; init; } = "";

    public CancellationToken Cancellation { get; init; }
}

/// <summary>Mini-batch training with seeded per-epoch shuffling, on any <see cref="IMiniBatchBackend"/>.</summary>
public static class MiniBatchTrainer
{
    /// <summary>
    /// The permutation of epoch <paramref name="epoch"/>: a Fisher-Yates shuffle of 0..n-1 driven by SplitMix64
    /// seeded from (seed, epoch), so any epoch's order is known without replaying the earlier ones (resume)
    /// and does not depend on System.Random's implementation.
    /// </summary>
    public static void Permutation(uint seed, int epoch, Span<int> order)
    {
        for (int i = 0; i < order.Length; i++) order[i] = i;
        ulong state = ((ulong)seed << 32) ^ (ulong)(uint)epoch ^ 0x9E3779B97F4A7C15UL;
        for (int i = order.Length - 1; i > 0; i--)
        {
            state += 0x9E3779B97F4A7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            int j = (int)(z % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
    }

    /// <summary>
    /// Batch losses are smoothed over about this many samples before the 10x divergence check: one batch of a few
    /// samples can be confidently wrong (a loss of 20 or more) in a run that is fine, a diverged run's losses are
    /// in the hundreds or not finite. NaN and Inf are refused at the step where they appear.
    /// </summary>
    public const int DivergenceWindowSamples = 1024;

    /// <summary>
    /// Runs the steps. Every step's loss is checked (see <see cref="DivergenceWindowSamples"/>) and a checkpoint is
    /// handed to <see cref="MiniBatchHooks.SaveCheckpoint"/> only when its weights and optimizer state are finite,
    /// so a diverged run throws <see cref="DivergenceException"/> and leaves the previous checkpoint in place.
    /// </summary>
    public static MiniBatchResult Run(IMiniBatchBackend backend, int trainCount, MiniBatchOptions options, MiniBatchHooks? hooks = null)
    {
        hooks ??= new MiniBatchHooks();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BatchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(trainCount, 1);
        int batch = Math.Min(options.BatchSize, trainCount);
        if (batch > backend.MaxBatch) throw new ArgumentException($"batch {batch} is over the backend's maximum {backend.MaxBatch}");
        bool shuffle = batch < trainCount;
        long perEpoch = (trainCount + batch - 1) / batch;
        long total = options.Iterations ?? options.Epochs * perEpoch;

        var history = new List<EpochEntry>();
        int epoch = 0;
        long batchInEpoch = 0, step = 0, correct = 0, count = 0;
        double lossSum = 0, seconds = 0, firstLoss = double.NaN;
        if (hooks.Resume is { } r)
        {
            if (r.RunKey != hooks.RunKey)
                throw new ArgumentException($"--resume: the checkpoint was written by a run with other settings ({r.RunKey}; this run: {hooks.RunKey})");
            backend.SetWeights(r.Weights);
            backend.SetOptimizerState(r.Optimizer);
            (epoch, batchInEpoch, step, lossSum, correct, count, seconds) = (r.Epoch, r.BatchInEpoch, r.Step, r.EpochLossSum, r.EpochCorrect, r.EpochCount, r.TrainSeconds);
            history.AddRange(r.History);
            firstLoss = double.IsFinite(r.FirstLoss) ? r.FirstLoss : history.Count > 0
                ? history[0].TrainLoss : double.NaN;
        }
        double smoothing = Math.Min(1.0, (double)batch / DivergenceWindowSamples), smoothedLoss = firstLoss;

        TrainingCheckpoint Snapshot() => new()
        {
            Weights = backend.GetWeights(), Optimizer = backend.GetOptimizerState(), Epoch = epoch, BatchInEpoch = batchInEpoch, Step = step,
            EpochLossSum = lossSum, EpochCorrect = correct, EpochCount = count, TrainSeconds = seconds, History = history.ToArray(), RunKey = hooks.RunKey,
            FirstLoss = firstLoss,
        };

        void Save()
        {
            if (hooks.SaveCheckpoint == null) return;
            TrainingCheckpoint c = Snapshot();
            if (c.FirstNonFinite() is string bad)
                throw new DivergenceException($"training diverged at step {step}: {bad} are not finite; the last " +
                    $"checkpoint was kept");
            hooks.SaveCheckpoint(c);
        }

        var order = new int[trainCount];
        int orderEpoch = -1;
        var clock = new Stopwatch();
        bool cancelled = false;
        while (step < total)
        {
            if (hooks.Cancellation.IsCancellationRequested) { cancelled = true; break; }
            if (orderEpoch != epoch)
            {
                if (shuffle) Permutation(options.ShuffleSeed, epoch, order);
                else for (int i = 0; i < trainCount; i++) order[i] = i;
                orderEpoch = epoch;
            }
            int start = (int)(batchInEpoch * batch);
            int n = Math.Min(batch, trainCount - start);
            clock.Restart();
            StepMetrics m = backend.StepBatch(order.AsSpan(start, n), options.Schedule.Rate(step), measure: true);
            clock.Stop();
            seconds += clock.Elapsed.TotalSeconds;
            EngineMetrics.Iterations.Add(1);
            EngineMetrics.SamplesTrained.Add(n);
            if (double.IsNaN(firstLoss)) smoothedLoss = firstLoss = m.Loss;
            smoothedLoss += smoothing * (m.Loss - smoothedLoss);
            if (!double.IsFinite(m.LossSum)) smoothedLoss = m.Loss;
            FullBatchTrainer.CheckLoss(smoothedLoss, firstLoss, $"at step {step} (epoch {epoch + 1})",
                options.Schedule.BaseRate);
            lossSum += m.LossSum;
            correct += m.Correct;
            count += m.Count;
            step++;
            batchInEpoch++;
            hooks.OnStep?.Invoke(epoch, batchInEpoch, perEpoch, lossSum / count, (double)correct / count);
            bool epochDone = batchInEpoch == perEpoch;
            if (epochDone || step == total)
            {
                double validation = double.NaN;
                if (hooks.Validation is { Count: > 0 } v)
                    validation = Evaluation.Accuracy(Predict(backend, v.Pixels, v.Count), v.Labels);
                var entry = new EpochEntry(epoch + 1, step, lossSum / count, (double)correct / count, validation, seconds);
                if (history.Count > 0 && entry.TrainLoss > FullBatchTrainer.DivergenceFactor * history[0].TrainLoss)
                    throw new DivergenceException($"training diverged in epoch {epoch + 1}: the loss {entry.TrainLoss:G4} is over {FullBatchTrainer.DivergenceFactor}x its first value {history[0].TrainLoss:G4}");
                history.Add(entry);
                if (epochDone)
                {
                    epoch++;
                    batchInEpoch = 0;
                    lossSum = 0;
                    correct = count = 0;
                }
                hooks.OnEpoch?.Invoke(entry);
                if (epochDone) Save();
            }
        }
        MlpParameters weights = backend.GetWeights();
        if (!weights.AllFinite()) throw new DivergenceException($"training diverged: the weights are not finite after {step} steps");
        if (cancelled) Save();
        return new MiniBatchResult(history, weights, TimeSpan.FromSeconds(seconds), step, cancelled);
    }

    /// <summary>Predicted class of every image through the backend's forward-only path.</summary>
    public static int[] Predict(IMiniBatchBackend backend, ReadOnlySpan<byte> images, int count)
    {
        int chunk = Math.Max(1, Math.Min(backend.MaxBatch, 1024));
        var predictions = new int[count];
        var probs = new double[Math.Min(chunk, Math.Max(count, 1)) * MlpParameters.Classes];
        for (int start = 0; start < count; start += chunk)
        {
            int n = Math.Min(chunk, count - start);
            Span<double> p = probs.AsSpan(0, n * MlpParameters.Classes);
            backend.Predict(images.Slice(start * LabeledImages.PixelsPerImage, n * LabeledImages.PixelsPerImage), p);
            for (int i = 0; i < n; i++) predictions[start + i] = Evaluation.ArgMax(p.Slice(i * MlpParameters.Classes, MlpParameters.Classes));
        }
        return predictions;
    }
}

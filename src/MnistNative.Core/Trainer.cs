using System.Diagnostics;

namespace MnistNative.Core;

/// <summary>
/// How to run training. Exactly one of <see cref="Epochs"/> and <see cref="Iterations"/> bounds the run: with
/// Iterations set, the run stops after that many steps (possibly mid-epoch). A batch at least as large as the
/// training set is full-batch gradient descent over the whole set in its own order (no shuffle), the seed's loop;
/// smaller batches visit a seeded permutation per epoch. Every <see cref="LogEvery"/> steps (0: never) the
/// metrics of that step's forward pass, measured before its update, go to <see cref="TrainingHooks.OnLog"/>.
/// </summary>
public sealed record TrainingOptions(int BatchSize, int Epochs, long? Iterations, uint ShuffleSeed,
    LearningRateSchedule Schedule, int LogEvery = 0)
{
    /// <summary>The seed notebook's run: 1000 full-batch iterations at 0.1, logged every 50.</summary>
    public static TrainingOptions Seed { get; } = FullBatch(1000, 0.1, 50);

    public static TrainingOptions FullBatch(long iterations, double learningRate, int logEvery) =>
        new(int.MaxValue, 0, iterations, 0, LearningRateSchedule.Constant(learningRate), logEvery);

    /// <summary>Samples per step for a training set of <paramref name="trainCount"/>.</summary>
    public int Batch(int trainCount) => Math.Min(BatchSize, trainCount);

    public bool IsFullBatch(int trainCount) => BatchSize >= trainCount;

    public long StepsPerEpoch(int trainCount) => (trainCount + Batch(trainCount) - 1) / Batch(trainCount);

    public long TotalSteps(int trainCount) => Iterations ?? Epochs * StepsPerEpoch(trainCount);
}

/// <summary>One logged step: accuracy and mean loss of that step's forward pass, before its update.</summary>
public sealed record LogEntry(long Iteration, double TrainAccuracy, double Loss);

/// <summary>One finished (or, at the end of an --iterations run, partial) epoch.</summary>
public sealed record EpochEntry(int Epoch, long Step, double TrainLoss, double TrainAccuracy, double ValidationAccuracy,
    double TrainSeconds);

public sealed record TrainingResult(IReadOnlyList<LogEntry> Log, IReadOnlyList<EpochEntry> Epochs,
    MlpParameters Weights, TimeSpan TrainTime, long Steps, bool Cancelled)
{
    /// <summary>Steps run by this call (a resumed run counts only its own).</summary>
    public long StepsRun { get; init; } = Steps;

    public double MillisecondsPerStep => StepsRun == 0 ? 0 : TrainTime.TotalMilliseconds / StepsRun;
}

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

/// <summary>Callbacks and hooks of a run; every one is optional.</summary>
public sealed record TrainingHooks
{
    /// <summary>Called every <see cref="TrainingOptions.LogEvery"/> steps (outside nothing: keep it cheap).</summary>
    public Action<LogEntry>? OnLog { get; init; }

    /// <summary>Called after each epoch (outside the training clock).</summary>
    public Action<EpochEntry>? OnEpoch { get; init; }

    /// <summary>Called after each step: (epoch, batch in epoch, batches per epoch, running epoch loss, running
    /// epoch accuracy). Keep it cheap.</summary>
    public Action<int, long, long, double, double>? OnStep { get; init; }

    /// <summary>Saves a checkpoint (after each epoch and when cancelled); outside the training clock.</summary>
    public Action<TrainingCheckpoint>? SaveCheckpoint { get; init; }

    /// <summary>Start from this checkpoint instead of the backend's current weights.</summary>
    public TrainingCheckpoint? Resume { get; init; }

    /// <summary>Held-out images whose accuracy is logged per epoch (outside the training clock).</summary>
    public LabeledImages? Validation { get; init; }

    /// <summary>Identifies the run's settings in checkpoints; a resume with another key is refused.</summary>
    public string RunKey { get; init; } = "";

    /// <summary>Attached to the backend for the run; it records its phases there.</summary>
    public Profiler? Profiler { get; init; }

    public CancellationToken Cancellation { get; init; }
}

/// <summary>
/// The one training loop, on any <see cref="ITrainingBackend"/>: full-batch gradient descent (the seed's) and
/// mini-batch training with seeded per-epoch shuffling, one divergence rule, checkpoints, progress and profiling.
/// </summary>
public static class Trainer
{
    /// <summary>
    /// A loss above this multiple of the run's first loss counts as divergence. A softmax over 10 classes starts
    /// near ln 10 = 2.3; a run at 10x that has lost all it learned and keeps oscillating (the seed at --lr 1000
    /// wanders between losses of 300 and 500 without ever reaching NaN).
    /// </summary>
    public const double DivergenceFactor = 10;

    /// <summary>
    /// Batch losses are smoothed over about this many samples before the divergence check: one batch of a few
    /// samples can be confidently wrong (a loss of 20 or more) in a run that is fine, a diverged run's losses are
    /// in the hundreds or not finite. A batch of this size or more is checked on its own loss; NaN and Inf are
    /// refused at the step where they appear.
    /// </summary>
    public const int DivergenceWindowSamples = 1024;

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

    /// <summary>
    /// Runs the steps on the <paramref name="trainCount"/> uploaded samples. Every step's loss is checked (see
    /// <see cref="DivergenceWindowSamples"/>), then the final weights and the loss of one more forward pass over the
    /// last batch at those weights; a checkpoint is handed to <see cref="TrainingHooks.SaveCheckpoint"/> only when
    /// its weights and optimizer state are finite, so a diverged run throws <see cref="DivergenceException"/> and
    /// leaves the previous checkpoint in place.
    /// </summary>
    public static TrainingResult Run(ITrainingBackend backend, int trainCount, TrainingOptions options,
        TrainingHooks? hooks = null)
    {
        hooks ??= new TrainingHooks();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BatchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(trainCount, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(options.LogEvery);
        backend.Profiler = hooks.Profiler;
        try
        {
            return new Loop(backend, trainCount, options, hooks).Run();
        }
        finally
        {
            backend.Profiler = null;
        }
    }

    /// <summary>The state of one run: where it is, its sums, its log.</summary>
    private sealed class Loop(ITrainingBackend backend, int trainCount, TrainingOptions options, TrainingHooks hooks)
    {
        private readonly int _batch = options.Batch(trainCount);
        private readonly bool _wholeSet = options.IsFullBatch(trainCount);
        private readonly List<LogEntry> _log = [];
        private readonly List<EpochEntry> _history = [];
        private int _epoch;
        private long _batchInEpoch, _step, _correct, _count;
        private double _lossSum, _seconds, _firstLoss = double.NaN;

        public TrainingResult Run()
        {
            if (_batch > backend.MaxBatch)
                throw new ArgumentException($"batch {_batch} is over the backend's maximum {backend.MaxBatch}");
            long perEpoch = options.StepsPerEpoch(trainCount);
            long total = options.TotalSteps(trainCount);
            long firstStep = 0;
            if (hooks.Resume is { } r)
            {
                Restore(r);
                firstStep = _step;
            }
            double smoothing = Math.Min(1.0, (double)_batch / DivergenceWindowSamples), smoothedLoss = _firstLoss;
            int[] order = _wholeSet ? [] : new int[trainCount];
            int orderEpoch = -1, lastStart = 0, lastCount = 0;
            long rateStart = Stopwatch.GetTimestamp(), rateSteps = 0;
            double flopsPerSample = FlopCount.TrainingStep(1, backend.Sizes);
            bool cancelled = false;
            while (_step < total)
            {
                if (hooks.Cancellation.IsCancellationRequested) { cancelled = true; break; }
                if (!_wholeSet && orderEpoch != _epoch)
                {
                    if (_batch < trainCount) Permutation(options.ShuffleSeed, _epoch, order);
                    orderEpoch = _epoch;
                }
                int start = (int)(_batchInEpoch * _batch);
                int n = Math.Min(_batch, trainCount - start);
                TrainingBatch batch = _wholeSet ? TrainingBatch.WholeSet : TrainingBatch.Of(order.AsSpan(start, n));
                double rate = options.Schedule.Rate(_step);
                long t0 = Stopwatch.GetTimestamp();
                StepMetrics m = backend.Step(batch, rate, measure: true);
                _seconds += Stopwatch.GetElapsedTime(t0).TotalSeconds;
                (lastStart, lastCount) = (start, n);
                EngineMetrics.Iterations.Add(1);
                EngineMetrics.SamplesTrained.Add(n);
                if (double.IsNaN(_firstLoss)) smoothedLoss = _firstLoss = m.Loss;
                smoothedLoss += smoothing * (m.Loss - smoothedLoss);
                if (!double.IsFinite(m.LossSum)) smoothedLoss = m.Loss;
                CheckLoss(smoothedLoss, _firstLoss,
                    _wholeSet ? $"at iteration {_step}" : $"at step {_step} (epoch {_epoch + 1})",
                    options.Schedule.BaseRate);
                _lossSum += m.LossSum;
                _correct += m.Correct;
                _count += m.Count;
                rateSteps++;
                if (options.LogEvery > 0 && _step % options.LogEvery == 0)
                {
                    double seconds = Stopwatch.GetElapsedTime(rateStart).TotalSeconds;
                    if (seconds > 0)
                        EngineMetrics.TrainingRate(rateSteps / seconds, rateSteps * n * flopsPerSample / seconds / 1e9);
                    (rateStart, rateSteps) = (Stopwatch.GetTimestamp(), 0);
                    var entry = new LogEntry(_step, m.Accuracy, m.Loss);
                    _log.Add(entry);
                    hooks.OnLog?.Invoke(entry);
                }
                _step++;
                _batchInEpoch++;
                hooks.OnStep?.Invoke(_epoch, _batchInEpoch, perEpoch, _lossSum / _count, (double)_correct / _count);
                bool epochDone = _batchInEpoch == perEpoch;
                if (epochDone || _step == total) EndEpoch(epochDone);
            }
            MlpParameters weights = backend.GetWeights();
            if (!weights.AllFinite())
                throw new DivergenceException($"training diverged: the weights are not finite after {_step} steps " +
                    $"(learning rate {options.Schedule.BaseRate} is too high?)");
            if (!cancelled && _step > firstStep) CheckFinalLoss(order.AsSpan(lastStart, _wholeSet ? 0 : lastCount));
            if (cancelled) Save();
            return new TrainingResult(_log, _history, weights, TimeSpan.FromSeconds(_seconds), _step, cancelled)
            {
                StepsRun = _step - firstStep,
            };
        }

        // The last update is not covered by any step's loss: one more forward pass over the last batch at the final
        // weights, outside the clock (the profiler is detached for it, so the profile shows the run's steps only).
        private void CheckFinalLoss(ReadOnlySpan<int> lastBatch)
        {
            Profiler? profiler = backend.Profiler;
            backend.Profiler = null;
            try
            {
                TrainingBatch batch = _wholeSet ? TrainingBatch.WholeSet : TrainingBatch.Of(lastBatch);
                StepMetrics final = backend.ComputeGradients(batch, new MlpParameters(backend.Sizes));
                CheckLoss(final.Loss, _firstLoss, $"after step {_step - 1} (the final weights)",
                    options.Schedule.BaseRate);
            }
            finally
            {
                backend.Profiler = profiler;
            }
        }

        private void EndEpoch(bool epochDone)
        {
            double validation = double.NaN;
            if (hooks.Validation is { Count: > 0 } v)
                validation = Evaluation.Accuracy(Evaluation.Predict(backend, v.Pixels, v.Count), v.Labels);
            var entry = new EpochEntry(_epoch + 1, _step, _lossSum / _count, (double)_correct / _count, validation,
                _seconds);
            if (_history.Count > 0 && entry.TrainLoss > DivergenceFactor * _history[0].TrainLoss)
                throw new DivergenceException($"training diverged in epoch {_epoch + 1}: " +
                    $"the loss {entry.TrainLoss:G4} is over {DivergenceFactor}x its first value " +
                    $"{_history[0].TrainLoss:G4}");
            _history.Add(entry);
            if (epochDone)
            {
                _epoch++;
                _batchInEpoch = 0;
                _lossSum = 0;
                _correct = _count = 0;
            }
            hooks.OnEpoch?.Invoke(entry);
            if (epochDone) Save();
        }

        private void Restore(TrainingCheckpoint r)
        {
            if (r.RunKey != hooks.RunKey)
                throw new ArgumentException($"--resume: the checkpoint was written by a run with other settings " +
                    $"({r.RunKey}; this run: {hooks.RunKey})");
            backend.SetWeights(r.Weights);
            backend.SetOptimizerState(r.Optimizer);
            (_epoch, _batchInEpoch, _step, _lossSum, _correct, _count, _seconds) =
                (r.Epoch, r.BatchInEpoch, r.Step, r.EpochLossSum, r.EpochCorrect, r.EpochCount, r.TrainSeconds);
            _history.AddRange(r.History);
            _firstLoss = double.IsFinite(r.FirstLoss) ? r.FirstLoss
                : _history.Count > 0 ? _history[0].TrainLoss : double.NaN;
        }

        private void Save()
        {
            if (hooks.SaveCheckpoint == null) return;
            TrainingCheckpoint c = new()
            {
                Weights = backend.GetWeights(), Optimizer = backend.GetOptimizerState(), Epoch = _epoch,
                BatchInEpoch = _batchInEpoch, Step = _step, EpochLossSum = _lossSum, EpochCorrect = _correct,
                EpochCount = _count, TrainSeconds = _seconds, History = _history.ToArray(), RunKey = hooks.RunKey,
                FirstLoss = _firstLoss,
            };
            if (c.FirstNonFinite() is string bad)
                throw new DivergenceException($"training diverged at step {_step}: {bad} are not finite; the last " +
                    $"checkpoint was kept");
            hooks.SaveCheckpoint(c);
        }
    }
}

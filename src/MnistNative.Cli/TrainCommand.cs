using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.Json;
using MnistNative.Backends;
using MnistNative.Core;
using MnistNative.Data;
using Spectre.Console;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command TrainCommand()
    {
        var o = new TrainOptions();
        var command = new Command("train",
            "Train the MLP and save it: by default full-batch gradient descent exactly " +
            "as the seed notebook; mini-batches, optimizers and deeper nets with --batch-size, --optimizer, " +
            "--hidden 256,128 or --preset fast98. Every run goes through the same backends and trainer.");
        foreach (Option option in o.All) command.Options.Add(option);
        command.SetAction(parse => Guard(() => RunTrain(parse, o)));
        return command;
    }

    internal static Option<int[]> HiddenOption() => new("--hidden")
    {
        Description = "Hidden units H of the 784-H-10 MLP, or a comma list for a deeper MLP " +
            "(--hidden 256,128 is 784-256-128-10).",
        HelpName = "H[,H2...]",
        DefaultValueFactory = _ => [10],
        CustomParser = r =>
        {
            string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
            var widths = new List<int>();
            foreach (string part in text.Split(','))
            {
                if (!int.TryParse(part.Trim(), out int v))
                {
                    r.AddError($"Cannot parse argument '{text}' for option '--hidden': " +
                        "expected a width or a comma list of widths such as 256,128");
                    return [];
                }
                if (v < 1 || v > 4096)
                {
                    r.AddError($"--hidden must be between 1 and 4096, got {v}");
                    return [];
                }
                widths.Add(v);
            }
            return [.. widths];
        },
    };

    /// <summary>The settings of one `train` run, read from the flags (and the preset) and checked.</summary>
    private sealed record TrainPlan(int[] Sizes, int TrainCount, int ValidationCount, int Batch, int? Epochs,
        OptimizerSettings Optimizer, string OptimizerName, double Lr, string ScheduleName, int Warmup, string? Preset,
        MlpParameters? InitialWeights, string? CheckpointDir, bool Resume, string? PlotPath)
    {
        public int Fit => TrainCount - ValidationCount;
        public bool FullBatch => Batch >= Fit;
        public string Shape => string.Join('-', Sizes);
    }

    private static TrainPlan ReadPlan(ParseResult parse, TrainOptions o)
    {
        bool Given(Option option) => parse.GetResult(option) is { Implicit: false };
        string? preset = parse.GetValue(o.Preset);
        bool fast = preset == "fast98";
        int[] hidden = Given(o.Hidden) || !fast ? parse.GetValue(o.Hidden)! : Fast98.Hidden;
        if (hidden.Length > 8) throw new ArgumentException($"--hidden: at most 8 hidden layers, got {hidden.Length}");
        int[] sizes = [MlpParameters.InputSize, .. hidden, MlpParameters.Classes];
        MlpParameters? initial = null;
        if (parse.GetValue(o.Init) is FileInfo initFile)
        {
            initial = Onnx.ModelInput.Load(initFile.FullName);
            if (Given(o.Hidden) && !initial.Sizes.AsSpan().SequenceEqual(sizes))
                throw new ArgumentException(initial.LayerCount == 2 && sizes.Length == 3
                    ? $"--hidden {hidden[0]} does not match --init-weights {initFile.Name}, " +
                      $"which has {initial.Hidden} hidden units"
                    : $"--hidden {string.Join(',', hidden)} does not match --init-weights {initFile.Name}, which is " +
                      string.Join('-', initial.Sizes));
            sizes = initial.Sizes;
        }
        int trainCount = Given(o.TrainCount) || !fast ? parse.GetValue(o.TrainCount) : 60_000;
        int validationCount = parse.GetValue(o.ValidationCount);
        if (validationCount < 0 || validationCount >= trainCount)
            throw new ArgumentException("--validation-count must be between 0 and --train-count - 1 " +
                $"({trainCount - 1}), got {validationCount}");
        int? batchOption = Given(o.BatchSize) ? parse.GetValue(o.BatchSize) : fast ? Fast98.BatchSize : null;
        if (batchOption is < 1) throw new ArgumentException($"--batch-size must be at least 1, got {batchOption}");
        int fit = trainCount - validationCount;
        int batch = Math.Min(batchOption ?? fit, fit);
        int? epochs = Given(o.Epochs) ? parse.GetValue(o.Epochs) : fast && !Given(o.Iterations) ? Fast98.Epochs : null;
        if (epochs is < 1 or > 100_000)
            throw new ArgumentException($"--epochs must be between 1 and 100000, got {epochs}");
        if (epochs != null && Given(o.Iterations))
            throw new ArgumentException("give --epochs or --iterations, not both");
        string optimizerName = parse.GetValue(o.Optimizer) ?? (fast ? Fast98.Optimizer : "gd");
        var kind = optimizerName switch
        {
            "momentum" => OptimizerKind.Momentum,
            "adam" => OptimizerKind.Adam,
            _ => OptimizerKind.Gd,
        };
        if (kind != OptimizerKind.Momentum && Given(o.Momentum))
            throw new ArgumentException("--momentum goes with --optimizer momentum");
        if (kind != OptimizerKind.Adam && (Given(o.Beta1) || Given(o.Beta2) || Given(o.Epsilon)))
            throw new ArgumentException("--beta1, --beta2 and --epsilon go with --optimizer adam");
        var optimizer = new OptimizerSettings(kind, parse.GetValue(o.Momentum) ?? 0.9, parse.GetValue(o.Beta1) ?? 0.9,
            parse.GetValue(o.Beta2) ?? 0.999, parse.GetValue(o.Epsilon) ?? 1e-8, parse.GetValue(o.WeightDecay) ?? 0);
        optimizer.Validate();
        double lr = Given(o.Lr) || !fast ? parse.GetValue(o.Lr) : Fast98.LearningRate;
        string scheduleName = parse.GetValue(o.Schedule) ?? (fast ? Fast98.Schedule : "constant");
        int warmup = parse.GetValue(o.Warmup) ?? (fast ? Fast98.Warmup : 0);
        if (warmup < 0) throw new ArgumentException($"--warmup must be zero or more steps, got {warmup}");
        string? checkpointDir = parse.GetValue(o.Checkpoint);
        bool resume = parse.GetValue(o.Resume);
        if (resume && checkpointDir == null)
            throw new ArgumentException("--resume needs --checkpoint DIR (where the checkpoint is)");
        if (resume && initial != null)
            throw new ArgumentException(
                "give --init-weights or --resume, not both (a resumed run starts from its checkpoint)");
        string? plotPath = parse.GetValue(o.Plot);
        if (plotPath != null && !plotPath.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"--plot {plotPath}: the file name must end in .png");
        return new TrainPlan(sizes, trainCount, validationCount, batch, epochs, optimizer, optimizerName, lr,
            scheduleName, warmup, preset, initial, checkpointDir, resume, plotPath);
    }

    private int RunTrain(ParseResult parse, TrainOptions o)
    {
        bool asJson = parse.GetValue(o.Json);
        TextWriter human = asJson ? Err : Out;
        bool epochOutput = o.EpochOutput(parse);
        TrainPlan plan = ReadPlan(parse, o);
        string backendName = parse.GetValue(o.Backend)!;
        if (backendName is not ("opencl" or "auto") &&
            (parse.GetValue(o.Device) ?? parse.GetValue(o.Kernels) ?? parse.GetValue(o.Variant)) != null)
            throw new ArgumentException(
                $"--device, --kernels and --opencl-variant go with --backend opencl, not {backendName}");
        string? tracePath = parse.GetValue(o.Trace);
        bool profiling = parse.GetValue(o.Profile) || tracePath != null;
        var request = new BackendRequest(backendName, ParsePrecision(parse.GetValue(o.Precision)!), plan.Sizes,
            plan.Optimizer, plan.Batch)
        {
            Threads = parse.GetResult(o.Threads) is { Implicit: false } ? parse.GetValue(o.Threads) : null,
            Device = parse.GetValue(o.Device),
            KernelsDirectory = parse.GetValue(o.Kernels),
            OpenClVariant = parse.GetValue(o.Variant),
            Profiling = profiling,
            Kernel = BackendCatalog.ParseKernel(parse.GetValue(o.Kernel)!),
        };

        if (request.Kernel != KernelMode.Auto && !(plan.FullBatch && plan.Sizes.Length == 3
                && plan.Optimizer is { Kind: OptimizerKind.Gd, WeightDecay: 0 }))
            throw new ArgumentException($"--kernel {parse.GetValue(o.Kernel)}: the layer-1 kernel choice is for " +
                "full-batch gradient descent on 784-H-10 (the fused path); this run takes the per-layer path, " +
                "which always skips zero pixels");

        var (created, validation, test) = CreateAndUpload(
            () => BackendCatalog.Create(request, line => Err.WriteLine(line)),
            parse.GetValue(o.Data), plan.TrainCount, plan.Fit);
        using ITrainingBackend engine = created;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        string kernelLine = BackendCatalog.DescribeKernel(engine);
        Err.WriteLine(kernelLine);

        uint seed = parse.GetValue(o.Seed);
        var options = new TrainingOptions(plan.Batch, plan.Epochs ?? 0,
            plan.Epochs == null ? parse.GetValue(o.Iterations) : null,
            seed, LearningRateSchedule.Constant(plan.Lr), epochOutput ? 0 : parse.GetValue(o.LogEvery));
        var scheduleKind = plan.ScheduleName switch
        {
            "step" => ScheduleKind.Step,
            "cosine" => ScheduleKind.Cosine,
            _ => ScheduleKind.Constant,
        };
        options = options with
        {
            Schedule = new LearningRateSchedule(scheduleKind, plan.Lr, options.TotalSteps(plan.Fit), plan.Warmup),
        };
        engine.SetWeights(plan.InitialWeights ?? MlpParameters.Initialize(plan.Sizes, seed));
        BackendInfo info = engine.Info;
        string scheduleKey = scheduleKind == ScheduleKind.Constant && plan.Warmup == 0
            ? $"constant {plan.Lr}" : options.Schedule.ToString();
        string runKey = $"{plan.Shape}|batch {plan.Batch}|seed {seed}|{plan.Optimizer}|{scheduleKey}|" +
            $"train {plan.Fit}|validation {plan.ValidationCount}|{info.Name} {info.Precision}";
        TrainingCheckpoint? resumeFrom = plan.Resume ? CheckpointFile.Load(plan.CheckpointDir!) : null;
        string where = $"backend {info.Name} ({info.Precision.ToString().ToLowerInvariant()}, {info.Threads} " +
            $"thread{(info.Threads == 1 ? "" : "s")}, {info.Device})";
        if (epochOutput)
        {
            string length = options.Iterations is long it ? $"{it} steps" : $"{options.Epochs} epochs";
            human.WriteLine($"Training {plan.Shape} on {plan.Fit} images" +
                $"{(validation != null ? $" ({validation.Count} held out for validation)" : "")}: " +
                $"{length} of batch {plan.Batch}, " +
                $"{plan.OptimizerName} lr {plan.Lr} {plan.ScheduleName}" +
                $"{(plan.Warmup > 0 ? $" warm-up {plan.Warmup}" : "")}" +
                $"{(plan.Preset != null ? $" (preset {plan.Preset})" : "")}, {where}");
        }
        else
            human.WriteLine($"Training {plan.Shape} on {plan.Fit} images: {options.Iterations} iterations, " +
                $"lr {plan.Lr}, {where}");
        if (resumeFrom != null)
            human.WriteLine($"Resuming from {CheckpointFile.PathIn(plan.CheckpointDir!)} at step {resumeFrom.Step} " +
                $"(epoch {resumeFrom.Epoch + 1})");

        Profiler? profiler = profiling ? new Profiler() : null;
        var testAccuracies = new Dictionary<int, double>();
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        string cancelDir = plan.CheckpointDir ??
            Path.ChangeExtension(Path.GetFullPath(parse.GetValue(o.Output)!), ".checkpoint");
        TrainingResult result;
        try
        {
            // the plot's test curve: measured after each epoch, outside the training clock
            void MeasureTestAccuracy(int epoch)
            {
                if (plan.PlotPath != null)
                    testAccuracies[epoch] =
                        Evaluation.Accuracy(Evaluation.Predict(engine, test.Pixels, test.Count), test.Labels);
            }
            var hooks = new TrainingHooks
            {
                Validation = validation,
                RunKey = runKey,
                Resume = resumeFrom,
                Cancellation = cts.Token,
                Profiler = profiler,
                SaveCheckpoint = c =>
                {
                    if (plan.CheckpointDir != null) CheckpointFile.Save(plan.CheckpointDir, c);
                    else if (cts.IsCancellationRequested) CheckpointFile.Save(cancelDir, c);
                },
                OnLog = epochOutput ? null
                    : e => human.WriteLine(
                        $"Iteration {e.Iteration}: Accuracy = {e.TrainAccuracy:F4}  Loss = {e.Loss:F6}"),
                OnEpoch = !epochOutput ? null : e =>
                {
                    MeasureTestAccuracy(e.Epoch);
                    human.WriteLine($"Epoch {e.Epoch}: loss {e.TrainLoss:F4}  train accuracy {e.TrainAccuracy:F4}" +
                        (double.IsNaN(e.ValidationAccuracy) ? "" : $"  validation accuracy {e.ValidationAccuracy:F4}") +
                        (testAccuracies.TryGetValue(e.Epoch, out double ta) ? $"  test accuracy {ta:F4}" : "") +
                        $"  ({e.TrainSeconds:F2} s)");
                },
            };
            bool terminal = epochOutput && !Console.IsErrorRedirected && ReferenceEquals(Err, Console.Error) && !asJson;
            result = terminal ? RunWithProgressBars(engine, plan.Fit, options, hooks, MeasureTestAccuracy)
                : Trainer.Run(engine, plan.Fit, options, hooks);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (result.Cancelled)
        {
            Err.WriteLine($"mnistnative: interrupted at step {result.Steps}: " +
                $"checkpoint saved to {CheckpointFile.PathIn(cancelDir)}; " +
                $"continue with --checkpoint {cancelDir} --resume");
            return ExitCodes.Cancelled;
        }
        if (profiler != null && parse.GetValue(o.Profile))
        {
            PrintProfile(human, profiler, result, epochOutput ? "steps" : "iterations");
            human.WriteLine($"Layer-1 {kernelLine}");
            human.WriteLine();
        }
        if (profiler != null && tracePath != null)
        {
            Formats.AtomicFile.Write(tracePath, stream => profiler.WriteChromeTrace(stream));
            human.WriteLine($"Trace written to {tracePath} (open it in https://ui.perfetto.dev or chrome://tracing)");
        }

        double testAccuracy = Evaluation.Accuracy(Evaluation.Predict(engine, test.Pixels, test.Count), test.Labels);
        string outPath = parse.GetValue(o.Output)!;
        ModelFile.Save(outPath, result.Weights);
        if (plan.PlotPath != null)
        {
            Plots.TrainingCurves(plan.PlotPath, result.Epochs, testAccuracies);
            human.WriteLine($"Curves drawn to {plan.PlotPath}");
        }
        human.WriteLine($"Test accuracy = {testAccuracy:F4}");
        string precision = info.Precision.ToString().ToLowerInvariant();
        string kernel = engine.KernelChoice?.Name ?? "dense";
        if (!epochOutput)
        {
            human.WriteLine($"Trained in {result.TrainTime.TotalSeconds:F3} s " +
                $"({result.MillisecondsPerStep:F3} ms per iteration); model saved to {outPath}");
            if (asJson)
                Out.WriteLine(JsonSerializer.Serialize(new TrainSummary(info.Name, precision, plan.Sizes[1], plan.Fit,
                    (int)result.Steps, plan.Lr, info.Threads, info.Device,
                    result.Log.Select(e => new TrainLogEntry((int)e.Iteration, e.TrainAccuracy, e.Loss)).ToList(),
                    testAccuracy, result.TrainTime.TotalSeconds, result.MillisecondsPerStep, Path.GetFullPath(outPath),
                    kernel),
                    JsonOutput.Options));
            return ExitCodes.Ok;
        }
        human.WriteLine($"Trained in {result.TrainTime.TotalSeconds:F3} s " +
            $"({result.Steps} steps, {result.MillisecondsPerStep:F3} ms per step); model saved to {outPath}");
        if (asJson)
        {
            var summary = new MiniBatchSummary(info.Name, precision, plan.Preset, plan.Sizes, plan.Sizes[1..^1],
                plan.Fit, plan.ValidationCount, plan.Batch, options.Epochs, result.Steps, plan.OptimizerName, plan.Lr,
                plan.ScheduleName,
                plan.Warmup, info.Threads, info.Device,
                result.Epochs.Select(e => new EpochLogEntry(e.Epoch, e.Step, e.TrainLoss, e.TrainAccuracy,
                    double.IsNaN(e.ValidationAccuracy) ? null : e.ValidationAccuracy,
                    testAccuracies.TryGetValue(e.Epoch, out double t) ? t : null)).ToList(),
                testAccuracy, result.TrainTime.TotalSeconds, result.MillisecondsPerStep, Path.GetFullPath(outPath))
            { Kernel = kernel };
            Out.WriteLine(JsonSerializer.Serialize(summary, JsonOutput.Options));
        }
        return ExitCodes.Ok;
    }

    /// <summary>The trainer with one progress bar per epoch on the terminal (stderr).</summary>
    private static TrainingResult RunWithProgressBars(ITrainingBackend engine, int fit, TrainingOptions options,
        TrainingHooks hooks, Action<int> afterEpoch)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        TrainingResult result = default!;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask? task = null;
                int taskEpoch = -1;
                result = Trainer.Run(engine, fit, options, hooks with
                {
                    OnStep = (epoch, inEpoch, total, loss, acc) =>
                    {
                        if (epoch != taskEpoch)
                        {
                            task = ctx.AddTask($"epoch {epoch + 1}", maxValue: total);
                            taskEpoch = epoch;
                        }
                        task!.Value = inEpoch;
                        if (inEpoch % 16 == 0 || inEpoch == total)
                            task.Description = $"epoch {epoch + 1}  loss {loss:F4}  acc {acc:F4}";
                    },
                    OnEpoch = e =>
                    {
                        afterEpoch(e.Epoch);
                        if (task != null)
                            task.Description = $"epoch {e.Epoch}  loss {e.TrainLoss:F4}  acc {e.TrainAccuracy:F4}" +
                                (double.IsNaN(e.ValidationAccuracy) ? "" : $"  val {e.ValidationAccuracy:F4}");
                    },
                });
            });
        return result;
    }

    /// <summary>
    /// Loads the first <paramref name="trainCount"/> training images (bad data fails before any backend starts),
    /// creates the backend, uploads the first <paramref name="fit"/> images and returns what the run still needs:
    /// the held-out rest and the test set. The backend keeps the training set in its own layout, so the pixel
    /// bytes staged for it (47 MB for all 60,000 images) die with this frame and are collected before training,
    /// instead of staying beside that layout all run.
    /// </summary>
    private (ITrainingBackend Engine, LabeledImages? Validation, LabeledImages Test) CreateAndUpload(
        Func<ITrainingBackend> create, string? dataOption, int trainCount, int fit)
    {
        var (all, test) = LoadData(dataOption, trainCount);
        if (trainCount > all.Count)
            throw new ArgumentException(
                $"--train-count {trainCount} is more than the {all.Count} training images available");
        LabeledImages? validation = fit < all.Count
            ? new LabeledImages(all.Pixels.AsSpan(fit * LabeledImages.PixelsPerImage).ToArray(),
                all.Labels.AsSpan(fit).ToArray())
            : null;
        ITrainingBackend engine = create();
        try
        {
            engine.Upload(all.Take(fit));
        }
        catch
        {
            engine.Dispose();
            throw;
        }
        return (engine, validation, test);
    }

    private static void PrintProfile(TextWriter w, Profiler profiler, TrainingResult result, string stepsAre)
    {
        double total = result.TrainTime.TotalMilliseconds;
        IReadOnlyList<PhaseStat> phases = profiler.Summary();
        // Device rows (OpenCL event profiling) overlap the host's time: kernels run while the host enqueues
        // or waits, so their share is of the device's busy time, and they are not subtracted from the host's.
        // Rows recorded by several workers at once (thread > 0) overlap each other the same way.
        static bool OnDevice(PhaseStat p) => p.Phase.StartsWith(Phases.DevicePrefix, StringComparison.Ordinal);
        double deviceTotal = phases.Where(OnDevice).Sum(p => p.TotalMilliseconds);
        w.WriteLine();
        w.WriteLine($"Where the time went ({result.StepsRun} {stepsAre}, {total:F1} ms of training):");
        w.WriteLine($"  {"phase",-46} {"total ms",10} {"share",7} {"calls",8} {"ms/call",9}");
        foreach (PhaseStat p in phases)
        {
            double share = p.TotalMilliseconds / (OnDevice(p) ? deviceTotal : total);
            w.WriteLine($"  {p.Phase,-46} {p.TotalMilliseconds,10:F1} {share,7:P1} {p.Calls,8} " +
                $"{p.TotalMilliseconds / Math.Max(1, p.Calls),9:F3}");
        }
        double rest = total - phases.Where(p => !OnDevice(p)).Sum(p => p.TotalMilliseconds);
        if (rest > 0) w.WriteLine($"  {"other (host loop, enqueueing, logging)",-46} {rest,10:F1} {rest / total,7:P1}");
        if (deviceTotal > 0)
            w.WriteLine("  (device rows: share of the device's busy time, from OpenCL event profiling; " +
                "host rows: share of the wall time)");
        w.WriteLine();
    }

    /// <summary>
    /// The test set and the first <paramref name="trainCount"/> training images (only those are read).
    /// </summary>
    private (LabeledImages Train, LabeledImages Test) LoadData(string? dataOption, int trainCount = int.MaxValue) =>
        MnistFiles.Load(EnsureData(dataOption), verify: false, trainCount);

    /// <summary>
    /// The data directory once it holds verified MNIST files; fetches them with progress on a terminal.
    /// </summary>
    private string EnsureData(string? dataOption)
    {
        string dir = MnistAcquisition.ResolveDirectory(dataOption);
        var progress = Console.IsErrorRedirected || !ReferenceEquals(Err, Console.Error)
            ? null : new TerminalProgress(Err);
        new MnistAcquisition(AcquisitionOptions.FromEnvironment(), line => Err.WriteLine(line), progress).Ensure(dir);
        progress?.Finish();
        return dir;
    }
}

public sealed record EpochLogEntry(
    int Epoch, long Step, double TrainLoss, double TrainAccuracy, double? ValidationAccuracy, double? TestAccuracy);

public sealed record MiniBatchSummary(
    string Backend, string Precision, string? Preset, int[] Sizes, int[] Hidden, int TrainCount, int ValidationCount,
    int BatchSize, int Epochs, long Steps, string Optimizer, double LearningRate, string Schedule, int Warmup,
    int Threads, string Device, IReadOnlyList<EpochLogEntry> Log,
    double TestAccuracy, double TrainSeconds, double MsPerStep, string Model)
{
    /// <summary>The layer-1 kernel that ran ("dense" or "sparse").</summary>
    public string Kernel { get; init; } = "dense";
}

public sealed record TrainLogEntry(int Iteration, double TrainAccuracy, double Loss);

public sealed record TrainSummary(
    string Backend, string Precision, int Hidden, int TrainCount, int Iterations, double LearningRate, int Threads,
    string Device,
    IReadOnlyList<TrainLogEntry> Log, double TestAccuracy, double TrainSeconds, double MsPerIteration, string Model,
    string Kernel = "dense");

public static class JsonOutput
{
    public static JsonSerializerOptions Options { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };
}

/// <summary>Download progress on a terminal: one line rewritten in place, at most a few times a second.</summary>
public sealed class TerminalProgress(TextWriter err) : IProgress<DownloadProgress>
{
    private long _lastTicks;
    private bool _dirty;

    public void Report(DownloadProgress value)
    {
        long now = Environment.TickCount64;
        if (now - _lastTicks < 200 && value.Received != value.Total) return;
        _lastTicks = now;
        string size = value.Total is long t
            ? $"{value.Received * 100 / Math.Max(1, t),3}% of {t / 1e6:F1} MB"
            : $"{value.Received / 1e6:F1} MB";
        err.Write($"\r  {value.File}: {size}   ");
        _dirty = true;
    }

    public void Finish()
    {
        if (_dirty) err.WriteLine();
        _dirty = false;
    }
}

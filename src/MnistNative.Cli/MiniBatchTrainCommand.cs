using MnistNative.Backends.Cpu;
using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.Json;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using MnistNative.Data;
using Spectre.Console;

namespace MnistNative.Cli;

/// <summary>The seed's train options, handed to the mini-batch path so it reads the same values.</summary>
internal sealed record SeedOptions(Option<string> Backend, Option<string> Precision, Option<int[]> Hidden, Option<int> Iterations, Option<double> Lr,
    Option<int> TrainCount, Option<uint> Seed, Option<int> Threads, Option<string?> Device, Option<string?> Kernels, Option<string?> Variant,
    Option<FileInfo?> Init, Option<string> Output, Option<string?> Data, Option<bool> Json, Option<bool> Profile, Option<string?> Trace);

/// <summary>The flags of mini-batch and deep training; any of them given (or a --hidden list) selects the mini-batch path.</summary>
internal sealed class BeyondOptions
{
    public Option<int?> BatchSize { get; } = new("--batch-size") { Description = "Samples per step (default: the whole training set, full-batch gradient descent as the seed).", HelpName = "N" };
    public Option<int?> Epochs { get; } = new("--epochs") { Description = "Passes over the training set (instead of --iterations, which then counts steps).", HelpName = "E" };
    public Option<int> ValidationCount { get; } = new("--validation-count") { Description = "Hold out the last N of the --train-count images; their accuracy is logged per epoch.", HelpName = "N" };
    public Option<string?> Optimizer { get; } = new("--optimizer") { Description = "gd (default, the seed's), momentum, or adam.", HelpName = "gd|momentum|adam" };
    public Option<double?> Momentum { get; } = new("--momentum") { Description = "Momentum coefficient (default 0.9).", HelpName = "MU" };
    public Option<double?> Beta1 { get; } = new("--beta1") { Description = "Adam's beta1 (default 0.9).", HelpName = "B1" };
    public Option<double?> Beta2 { get; } = new("--beta2") { Description = "Adam's beta2 (default 0.999).", HelpName = "B2" };
    public Option<double?> Epsilon { get; } = new("--epsilon") { Description = "Adam's epsilon (default 1e-8).", HelpName = "EPS" };
    public Option<double?> WeightDecay { get; } = new("--weight-decay") { Description = "L2 weight decay added to the gradient (default 0).", HelpName = "WD" };
    public Option<string?> Schedule { get; } = new("--schedule") { Description = "Learning-rate schedule: constant (default), step (x0.1 at 1/2 and 3/4 of the run) or cosine.", HelpName = "constant|step|cosine" };
    public Option<int?> Warmup { get; } = new("--warmup") { Description = "Linear warm-up over the first N steps.", HelpName = "N" };
    public Option<string?> Checkpoint { get; } = new("--checkpoint") { Description = "Save the model and optimizer state to DIR/checkpoint.npz after every epoch (and on Ctrl-C).", HelpName = "DIR" };
    public Option<bool> Resume { get; } = new("--resume") { Description = "Continue from the checkpoint in --checkpoint DIR; ends with the same weights as a run that never stopped." };
    public Option<string?> Preset { get; } = new("--preset") { Description = "fast98: the recipe that reaches 98% test accuracy fastest here (see docs/beyond-the-seed.md); flags given beside it override it.", HelpName = "fast98" };
    public Option<string?> Plot { get; } = new("--plot") { Description = "Draw loss and train / validation / test accuracy per epoch into this PNG.", HelpName = "FILE.png" };

    public IEnumerable<Option> All => [BatchSize, Epochs, ValidationCount, Optimizer, Momentum, Beta1, Beta2, Epsilon, WeightDecay, Schedule, Warmup, Checkpoint, Resume, Preset, Plot];

    public void AddTo(Command command)
    {
        Optimizer.AcceptOnlyFromAmong("gd", "momentum", "adam");
        Schedule.AcceptOnlyFromAmong("constant", "step", "cosine");
        Preset.AcceptOnlyFromAmong("fast98");
        foreach (Option o in All) command.Options.Add(o);
    }

    public bool Used(ParseResult parse) => All.Any(o => parse.GetResult(o) is { Implicit: false });
}

/// <summary>The fast98 recipe, chosen on a validation split (docs/beyond-the-seed.md).</summary>
internal static class Fast98
{
    public static readonly int[] Hidden = [384, 128];
    public const int BatchSize = 128;
    public const int Epochs = 4;
    public const double LearningRate = 3e-3;
    public const string Optimizer = "adam";
    public const string Schedule = "cosine";
    public const int Warmup = 100;
}

public sealed partial class CliApp
{
    private static Option<int[]> HiddenOption() => new("--hidden")
    {
        Description = "Hidden units H of the 784-H-10 MLP, or a comma list for a deeper MLP (--hidden 256,128 is 784-256-128-10; needs the mini-batch path).",
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
                    r.AddError($"Cannot parse argument '{text}' for option '--hidden': expected a width or a comma list of widths such as 256,128");
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

    private int RunMiniBatch(ParseResult parse, BeyondOptions b, SeedOptions s)
    {
        bool asJson = parse.GetValue(s.Json);
        TextWriter human = asJson ? Err : Out;
        bool Given(Option o) => parse.GetResult(o) is { Implicit: false };
        string? preset = parse.GetValue(b.Preset);
        bool fast = preset == "fast98";

        if (parse.GetValue(s.Init) != null) throw new ArgumentException("--init-weights goes with the seed's full-batch path; the mini-batch path starts from --seed (or --resume)");
        if (parse.GetValue(s.Profile) || parse.GetValue(s.Trace) != null) throw new ArgumentException("--profile and --trace go with the seed's full-batch path, not with mini-batch training");
        int[] hidden = Given(s.Hidden) || !fast ? parse.GetValue(s.Hidden)! : Fast98.Hidden;
        if (hidden.Length > 8) throw new ArgumentException($"--hidden: at most 8 hidden layers, got {hidden.Length}");
        int[] sizes = [MlpParameters.InputSize, .. hidden, MlpParameters.Classes];
        int trainCount = Given(s.TrainCount) || !fast ? parse.GetValue(s.TrainCount) : 60_000;
        int validationCount = parse.GetValue(b.ValidationCount);
        if (validationCount < 0 || validationCount >= trainCount)
            throw new ArgumentException($"--validation-count must be between 0 and --train-count - 1 ({trainCount - 1}), got {validationCount}");
        int? batchOpt = Given(b.BatchSize) ? parse.GetValue(b.BatchSize) : fast ? Fast98.BatchSize : null;
        if (batchOpt is < 1) throw new ArgumentException($"--batch-size must be at least 1, got {batchOpt}");
        int fit = trainCount - validationCount;
        int batch = Math.Min(batchOpt ?? fit, fit);
        int? epochs = Given(b.Epochs) ? parse.GetValue(b.Epochs) : fast && !Given(s.Iterations) ? Fast98.Epochs : null;
        if (epochs is < 1 or > 100_000) throw new ArgumentException($"--epochs must be between 1 and 100000, got {epochs}");
        if (epochs != null && Given(s.Iterations)) throw new ArgumentException("give --epochs or --iterations, not both");
        string optimizerName = parse.GetValue(b.Optimizer) ?? (fast ? Fast98.Optimizer : "gd");
        var kind = optimizerName switch { "momentum" => OptimizerKind.Momentum, "adam" => OptimizerKind.Adam, _ => OptimizerKind.Gd };
        if (kind != OptimizerKind.Momentum && Given(b.Momentum)) throw new ArgumentException("--momentum goes with --optimizer momentum");
        if (kind != OptimizerKind.Adam && (Given(b.Beta1) || Given(b.Beta2) || Given(b.Epsilon))) throw new ArgumentException("--beta1, --beta2 and --epsilon go with --optimizer adam");
        var optimizer = new OptimizerSettings(kind, parse.GetValue(b.Momentum) ?? 0.9, parse.GetValue(b.Beta1) ?? 0.9, parse.GetValue(b.Beta2) ?? 0.999,
            parse.GetValue(b.Epsilon) ?? 1e-8, parse.GetValue(b.WeightDecay) ?? 0);
        optimizer.Validate();
        double lr = Given(s.Lr) || !fast ? parse.GetValue(s.Lr) : Fast98.LearningRate;
        string scheduleName = parse.GetValue(b.Schedule) ?? (fast ? Fast98.Schedule : "constant");
        int warmup = parse.GetValue(b.Warmup) ?? (fast ? Fast98.Warmup : 0);
        if (warmup < 0) throw new ArgumentException($"--warmup must be zero or more steps, got {warmup}");
        string? checkpointDir = parse.GetValue(b.Checkpoint);
        bool resume = parse.GetValue(b.Resume);
        if (resume && checkpointDir == null) throw new ArgumentException("--resume needs --checkpoint DIR (where the checkpoint is)");
        string? plotPath = parse.GetValue(b.Plot);
        if (plotPath != null && !plotPath.EndsWith(".png", StringComparison.OrdinalIgnoreCase)) throw new ArgumentException($"--plot {plotPath}: the file name must end in .png");
        string backendName = parse.GetValue(s.Backend)!;
        var openCl = new OpenClChoice(parse.GetValue(s.Device), parse.GetValue(s.Kernels), parse.GetValue(s.Variant));
        if (backendName is not ("opencl" or "auto") && (openCl.Device ?? openCl.KernelsDirectory ?? parse.GetValue(s.Variant)) != null)
            throw new ArgumentException($"--device, --kernels and --opencl-variant go with --backend opencl, not {backendName}");
        Precision precision = ParsePrecision(parse.GetValue(s.Precision)!);
        int? threads = Given(s.Threads) ? parse.GetValue(s.Threads) : null;

        using IMiniBatchBackend engine = CreateMiniBatchBackend(backendName, precision, sizes, optimizer, batch, threads, line => Err.WriteLine(line), openCl);
        var (validation, test) = UploadTrainingSet(engine, parse.GetValue(s.Data), trainCount, fit);
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);

        uint seed = parse.GetValue(s.Seed);
        var options = new MiniBatchOptions(batch, epochs ?? 0, epochs == null ? parse.GetValue(s.Iterations) : null, seed, LearningRateSchedule.Constant(lr));
        long totalSteps = options.TotalSteps(fit);
        var scheduleKind = scheduleName switch { "step" => ScheduleKind.Step, "cosine" => ScheduleKind.Cosine, _ => ScheduleKind.Constant };
        options = options with { Schedule = new LearningRateSchedule(scheduleKind, lr, totalSteps, warmup) };
        engine.SetWeights(MlpParameters.Initialize(sizes, seed));
        string shape = string.Join('-', sizes);
        string runKey = $"{shape}|batch {batch}|seed {seed}|{optimizer}|{(options.Schedule.Kind == ScheduleKind.Constant && warmup == 0 ? $"constant {lr}" : options.Schedule.ToString())}|train {fit}|validation {validationCount}|{engine.Info.Name} {engine.Info.Precision}";
        TrainingCheckpoint? resumeFrom = resume ? CheckpointFile.Load(checkpointDir!) : null;
        string epochsText = options.Iterations is long it ? $"{it} steps" : $"{options.Epochs} epochs";
        human.WriteLine($"Training {shape} on {fit} images{(validation != null ? $" ({validation.Count} held out for validation)" : "")}: {epochsText} of batch {batch}, " +
            $"{optimizerName} lr {lr} {scheduleName}{(warmup > 0 ? $" warm-up {warmup}" : "")}{(preset != null ? $" (preset {preset})" : "")}, backend {engine.Info.Name} " +
            $"({engine.Info.Precision.ToString().ToLowerInvariant()}, {engine.Info.Threads} thread{(engine.Info.Threads == 1 ? "" : "s")}, {engine.Info.Device})");
        if (resumeFrom != null) human.WriteLine($"Resuming from {CheckpointFile.PathIn(checkpointDir!)} at step {resumeFrom.Step} (epoch {resumeFrom.Epoch + 1})");

        var testAccuracies = new Dictionary<int, double>();
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        string cancelDir = checkpointDir ?? Path.ChangeExtension(Path.GetFullPath(parse.GetValue(s.Output)!), ".checkpoint");
        MiniBatchResult result;
        try
        {
            var hooks = new MiniBatchHooks
            {
                Validation = validation,
                RunKey = runKey,
                Resume = resumeFrom,
                Cancellation = cts.Token,
                SaveCheckpoint = c =>
                {
                    if (checkpointDir != null) CheckpointFile.Save(checkpointDir, c);
                    else if (cts.IsCancellationRequested) CheckpointFile.Save(cancelDir, c);
                },
            };
            bool terminal = !Console.IsErrorRedirected && ReferenceEquals(Err, Console.Error) && !asJson;
            // the plot's test curve: measured after each epoch, outside the training clock
            void MeasureTestAccuracy(int epoch)
            {
                if (plotPath != null) testAccuracies[epoch] = Evaluation.Accuracy(MiniBatchTrainer.Predict(engine, test.Pixels, test.Count), test.Labels);
            }
            Action<EpochEntry> logEpoch = e =>
            {
                MeasureTestAccuracy(e.Epoch);
                human.WriteLine($"Epoch {e.Epoch}: loss {e.TrainLoss:F4}  train accuracy {e.TrainAccuracy:F4}" +
                    (double.IsNaN(e.ValidationAccuracy) ? "" : $"  validation accuracy {e.ValidationAccuracy:F4}") +
                    (testAccuracies.TryGetValue(e.Epoch, out double ta) ? $"  test accuracy {ta:F4}" : "") + $"  ({e.TrainSeconds:F2} s)");
            };
            if (terminal)
            {
                var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
                result = default!;
                console.Progress()
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        ProgressTask? task = null;
                        int taskEpoch = -1;
                        result = MiniBatchTrainer.Run(engine, fit, options, hooks with
                        {
                            OnStep = (epoch, inEpoch, total, loss, acc) =>
                            {
                                if (epoch != taskEpoch) { task = ctx.AddTask($"epoch {epoch + 1}", maxValue: total); taskEpoch = epoch; }
                                task!.Value = inEpoch;
                                if (inEpoch % 16 == 0 || inEpoch == total) task.Description = $"epoch {epoch + 1}  loss {loss:F4}  acc {acc:F4}";
                            },
                            OnEpoch = e =>
                            {
                                MeasureTestAccuracy(e.Epoch);
                                if (task != null)
                                    task.Description = $"epoch {e.Epoch}  loss {e.TrainLoss:F4}  acc {e.TrainAccuracy:F4}" + (double.IsNaN(e.ValidationAccuracy) ? "" : $"  val {e.ValidationAccuracy:F4}");
                            },
                        });
                    });
            }
            else
            {
                result = MiniBatchTrainer.Run(engine, fit, options, hooks with { OnEpoch = logEpoch });
            }
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (result.Cancelled)
        {
            Err.WriteLine($"mnistnative: interrupted at step {result.Steps}: checkpoint saved to {CheckpointFile.PathIn(cancelDir)}; continue with --checkpoint {cancelDir} --resume");
            return ExitCodes.Cancelled;
        }

        int[] predictions = MiniBatchTrainer.Predict(engine, test.Pixels, test.Count);
        double testAccuracy = Evaluation.Accuracy(predictions, test.Labels);
        string outPath = parse.GetValue(s.Output)!;
        ModelFile.Save(outPath, result.Weights);
        if (plotPath != null)
        {
            Plots.TrainingCurves(plotPath, result.Epochs, testAccuracies);
            human.WriteLine($"Curves drawn to {plotPath}");
        }
        double msPerStep = result.Steps == 0 ? 0 : result.TrainTime.TotalMilliseconds / Math.Max(1, result.Steps - (resumeFrom?.Step ?? 0));
        human.WriteLine($"Test accuracy = {testAccuracy:F4}");
        human.WriteLine($"Trained in {result.TrainTime.TotalSeconds:F3} s ({result.Steps} steps, {msPerStep:F3} ms per step); model saved to {outPath}");
        if (asJson)
        {
            var summary = new MiniBatchSummary(engine.Info.Name, engine.Info.Precision.ToString().ToLowerInvariant(), preset, sizes, hidden, fit, validationCount,
                batch, options.Epochs, result.Steps, optimizerName, lr, scheduleName, warmup, engine.Info.Threads, engine.Info.Device,
                result.Epochs.Select(e => new EpochLogEntry(e.Epoch, e.Step, e.TrainLoss, e.TrainAccuracy, double.IsNaN(e.ValidationAccuracy) ? null : e.ValidationAccuracy,
                    testAccuracies.TryGetValue(e.Epoch, out double t) ? t : null)).ToList(),
                testAccuracy, result.TrainTime.TotalSeconds, msPerStep, Path.GetFullPath(outPath));
            Out.WriteLine(JsonSerializer.Serialize(summary, JsonOutput.Options));
        }
        return ExitCodes.Ok;
    }

    /// <summary>--device and --kernels for the mini-batch OpenCL backend.</summary>
    private sealed record OpenClChoice(string? Device = null, string? KernelsDirectory = null, string? Variant = null);

    /// <summary>
    /// Loads the first <paramref name="trainCount"/> training images, uploads the first <paramref name="fit"/> of
    /// them and returns what the run still needs: the held-out rest and the test set. The backend
    /// keeps the training set in its own layout, so the pixel bytes staged for it (47 MB for all 60,000 images)
    /// die with this frame and are collected before training, instead of staying beside that layout all run.
    /// </summary>
    private (LabeledImages? Validation, LabeledImages Test) UploadTrainingSet(IMiniBatchBackend engine,
        string? dataOption, int trainCount, int fit)
    {
        var (all, test) = LoadData(dataOption, trainCount);
        if (trainCount > all.Count) throw new ArgumentException($"--train-count {trainCount} is more than the {all.Count} training images available");
        LabeledImages? validation = fit < all.Count
            ? new LabeledImages(all.Pixels.AsSpan(fit * LabeledImages.PixelsPerImage).ToArray(), all.Labels.AsSpan(fit).ToArray())
            : null;
        engine.Upload(all.Take(fit));
        return (validation, test);
    }

    /// <summary>
    /// The mini-batch backends. auto keeps BackendSelector's rule: an OpenCL GPU first, else the widest SIMD
    /// path of this CPU (an OpenCL CPU device such as PoCL runs the same cores no faster), else scalar.
    /// </summary>
    private static IMiniBatchBackend CreateMiniBatchBackend(string name, Precision precision, int[] sizes, OptimizerSettings optimizer, int batch, int? threads,
        Action<string> explain, OpenClChoice? openCl = null)
    {
        openCl ??= new OpenClChoice();
        switch (name)
        {
            case "scalar":
                return precision == Precision.F64 ? new ReferenceBackend<double>(sizes, optimizer) : new ReferenceBackend<float>(sizes, optimizer);
            case "avx2":
            case "avx512":
                if (precision == Precision.F64) throw new ArgumentException($"--precision f64 is only on the scalar and opencl backends, not {name}");
                return (IMiniBatchBackend)SimdBackend.Create(name, sizes, optimizer, batch, threads ?? 0, KernelMode.Auto);
            case "opencl":
                return CreateMiniBatchOpenCl(sizes, optimizer, batch, precision, openCl);
            default: // auto
                if (precision == Precision.F64)
                {
                    explain("backend auto: picked scalar (f64 is only on the scalar backend)");
                    return new ReferenceBackend<double>(sizes, optimizer);
                }
                if (OpenClRuntime.FindGpu(out string noGpu) is { } gpu)
                {
                    explain($"backend auto: picked opencl on GPU {gpu.Id} {gpu.Name}");
                    return CreateMiniBatchOpenCl(sizes, optimizer, batch, precision, openCl with { Device = openCl.Device ?? gpu.Id });
                }
                explain($"backend auto: no OpenCL GPU ({noGpu})");
                var (width, why) = CpuFeatures.BestSimdBackend();
                if (width == null)
                {
                    explain($"backend auto: picked scalar ({why})");
                    return new ReferenceBackend<float>(sizes, optimizer);
                }
                explain($"backend auto: picked {width} ({why}; deep SIMD backend)");
                return (IMiniBatchBackend)SimdBackend.Create(width, sizes, optimizer, batch, threads ?? 0, KernelMode.Auto);
        }
    }

    private static OpenClMiniBatchBackend CreateMiniBatchOpenCl(int[] sizes, OptimizerSettings optimizer, int batch, Precision precision, OpenClChoice openCl) =>
        new(sizes, optimizer, batch, new OpenClMiniBatchOptions { Device = openCl.Device, KernelsDirectory = openCl.KernelsDirectory, Precision = precision, Variant = openCl.Variant });
}

public sealed record EpochLogEntry(int Epoch, long Step, double TrainLoss, double TrainAccuracy, double? ValidationAccuracy, double? TestAccuracy);

public sealed record MiniBatchSummary(
    string Backend, string Precision, string? Preset, int[] Sizes, int[] Hidden, int TrainCount, int ValidationCount, int BatchSize, int Epochs, long Steps,
    string Optimizer, double LearningRate, string Schedule, int Warmup, int Threads, string Device, IReadOnlyList<EpochLogEntry> Log,
    double TestAccuracy, double TrainSeconds, double MsPerStep, string Model);

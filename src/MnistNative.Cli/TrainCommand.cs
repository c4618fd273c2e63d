using System.CommandLine;
using System.Text.Json;
using MnistNative.Core;
using MnistNative.Data;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command TrainCommand()
    {
        var backend = new Option<string>("--backend") { Description = "Where the passes run. auto picks the fastest backend this machine can run and says why on stderr.", DefaultValueFactory = _ => "auto" };
        backend.AcceptOnlyFromAmong([.. BackendSelector.Names]);
        var precision = new Option<string>("--precision") { Description = "Floating-point precision (f64 on the scalar reference, and on opencl where the device has doubles).", DefaultValueFactory = _ => "f32" };
        precision.AcceptOnlyFromAmong("f32", "f64");
        var hidden = HiddenOption();
        var iterations = IntOption("--iterations", "Full-batch gradient-descent iterations.", 1000, 0, 10_000_000, "N");
        var lr = PositiveDoubleOption("--lr", "Learning rate. Training stops with exit code 3, writing no model, if the loss becomes NaN or infinite or grows past 10x its first logged value.", 0.1);
        var trainCount = IntOption("--train-count", "Train on the first N training images (the seed uses 10000).", 10_000, 1, 60_000, "N");
        var logEvery = IntOption("--log-every", "Log train accuracy and loss every N iterations (measured on that iteration's forward pass, before its update).", 50, 1, int.MaxValue, "N");
        var seed = new Option<uint>("--seed") { Description = "Seed of the initialisation (numpy's legacy generator: seed 0 gives the notebook's np.random.seed(0) weights).", DefaultValueFactory = _ => 0u };
        var device = new Option<string?>("--device") { Description = "OpenCL device: P:D (platform:device index, see `mnistnative devices`) or part of its name. Default: the first GPU, else the first device.", HelpName = "P:D|NAME" };
        var kernels = new Option<string?>("--kernels") { Description = "Load the OpenCL kernels from this directory (e.g. native/opencl) instead of the embedded copies, for kernel development.", HelpName = "DIR" };
        var variant = new Option<string?>("--opencl-variant") { Description = "Force the OpenCL kernel variant (full-batch and mini-batch paths): gpu (many work-items, local-memory tiles and reductions) or cpu (explicit vectors, few work-items). Default: from the device type.", HelpName = "gpu|cpu" };
        variant.AcceptOnlyFromAmong("gpu", "cpu");
        var threads = IntOption("--threads", "Worker threads for the multi-threaded backends (default: all cores).", Environment.ProcessorCount, 1, 1024, "N");
        var init = new Option<FileInfo?>("--init-weights") { Description = "Start from w1, b1, w2, b2 in this .npz (float64 or float32) or ONNX model (784-H-10) instead of --seed.", HelpName = "FILE" };
        var output = new Option<string>("--out") { Description = "Where to save the trained model (.npz with the seed's names and orientation).", DefaultValueFactory = _ => "model.npz", HelpName = "FILE" };
        var data = DataOption();
        var json = JsonOption("the run's summary");
        var profile = new Option<bool>("--profile") { Description = "Print where the training time went: per phase (forward, backward, reduce, update, metrics, transfers, kernels) total ms, share and calls." };
        var kernel = new Option<string>("--kernel")
        {
            Description = "Layer-1 kernels of the avx2/avx512 backends: dense, sparse " +
                "(visit only the non-zero pixels), or auto " +
                "(picked at upload from the images' measured density; printed on stderr with the reason).",
            DefaultValueFactory = _ => "auto",
        };
        kernel.AcceptOnlyFromAmong([.. BackendSelector.KernelNames]);
        var trace = new Option<string?>("--trace") { Description = "Write the phases as a Chrome trace (JSON) that Perfetto (ui.perfetto.dev) and chrome://tracing open.", HelpName = "FILE.json" };

        var command = new Command("train", "Train the MLP and save it: by default full-batch gradient descent exactly as the seed notebook; mini-batches, optimizers and deeper nets with --batch-size, --optimizer, --hidden 256,128 or --preset fast98.")
        {
            backend, precision, hidden, iterations, lr, trainCount, logEvery, seed, threads, device, kernels, variant, init, output, data, json, profile, trace,
            kernel,
        };
        var beyond = new BeyondOptions();
        beyond.AddTo(command);
        command.SetAction(parse => Guard(() =>
        {
            if (beyond.Used(parse) || parse.GetValue(hidden)!.Length > 1)
            {
                if (parse.GetValue(kernel) != "auto")
                    throw new ArgumentException($"--kernel {parse.GetValue(kernel)}: mini-batch training has " +
                        "no kernel choice yet (it goes with full-batch training)");
                return RunMiniBatch(parse, beyond, new SeedOptions(backend, precision, hidden, iterations, lr, trainCount, seed, threads, device, kernels, variant, init, output, data, json, profile, trace));
            }
            bool asJson = parse.GetValue(json);
            TextWriter human = asJson ? Err : Out;
            int count = parse.GetValue(trainCount);
            var (train, test) = LoadData(parse.GetValue(data), count);
            if (count > train.Count) throw new ArgumentException($"--train-count {count} is more than the {train.Count} training images available");

            MlpParameters weights;
            int h = parse.GetValue(hidden)![0];
            if (parse.GetValue(init) is FileInfo initFile)
            {
                weights = Onnx.ModelInput.Load(initFile.FullName);
                if (weights.LayerCount != 2)
                    throw new ArgumentException($"--init-weights {initFile.Name}: holds {weights.LayerCount} layers; training takes one hidden layer (784-H-10)");
                bool hiddenGiven = parse.GetResult(hidden) is { Implicit: false };
                if (hiddenGiven && weights.Hidden != h)
                    throw new ArgumentException($"--hidden {h} does not match --init-weights {initFile.Name}, which has {weights.Hidden} hidden units");
                h = weights.Hidden;
            }
            else weights = MlpParameters.Initialize([MlpParameters.InputSize, h, MlpParameters.Classes], parse.GetValue(seed));

            string? tracePath = parse.GetValue(trace);
            bool profiling = parse.GetValue(profile) || tracePath != null;
            var request = new BackendRequest(parse.GetValue(backend)!, ParsePrecision(parse.GetValue(precision)!), h,
                parse.GetResult(threads) is { Implicit: false } ? parse.GetValue(threads) : null,
                parse.GetValue(device), parse.GetValue(kernels), parse.GetValue(variant), profiling,
                BackendSelector.ParseKernel(parse.GetValue(kernel)!));
            if (request.Backend is not ("opencl" or "auto") && (request.Device ?? request.KernelsDir ?? request.OpenClVariant) != null)
                throw new ArgumentException($"--device, --kernels and --opencl-variant go with --backend opencl, not {request.Backend}");
            using IFullBatchBackend engine = BackendSelector.Create(request, line => Err.WriteLine(line));
            engine.Upload(train);
            string? kernelLine = BackendSelector.DescribeKernel(engine);
            if (kernelLine != null) Err.WriteLine(kernelLine);
            engine.SetWeights(weights);
            var options = new TrainingOptions(parse.GetValue(iterations), parse.GetValue(lr), parse.GetValue(logEvery));
            human.WriteLine($"Training 784-{h}-10 on {train.Count} images: {options.Iterations} iterations, lr {options.LearningRate}, backend {engine.Info.Name} ({engine.Info.Precision.ToString().ToLowerInvariant()}, {engine.Info.Threads} thread{(engine.Info.Threads == 1 ? "" : "s")}, {engine.Info.Device})");
            Profiler? profiler = profiling ? new Profiler() : null;
            TrainingResult result = FullBatchTrainer.Run(engine, options,
                e => human.WriteLine($"Iteration {e.Iteration}: Accuracy = {e.TrainAccuracy:F4}  Loss = {e.Loss:F6}"), profiler);
            if (profiler != null && parse.GetValue(profile))
            {
                PrintProfile(human, profiler, result);
                human.WriteLine($"Layer-1 {kernelLine ?? "kernel dense: the only one this backend has"}");
                human.WriteLine();
            }
            if (profiler != null && tracePath != null)
            {
                Formats.AtomicFile.Write(tracePath, stream => profiler.WriteChromeTrace(stream));
                human.WriteLine($"Trace written to {tracePath} (open it in https://ui.perfetto.dev or chrome://tracing)");
            }
            int[] predictions = Evaluation.Predict(engine, test.Pixels, test.Count);
            double testAccuracy = Evaluation.Accuracy(predictions, test.Labels);

            string outPath = parse.GetValue(output)!;
            ModelFile.Save(outPath, result.Weights);
            human.WriteLine($"Test accuracy = {testAccuracy:F4}");
            human.WriteLine($"Trained in {result.TrainTime.TotalSeconds:F3} s ({result.MillisecondsPerIteration:F3} ms per iteration); model saved to {outPath}");
            if (asJson)
            {
                var summary = new TrainSummary(engine.Info.Name, engine.Info.Precision.ToString().ToLowerInvariant(), h, train.Count,
                    options.Iterations, options.LearningRate, engine.Info.Threads, engine.Info.Device,
                    result.Log.Select(e => new TrainLogEntry(e.Iteration, e.TrainAccuracy, e.Loss)).ToList(),
                    testAccuracy, result.TrainTime.TotalSeconds, result.MillisecondsPerIteration,
                    Path.GetFullPath(outPath),
                    (engine as IKernelChoosingBackend)?.KernelChoice?.Name ?? "dense");
                Out.WriteLine(JsonSerializer.Serialize(summary, JsonOutput.Options));
            }
            return ExitCodes.Ok;
        }));
        return command;
    }

    private static void PrintProfile(TextWriter w, Profiler profiler, TrainingResult result)
    {
        double total = result.TrainTime.TotalMilliseconds;
        IReadOnlyList<PhaseStat> phases = profiler.Summary();
        // Device rows (OpenCL event profiling) overlap the host's time: kernels run while the host enqueues
        // or waits, so their share is of the device's busy time, and they are not subtracted from the host's.
        static bool OnDevice(PhaseStat p) => p.Phase.StartsWith("device:", StringComparison.Ordinal);
        double deviceTotal = phases.Where(OnDevice).Sum(p => p.TotalMilliseconds);
        w.WriteLine();
        w.WriteLine($"Where the time went ({result.Iterations} iterations, {total:F1} ms of training):");
        w.WriteLine($"  {"phase",-46} {"total ms",10} {"share",7} {"calls",8} {"ms/call",9}");
        foreach (PhaseStat p in phases)
        {
            double share = p.TotalMilliseconds / (OnDevice(p) ? deviceTotal : total);
            w.WriteLine($"  {p.Phase,-46} {p.TotalMilliseconds,10:F1} {share,7:P1} {p.Calls,8} {p.TotalMilliseconds / Math.Max(1, p.Calls),9:F3}");
        }
        double rest = total - phases.Where(p => !OnDevice(p)).Sum(p => p.TotalMilliseconds);
        if (rest > 0) w.WriteLine($"  {"other (host loop, enqueueing, logging)",-46} {rest,10:F1} {rest / total,7:P1}");
        if (deviceTotal > 0) w.WriteLine("  (device rows: share of the device's busy time, from OpenCL event profiling; host rows: share of the wall time)");
        w.WriteLine();
    }

    /// <summary>The test set and the first <paramref name="trainCount"/> training images (only those are read).</summary>
    private (LabeledImages Train, LabeledImages Test) LoadData(string? dataOption, int trainCount = int.MaxValue) =>
        MnistFiles.Load(EnsureData(dataOption), verify: false, trainCount);

    /// <summary>The data directory once it holds verified MNIST files; fetches them with progress on a terminal.</summary>
    private string EnsureData(string? dataOption)
    {
        string dir = MnistAcquisition.ResolveDirectory(dataOption);
        var progress = Console.IsErrorRedirected || !ReferenceEquals(Err, Console.Error) ? null : new TerminalProgress(Err);
        new MnistAcquisition(AcquisitionOptions.FromEnvironment(), line => Err.WriteLine(line), progress).Ensure(dir);
        progress?.Finish();
        return dir;
    }
}

public sealed record TrainLogEntry(int Iteration, double TrainAccuracy, double Loss);

public sealed record TrainSummary(
    string Backend, string Precision, int Hidden, int TrainCount, int Iterations, double LearningRate, int Threads, string Device,
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
        string size = value.Total is long t ? $"{value.Received * 100 / Math.Max(1, t),3}% of {t / 1e6:F1} MB" : $"{value.Received / 1e6:F1} MB";
        err.Write($"\r  {value.File}: {size}   ");
        _dirty = true;
    }

    public void Finish()
    {
        if (_dirty) err.WriteLine();
        _dirty = false;
    }
}

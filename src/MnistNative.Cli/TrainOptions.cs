using System.CommandLine;
using System.CommandLine.Parsing;
using MnistNative.Backends;

namespace MnistNative.Cli;

/// <summary>
/// Every flag of `train`. The seed's flags alone give the seed's run and its output; any mini-batch flag (or a
/// --hidden list) gives the epoch output. Both run on the same backend and the same trainer.
/// </summary>
internal sealed class TrainOptions
{
    public Option<string> Backend { get; } = new("--backend")
    {
        Description = "Where the passes run. auto picks the fastest backend this machine can run and says why " +
            "on stderr.",
        DefaultValueFactory = _ => "auto",
    };
    public Option<string> Precision { get; } = new("--precision")
    {
        Description = "Floating-point precision (f64 on the scalar reference, and on opencl where the device has " +
            "doubles).",
        DefaultValueFactory = _ => "f32",
    };
    public Option<int[]> Hidden { get; } = CliApp.HiddenOption();
    public Option<int> Iterations { get; } = CliApp.IntOption("--iterations",
        "Training steps (full-batch gradient-descent iterations by default).", 1000, 0, 10_000_000, "N");
    public Option<double> Lr { get; } = CliApp.PositiveDoubleOption("--lr", "Learning rate. Training stops with exit " +
        "code 3, writing no model, if the loss becomes NaN or infinite or grows past 10x its first value.", 0.1);
    public Option<int> TrainCount { get; } = CliApp.IntOption("--train-count",
        "Train on the first N training images (the seed uses 10000).", 10_000, 1, 60_000, "N");
    public Option<int> LogEvery { get; } = CliApp.IntOption("--log-every", "Log train accuracy and loss every N " +
        "iterations (measured on that iteration's forward pass, before its update).", 50, 1, int.MaxValue, "N");
    public Option<uint> Seed { get; } = new("--seed")
    {
        Description = "Seed of the initialisation (numpy's legacy generator: seed 0 gives the notebook's " +
            "np.random.seed(0) weights) and of the mini-batch shuffle.",
        DefaultValueFactory = _ => 0u,
    };
    public Option<int> Threads { get; } = CliApp.IntOption("--threads",
        "Worker threads for the multi-threaded backends (default: all cores).", Environment.ProcessorCount, 1, 1024,
        "N");
    public Option<string?> Device { get; } = new("--device")
    {
        Description = "OpenCL device: P:D (platform:device index, see `mnistnative devices`) or part of its name. " +
            "Default: the first GPU, else the first device.",
        HelpName = "P:D|NAME",
    };
    public Option<string?> Kernels { get; } = new("--kernels")
    {
        Description = "Load the OpenCL kernels from this directory (e.g. native/opencl) instead of the embedded " +
            "copies, for kernel development.",
        HelpName = "DIR",
    };
    public Option<string?> Variant { get; } = new("--opencl-variant")
    {
        Description = "Force the OpenCL kernel variant: gpu (many work-items, local-memory tiles and reductions) or " +
            "cpu (explicit vectors, few work-items). Default: from the device type.",
        HelpName = "gpu|cpu",
    };
    public Option<FileInfo?> Init { get; } = new("--init-weights")
    {
        Description = "Start from the weights in this .npz (w1, b1, w2, b2, ...; float64 or float32) or ONNX model " +
            "instead of --seed; its layer sizes must match --hidden (or give the model's shape when --hidden is " +
            "not given).",
        HelpName = "FILE",
    };
    public Option<string> Output { get; } = new("--out")
    {
        Description = "Where to save the trained model (.npz with the seed's names and orientation).",
        DefaultValueFactory = _ => "model.npz",
        HelpName = "FILE",
    };
    public Option<string?> Data { get; } = CliApp.DataOption();
    public Option<bool> Json { get; } = CliApp.JsonOption("the run's summary");
    public Option<bool> Profile { get; } = new("--profile")
    {
        Description = "Print where the training time went: per phase (forward, softmax/loss, backward, reduce, " +
            "update, transfers; OpenCL per kernel) total ms, share and calls.",
    };
    public Option<string?> Trace { get; } = new("--trace")
    {
        Description = "Write the phases as a Chrome trace (JSON) that Perfetto (ui.perfetto.dev) and " +
            "chrome://tracing open.",
        HelpName = "FILE.json",
    };
    public Option<string> Kernel { get; } = new("--kernel")
    {
        Description = "Layer-1 kernels of the avx2/avx512 backends' full-batch 784-H-10 path: dense, sparse " +
            "(visit only the non-zero pixels), or auto (picked at upload from the images' measured density; " +
            "printed on stderr with the reason).",
        DefaultValueFactory = _ => "auto",
    };

    // mini-batch training and deeper models
    public Option<int?> BatchSize { get; } = new("--batch-size")
    {
        Description = "Samples per step (default: the whole training set, full-batch gradient descent as the seed).",
        HelpName = "N",
    };
    public Option<int?> Epochs { get; } = new("--epochs")
    {
        Description = "Passes over the training set (instead of --iterations, which then counts steps).",
        HelpName = "E",
    };
    public Option<int> ValidationCount { get; } = new("--validation-count")
    {
        Description = "Hold out the last N of the --train-count images; their accuracy is logged per epoch.",
        HelpName = "N",
    };
    public Option<string?> Optimizer { get; } = new("--optimizer")
    {
        Description = "gd (default, the seed's), momentum, or adam.",
        HelpName = "gd|momentum|adam",
    };
    public Option<double?> Momentum { get; } = new("--momentum")
    {
        Description = "Momentum coefficient (default 0.9).",
        HelpName = "MU",
    };
    public Option<double?> Beta1 { get; } = new("--beta1")
    {
        Description = "Adam's beta1 (default 0.9).",
        HelpName = "B1",
    };
    public Option<double?> Beta2 { get; } = new("--beta2")
    {
        Description = "Adam's beta2 (default 0.999).",
        HelpName = "B2",
    };
    public Option<double?> Epsilon { get; } = new("--epsilon")
    {
        Description = "Adam's epsilon (default 1e-8).",
        HelpName = "EPS",
    };
    public Option<double?> WeightDecay { get; } = new("--weight-decay")
    {
        Description = "L2 weight decay added to the gradient (default 0).",
        HelpName = "WD",
    };
    public Option<string?> Schedule { get; } = new("--schedule")
    {
        Description = "Learning-rate schedule: constant (default), step (x0.1 at 1/2 and 3/4 of the run) or cosine.",
        HelpName = "constant|step|cosine",
    };
    public Option<int?> Warmup { get; } = new("--warmup")
    {
        Description = "Linear warm-up over the first N steps.",
        HelpName = "N",
    };
    public Option<string?> Checkpoint { get; } = new("--checkpoint")
    {
        Description = "Save the model and optimizer state to DIR/checkpoint.npz after every epoch (and on Ctrl-C).",
        HelpName = "DIR",
    };
    public Option<bool> Resume { get; } = new("--resume")
    {
        Description = "Continue from the checkpoint in --checkpoint DIR; ends with the same weights as a run that " +
            "never stopped.",
    };
    public Option<string?> Preset { get; } = new("--preset")
    {
        Description = "fast98: the recipe that reaches 98% test accuracy fastest here (see docs/training.md); " +
            "flags given beside it override it.",
        HelpName = "fast98",
    };
    public Option<string?> Plot { get; } = new("--plot")
    {
        Description = "Draw loss and train / validation / test accuracy per epoch into this PNG.",
        HelpName = "FILE.png",
    };

    /// <summary>The flags whose presence asks for the epoch output.</summary>
    private IEnumerable<Option> EpochFlags => [BatchSize, Epochs, ValidationCount, Optimizer, Momentum, Beta1, Beta2,
        Epsilon, WeightDecay, Schedule, Warmup, Checkpoint, Resume, Preset, Plot];

    public TrainOptions()
    {
        Backend.AcceptOnlyFromAmong([.. BackendCatalog.Names]);
        Precision.AcceptOnlyFromAmong("f32", "f64");
        Variant.AcceptOnlyFromAmong("gpu", "cpu");
        Kernel.AcceptOnlyFromAmong([.. BackendCatalog.KernelNames]);
        Optimizer.AcceptOnlyFromAmong("gd", "momentum", "adam");
        Schedule.AcceptOnlyFromAmong("constant", "step", "cosine");
        Preset.AcceptOnlyFromAmong("fast98");
    }

    public IEnumerable<Option> All => [Backend, Precision, Hidden, Iterations, Lr, TrainCount, LogEvery, Seed, Threads,
        Device, Kernels, Variant, Init, Output, Data, Json, Profile, Trace, Kernel, .. EpochFlags];

    /// <summary>The seed's output (iteration lines) unless a mini-batch flag or a --hidden list was given.</summary>
    public bool EpochOutput(ParseResult parse) =>
        EpochFlags.Any(o => parse.GetResult(o) is { Implicit: false }) || parse.GetValue(Hidden)!.Length > 1;
}

/// <summary>The fast98 recipe, chosen on a validation split (docs/training.md).</summary>
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

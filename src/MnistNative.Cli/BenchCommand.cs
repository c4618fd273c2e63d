using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using MnistNative.Backends;
using MnistNative.Backends.Cpu;
using MnistNative.Core;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command BenchCommand()
    {
        var backends = new Option<string>("--backends")
        {
            Description = "Comma-separated backends to measure (default: every backend this machine can run).",
            HelpName = "LIST",
        };
        var hidden = IntOption("--hidden", "Hidden units H.", 10, 1, 4096, "H");
        var trainCount = IntOption("--train-count", "Training images per step.", 10_000, 1, 60_000, "N");
        var iterations = IntOption("--iterations",
            "Timed training steps per backend, after 3 warm-up steps; the test accuracy is measured after them.",
            30, 1, 100_000, "N");
        var threads = IntOption("--threads",
            "Threads for the multi-threaded backends and the FMA peak loop (default: all cores).",
            Environment.ProcessorCount, 1, 1024, "N");
        var kernel = new Option<string>("--kernel")
        {
            Description = "Layer-1 kernels, comma-separated: auto, dense, sparse (avx2/avx512). " +
                "Each backend is measured with each kernel it has, e.g. --kernel dense,sparse for the A/B.",
            DefaultValueFactory = _ => "auto",
            HelpName = "LIST",
        };
        var rounds = IntOption("--rounds",
            "Interleave the measurement: each round times --iterations steps of every backend and kernel " +
            "in turn (a shared, noisy machine then hits them alike); medians are over all rounds.", 1, 1, 1000, "N");
        var data = DataOption();
        var json = JsonOption("the machine, the FMA peaks and one result per backend and kernel");
        var command = new Command("bench",
            "Side-by-side training-step speed of every backend on this machine: median ms per iteration " +
            "(min, max), GFLOP/s, percent of the FMA peak measured here for the backend's vector width, " +
            "speed-up over the scalar reference, test accuracy.")
        { backends, hidden, trainCount, iterations, threads, kernel, rounds, data, json };
        command.SetAction(parse => Guard(() =>
        {
            bool asJson = parse.GetValue(json);
            TextWriter human = asJson ? Err : Out;
            int h = parse.GetValue(hidden), steps = parse.GetValue(iterations), threadCount = parse.GetValue(threads);
            int count = parse.GetValue(trainCount);
            var (train, test) = LoadData(parse.GetValue(data), count);
            if (count > train.Count)
                throw new ArgumentException(
                    $"--train-count {count} is more than the {train.Count} training images available");
            List<string> names = parse.GetValue(backends) is { } list
                ? list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList()
                : BackendCatalog.Backends.ToList();
            foreach (string n in names)
                if (!BackendCatalog.Backends.Contains(n))
                    throw new ArgumentException($"--backends: unknown backend '{n}' " +
                        $"(choose from {string.Join(", ", BackendCatalog.Backends)})");

            List<string> kernelNames = parse.GetValue(kernel)!
                .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToList();
            KernelMode[] kernelModes = kernelNames.Select(BackendCatalog.ParseKernel).ToArray();
            if (kernelModes.Length == 0)
                throw new ArgumentException("--kernel: give at least one of auto, dense, sparse");
            int roundCount = parse.GetValue(rounds);

            Dictionary<string, double> peaks = MeasurePeaks(threadCount);
            human.WriteLine($"FMA peak here ({threadCount} threads): " +
                string.Join(", ", peaks.Select(p => $"{p.Key} {p.Value:F1} GFLOP/s")));
            double flops = FlopCount.TrainingStep(train.Count, h);
            double density = KernelChoice.MeasureDensity(train.Pixels);
            double usefulFlops = KernelChoice.UsefulFlops(train.Count, h, density);
            MlpParameters init = MlpParameters.Initialize([MlpParameters.InputSize, h, MlpParameters.Classes], 0);
            var results = new List<BenchResult>();
            var runs = new List<BenchRun>();
            try
            {
                foreach (string name in names)
                    foreach (KernelMode mode in kernelModes)
                    {
                        ITrainingBackend backend;
                        try
                        {
                            var request = BackendRequest.FullBatch(name, Precision.F32, h, train.Count) with
                            {
                                Threads = threadCount,
                                Kernel = mode,
                            };
                            backend = BackendCatalog.Create(request, _ => { });
                        }
                        catch (BackendUnavailableException e)
                        {
                            string requested = mode.ToString().ToLowerInvariant();
                            human.WriteLine($"{name} (--kernel {requested}): skipped ({e.Message})");
                            continue;
                        }
                        var run = new BenchRun(name, mode, backend, new double[roundCount * steps]);
                        runs.Add(run);
                        backend.Upload(train);
                        backend.SetWeights(init);
                        human.WriteLine($"{name}: {BackendCatalog.DescribeKernel(backend)}");
                        // measure: true, as the trainer steps (its divergence check reads every step's loss)
                        for (int i = 0; i < 3; i++) backend.Step(TrainingBatch.WholeSet, 0.1, measure: true);
                        backend.Synchronize();
                    }
                for (int round = 0; round < roundCount; round++)
                    foreach (BenchRun run in runs)
                        for (int i = 0; i < steps; i++)
                        {
                            long t0 = Stopwatch.GetTimestamp();
                            run.Backend.Step(TrainingBatch.WholeSet, 0.1, measure: true);
                            run.Backend.Synchronize();
                            run.Times[round * steps + i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                        }
                foreach (BenchRun run in runs)
                {
                    double[] times = run.Times;
                    Array.Sort(times);
                    int timed = times.Length;
                    double median = timed % 2 == 1 ? times[timed / 2] : (times[timed / 2 - 1] + times[timed / 2]) / 2;
                    int[] predictions = Evaluation.Predict(run.Backend, test.Pixels, test.Count);
                    double gflops = flops / (median / 1000) / 1e9;
                    string width = PeakKey(run.Name);
                    double? peak = peaks.TryGetValue(width, out double p) ? p : null;
                    KernelChoice? choice = run.Backend.KernelChoice;
                    double usefulGflops = usefulFlops / (median / 1000) / 1e9;
                    results.Add(new BenchResult(run.Name, run.Backend.Info.Device, run.Backend.Info.Threads, median,
                        times[0], times[^1], gflops, gflops / peak, width, 0,
                        Evaluation.Accuracy(predictions, test.Labels))
                    {
                        Kernel = choice?.Name ?? "dense",
                        KernelRequested = run.Mode.ToString().ToLowerInvariant(),
                        KernelReason = choice?.Reason ?? "the only layer-1 kernel this backend has",
                        UsefulGflops = usefulGflops,
                        UsefulPeakFraction = usefulGflops / peak,
                    });
                    human.WriteLine($"{run.Name} ({choice?.Name ?? "dense"}): median {median:F3} ms per iteration");
                }
            }
            finally
            {
                foreach (BenchRun run in runs) run.Backend.Dispose();
            }
            double? scalarMs = results.FirstOrDefault(r => r.Backend == "scalar")?.MsPerIteration;
            results = results
                .Select(r => r with { SpeedupVsScalar = scalarMs is double s ? s / r.MsPerIteration : null })
                .ToList();
            static string Percent(double? f) => f is double v ? v.ToString("P0") : "-";

            if (asJson)
            {
                var workload = new BenchWorkload(train.Count, h, steps, flops / 1e6)
                {
                    Rounds = roundCount,
                    Density = density,
                    UsefulMflopPerIteration = usefulFlops / 1e6,
                };
                Out.WriteLine(JsonSerializer.Serialize(
                    new BenchReport(MachineInfo(), peaks, results, workload, PeakMemory.Megabytes()),
                    JsonOutput.Options));
                return ExitCodes.Ok;
            }
            Out.WriteLine();
            Out.WriteLine($"Training step, 784-{h}-10 on {train.Count} images ({flops / 1e6:F0} MFLOP), " +
                $"{steps} timed steps after 3 warm-up; test accuracy after them");
            Out.WriteLine($"{"backend",-8} {"kernel",-6} {"threads",7} {"median ms",10} {"min",8} {"max",8} " +
                $"{"GFLOP/s",8} {"% peak",7} " +
                $"{"useful",8} {"% peak",7} {"vs scalar",9} {"test acc",8}  device");
            foreach (BenchResult r in results)
                Out.WriteLine($"{r.Backend,-8} {r.Kernel,-6} {r.Threads,7} {r.MsPerIteration,10:F3} " +
                    $"{r.MinMs,8:F3} {r.MaxMs,8:F3} {r.Gflops,8:F1} " +
                    $"{Percent(r.PeakFraction),7} {r.UsefulGflops,8:F1} {Percent(r.UsefulPeakFraction),7} " +
                    $"{(r.SpeedupVsScalar is double x ? x.ToString("F1") + "x" : "-"),9} " +
                    $"{r.TestAccuracy,8:F4}  {r.Device}");
            Out.WriteLine("% peak: against the FMA peak measured above for the backend's vector width " +
                "(scalar: one lane of the 256-bit peak; OpenCL on a CPU: the widest).");
            Out.WriteLine($"GFLOP/s counts the dense step ({flops / 1e6:F0} MFLOP, every pixel); " +
                "useful GFLOP/s counts layer 1's products over the non-zero pixels only " +
                $"({usefulFlops / 1e6:F0} MFLOP: {density:P1} of the pixels are non-zero), " +
                "the work a sparse kernel has to do.");
            Out.WriteLine($"Peak resident memory of this process: {PeakMemory.Megabytes():F0} MB " +
                "(every backend above held its buffers at once).");
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>
    /// FMA peaks by vector width: "avx512" and "avx2" measured, "scalar" one lane of the 256-bit peak.
    /// </summary>
    private static Dictionary<string, double> MeasurePeaks(int threads)
    {
        var peaks = new Dictionary<string, double>();
        if (CpuFeatures.CanRunAvx512) peaks["avx512"] = FmaPeak.MeasureGflops(512, threads);
        if (CpuFeatures.CanRunAvx2)
        {
            peaks["avx2"] = FmaPeak.MeasureGflops(256, threads);
            peaks["scalar"] = peaks["avx2"] / 8;
        }
        return peaks;
    }

    private static string PeakKey(string backend) => backend switch
    {
        "scalar" => "scalar",
        "avx2" => "avx2",
        _ => CpuFeatures.CanRunAvx512 ? "avx512" : "avx2",
    };

    internal static Dictionary<string, object> MachineInfo()
    {
        string cpu = "unknown";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo")
                .FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?
                .Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return new Dictionary<string, object>
        {
            ["cpu"] = cpu,
            ["logical_cores"] = Environment.ProcessorCount,
            ["os"] = RuntimeInformation.OSDescription,
            ["runtime"] = RuntimeInformation.FrameworkDescription,
            ["avx2"] = CpuFeatures.Avx2,
            ["fma"] = CpuFeatures.Fma,
            ["avx512f"] = CpuFeatures.Avx512F,
        };
    }
}

public sealed record BenchResult(string Backend, string Device, int Threads, double MsPerIteration, double MinMs,
    double MaxMs, double Gflops,
    double? PeakFraction, string PeakWidth, double? SpeedupVsScalar, double TestAccuracy)
{
    /// <summary>The layer-1 kernel that ran ("dense" or "sparse"), what --kernel asked for, and the backend's
    /// reason.</summary>
    public string Kernel { get; init; } = "dense";
    public string KernelRequested { get; init; } = "auto";
    public string KernelReason { get; init; } = "";

    /// <summary>GFLOP/s counting layer 1's two products over the non-zero pixels only, and its fraction of the
    /// peak.</summary>
    public double UsefulGflops { get; init; }
    public double? UsefulPeakFraction { get; init; }
}

internal sealed record BenchRun(string Name, KernelMode Mode, ITrainingBackend Backend, double[] Times);

public sealed record BenchWorkload(int TrainCount, int Hidden, int TimedIterations, double MflopPerIteration)
{
    public int Rounds { get; init; } = 1;

    /// <summary>Fraction of non-zero training pixels, and the step's FLOPs over them (layer 1's products scaled by
    /// it).</summary>
    public double Density { get; init; }
    public double UsefulMflopPerIteration { get; init; }
}

/// <param name="PeakRssMb">
/// The bench process's peak resident memory, with every backend's buffers alive at once.
/// </param>
public sealed record BenchReport(Dictionary<string, object> Machine, Dictionary<string, double> PeakGflops,
    IReadOnlyList<BenchResult> Results,
    BenchWorkload Workload, double PeakRssMb);

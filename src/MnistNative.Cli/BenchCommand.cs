using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using MnistNative.Backends.Cpu;
using MnistNative.Core;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command BenchCommand()
    {
        var backends = new Option<string>("--backends") { Description = "Comma-separated backends to measure (default: every backend this machine can run).", HelpName = "LIST" };
        var hidden = IntOption("--hidden", "Hidden units H.", 10, 1, 4096, "H");
        var trainCount = IntOption("--train-count", "Training images per step.", 10_000, 1, 60_000, "N");
        var iterations = IntOption("--iterations", "Timed training steps per backend, after 3 warm-up steps; the test accuracy is measured after them.", 30, 1, 100_000, "N");
        var threads = IntOption("--threads", "Threads for the multi-threaded backends and the FMA peak loop (default: all cores).", Environment.ProcessorCount, 1, 1024, "N");
        var data = DataOption();
        var json = JsonOption("the machine, the FMA peaks and one result per backend");
        var command = new Command("bench",
            "Side-by-side training-step speed of every backend on this machine: median ms per iteration (min, max), GFLOP/s, " +
            "percent of the FMA peak measured here for the backend's vector width, speed-up over the scalar reference, test accuracy.")
        { backends, hidden, trainCount, iterations, threads, data, json };
        command.SetAction(parse => Guard(() =>
        {
            bool asJson = parse.GetValue(json);
            TextWriter human = asJson ? Err : Out;
            int h = parse.GetValue(hidden), steps = parse.GetValue(iterations), threadCount = parse.GetValue(threads);
            int count = parse.GetValue(trainCount);
            var (train, test) = LoadData(parse.GetValue(data), count);
            if (count > train.Count) throw new ArgumentException($"--train-count {count} is more than the {train.Count} training images available");
            train = train.Take(count);
            List<string> names = parse.GetValue(backends) is { } list
                ? list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList()
                : BackendSelector.Names.Where(n => n != "auto").ToList();
            foreach (string n in names)
                if (n == "auto" || !BackendSelector.Names.Contains(n))
                    throw new ArgumentException($"--backends: unknown backend '{n}' (choose from {string.Join(", ", BackendSelector.Names.Where(x => x != "auto"))})");

            Dictionary<string, double> peaks = MeasurePeaks(threadCount);
            human.WriteLine($"FMA peak here ({threadCount} threads): " + string.Join(", ", peaks.Select(p => $"{p.Key} {p.Value:F1} GFLOP/s")));
            double flops = FlopCount.TrainingStep(train.Count, h);
            MlpParameters init = MlpParameters.Initialize([MlpParameters.InputSize, h, MlpParameters.Classes], 0);
            var results = new List<BenchResult>();
            foreach (string name in names)
            {
                ITrainingBackend backend;
                try { backend = BackendSelector.Create(new BackendRequest(name, Precision.F32, h, threadCount), _ => { }); }
                catch (BackendUnavailableException e) { human.WriteLine($"{name}: skipped ({e.Message})"); continue; }
                bool peakIsThisRuns = PeakMemory.TryReset();
                using (backend)
                {
                    backend.Upload(train);
                    backend.SetWeights(init);
                    // measure: true, as the trainer steps (its divergence check reads every step's loss)
                    for (int i = 0; i < 3; i++) backend.Step(0.1, measure: true);
                    backend.Synchronize();
                    var times = new double[steps];
                    for (int i = 0; i < steps; i++)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        backend.Step(0.1, measure: true);
                        backend.Synchronize();
                        times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                    }
                    Array.Sort(times);
                    double median = steps % 2 == 1 ? times[steps / 2] : (times[steps / 2 - 1] + times[steps / 2]) / 2;
                    int[] predictions = Evaluation.Predict(backend, test.Pixels, test.Count);
                    double gflops = flops / (median / 1000) / 1e9;
                    string width = PeakKey(name);
                    results.Add(new BenchResult(name, backend.Info.Device, backend.Info.Threads, median, times[0], times[^1], gflops,
                        peaks.TryGetValue(width, out double peak) ? gflops / peak : null, width, 0, Evaluation.Accuracy(predictions, test.Labels),
                        peakIsThisRuns ? PeakMemory.PeakMegabytes() : null));
                    human.WriteLine($"{name}: median {median:F3} ms per iteration");
                }
            }
            double? scalarMs = results.FirstOrDefault(r => r.Backend == "scalar")?.MsPerIteration;
            results = results.Select(r => r with { SpeedupVsScalar = scalarMs is double s ? s / r.MsPerIteration : null }).ToList();

            if (asJson)
            {
                Out.WriteLine(JsonSerializer.Serialize(new BenchReport(MachineInfo(), peaks, results,
                    new BenchWorkload(train.Count, h, steps, flops / 1e6)), JsonOutput.Options));
                return ExitCodes.Ok;
            }
            Out.WriteLine();
            Out.WriteLine($"Training step, 784-{h}-10 on {train.Count} images ({flops / 1e6:F0} MFLOP), {steps} timed steps after 3 warm-up; test accuracy after them");
            Out.WriteLine($"{"backend",-8} {"threads",7} {"median ms",10} {"min",8} {"max",8} {"GFLOP/s",8} {"% peak",7} {"vs scalar",9} {"test acc",8} {"peak MB",8}  device");
            foreach (BenchResult r in results)
                Out.WriteLine($"{r.Backend,-8} {r.Threads,7} {r.MsPerIteration,10:F3} {r.MinMs,8:F3} {r.MaxMs,8:F3} {r.Gflops,8:F1} {(r.PeakFraction is double f ? f.ToString("P0") : "-"),7} {(r.SpeedupVsScalar is double x ? x.ToString("F1") + "x" : "-"),9} {r.TestAccuracy,8:F4} {(r.PeakRssMb is double mb ? mb.ToString("F0") : "-"),8}  {r.Device}");
            Out.WriteLine($"% peak: against the FMA peak measured above for the backend's vector width (scalar: one lane of the 256-bit peak; OpenCL on a CPU: the widest).");
            Out.WriteLine("peak MB: the process's peak resident memory during that backend's upload, steps and test pass (the data and the runtime included).");
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>FMA peaks by vector width: "avx512" and "avx2" measured, "scalar" one lane of the 256-bit peak.</summary>
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
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
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

public sealed record BenchResult(string Backend, string Device, int Threads, double MsPerIteration, double MinMs, double MaxMs, double Gflops,
    double? PeakFraction, string PeakWidth, double? SpeedupVsScalar, double TestAccuracy, double? PeakRssMb);

public sealed record BenchWorkload(int TrainCount, int Hidden, int TimedIterations, double MflopPerIteration);

public sealed record BenchReport(Dictionary<string, object> Machine, Dictionary<string, double> PeakGflops, IReadOnlyList<BenchResult> Results, BenchWorkload Workload);

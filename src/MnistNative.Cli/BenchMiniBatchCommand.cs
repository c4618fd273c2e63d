using System.CommandLine;
using System.Diagnostics;
using MnistNative.Core;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    /// <summary>
    /// Times mini-batch steps (forward, backward, Adam) of the deep backends and reports ms per step and GFLOP/s.
    /// GFLOP/s counts the dense work of the step (2 * in * out per layer forward, the same for the weight
    /// gradient, and again for the input gradient of every layer but the first), so a backend that skips zeros
    /// shows the work it did not have to do as speed; "dense-equivalent" in the output says so.
    /// </summary>
    private Command BenchMiniBatchCommand()
    {
        var hidden = HiddenOption();
        var batches = new Option<string>("--batch-sizes") { Description = "Comma list of batch sizes.", DefaultValueFactory = _ => "128,512" };
        var backend = new Option<string>("--backend") { Description = "auto, avx512, avx2, scalar or opencl.", DefaultValueFactory = _ => "auto" };
        backend.AcceptOnlyFromAmong("auto", "avx512", "avx2", "scalar", "opencl");
        var device = new Option<string?>("--device") { Description = "OpenCL device for --backend opencl: P:D or part of its name (see `mnistnative devices`).", HelpName = "P:D|NAME" };
        var variant = new Option<string?>("--opencl-variant") { Description = "Force the OpenCL matrix kernels: gpu (16 x 16 work-groups, local-memory tiles) or cpu (few work-items, explicit vectors). Default: from the device type.", HelpName = "gpu|cpu" };
        variant.AcceptOnlyFromAmong("gpu", "cpu");
        var threads = IntOption("--threads", "Worker threads (CPU backends).", Environment.ProcessorCount, 1, 1024, "N");
        var steps = IntOption("--steps", "Timed steps per batch size (after 20 warm-up steps).", 200, 1, 1_000_000, "N");
        var data = DataOption();
        var command = new Command("bench-minibatch", "Time mini-batch training steps (Adam) of the deep backends: ms per step and dense-equivalent GFLOP/s.") { hidden, batches, backend, device, variant, threads, steps, data };
        command.SetAction(parse => Guard(() =>
        {
            if ((parse.GetValue(device) ?? parse.GetValue(variant)) != null && parse.GetValue(backend) != "opencl")
                throw new ArgumentException($"--device and --opencl-variant go with --backend opencl, not {parse.GetValue(backend)}");
            var (train, _) = LoadData(parse.GetValue(data));
            int[] sizes = [MlpParameters.InputSize, .. parse.GetValue(hidden)!, MlpParameters.Classes];
            double flopsPerSample = 0;
            for (int l = 0; l + 1 < sizes.Length; l++) flopsPerSample += 2.0 * sizes[l] * sizes[l + 1] * (l == 0 ? 2 : 3);
            foreach (string b in parse.GetValue(batches)!.Split(','))
            {
                int batch = int.Parse(b);
                var optimizer = new OptimizerSettings(OptimizerKind.Adam);
                using IMiniBatchBackend engine = CreateMiniBatchBackend(parse.GetValue(backend)!, Precision.F32, sizes, optimizer, batch,
                    parse.GetResult(threads) is { Implicit: false } ? parse.GetValue(threads) : null, _ => { }, new OpenClChoice(parse.GetValue(device), Variant: parse.GetValue(variant)));
                engine.Upload(train);
                engine.SetWeights(MlpParameters.Initialize(sizes, 0));
                var order = new int[train.Count];
                MiniBatchTrainer.Permutation(0, 0, order);
                int n = parse.GetValue(steps), at = 0;
                // the last step of each loop measures: on OpenCL that waits for the queued steps, so the clock sees them
                for (int i = 0; i < 20; i++) { engine.StepBatch(order.AsSpan(at, batch), 1e-3, i == 19); at = (at + batch) % (train.Count - batch); }
                var clock = Stopwatch.StartNew();
                TimeSpan cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
                for (int i = 0; i < n; i++) { engine.StepBatch(order.AsSpan(at, batch), 1e-3, i == n - 1); at = (at + batch) % (train.Count - batch); }
                double seconds = clock.Elapsed.TotalSeconds;
                double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
                Out.WriteLine($"{engine.Info.Name,-7} {string.Join('-', sizes)} batch {batch,5}: {seconds * 1e3 / n,8:F3} ms/step  {flopsPerSample * batch * n / seconds / 1e9,7:F1} GFLOP/s dense-equivalent  ({cpu / seconds:F2} cores busy, {engine.Info.Threads} threads)");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }
}

using System.CommandLine;
using System.Text.Json;
using MnistNative.Backends;
using MnistNative.Backends.Cpu;
using MnistNative.Backends.OpenCL;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private const string KernelAutoRule =
        "auto: decided at upload from the training images, the kernels with the least estimated work. avx2/avx512: " +
        "dense, sparse rows (each sample's non-zero pixels; work = non-zero fraction x lanes per non-zero pixel / " +
        "lanes per pixel x 3) or sparse sample blocks (samples ordered so that blocks of one vector's width share " +
        "pixels; work = the pixel columns a block keeps x 1.5; above 32 hidden units only their forward, with the " +
        "rows' gradient); MNIST: sample blocks at H=10 and H=128. opencl's CPU variant: sparse when at most half " +
        "the pixels are non-zero and " +
        "the blocks of 8 samples keep under half the pixel columns (the GPU variant is dense). Standardised pixels " +
        "without zeros -> dense. train prints the choice and the figures on stderr.";

    private Command DevicesCommand()
    {
        var json = JsonOption("the CPU features and backends");
        var command = new Command("devices",
            "What this machine offers: CPU instruction sets and vector widths, OpenCL platforms and devices, " +
            "and which backends can run.")
        { json };
        command.SetAction(parse => Guard(() =>
        {
            bool openCl = OpenClRuntime.TryProbe(out string openClReason, out var devices);
            if (parse.GetValue(json))
            {
                Out.WriteLine(JsonSerializer.Serialize(new
                {
                    machine = MachineInfo(),
                    vector256_accelerated = CpuFeatures.Vector256Accelerated,
                    vector512_accelerated = CpuFeatures.Vector512Accelerated,
                    opencl = openCl ? (object)devices : new { unavailable = openClReason },
                    backends = BackendCatalog.Backends.ToDictionary(
                        n => n, n => BackendCatalog.Availability(n) ?? "can run"),
                    backend_auto = BackendCatalog.AutoRule,
                    layer1_kernels = BackendCatalog.Backends.ToDictionary(n => n, BackendCatalog.KernelsOf),
                    kernel_auto = KernelAutoRule,
                }, JsonOutput.Options));
                return ExitCodes.Ok;
            }
            Out.WriteLine($"CPU: {MachineInfo()["cpu"]}");
            foreach (string line in CpuFeatures.Describe()) Out.WriteLine(line);
            Out.WriteLine();
            if (openCl)
            {
                Out.WriteLine($"OpenCL: {devices.Count} device{(devices.Count == 1 ? "" : "s")} " +
                    "(select with --backend opencl --device P:D or part of the name)");
                foreach (OpenClDeviceInfo d in devices) Out.WriteLine($"  {d}");
            }
            else Out.WriteLine($"OpenCL: none ({openClReason})");
            Out.WriteLine();
            Out.WriteLine("Backends:");
            foreach (string name in BackendCatalog.Backends)
                Out.WriteLine($"  {name,-8} {BackendCatalog.Availability(name) ?? "can run"}");
            Out.WriteLine($"  {BackendCatalog.AutoRule}");
            Out.WriteLine();
            string sparseOn = BackendCatalog.SparseBackendList("and") + " (its CPU variant)";
            Out.WriteLine($"Layer-1 kernels: dense and sparse on {sparseOn}, dense elsewhere " +
                "(--kernel dense|sparse|auto on train and bench).");
            Out.WriteLine($"  {KernelAutoRule}");
            return ExitCodes.Ok;
        }));
        return command;
    }
}

using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Filters;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;

namespace MnistNative.Benchmarks;

public static class Program
{
    /// <summary>
    /// dotnet run -c Release -- --filter "*Training*" [--artifacts DIR]. Few, long iterations: one scalar step
    /// at H = 128 takes about a second, and the machine is shared, so medians over 10 iterations are reported.
    /// dotnet run -c Release -- --filter "*Inference*": MnistClassifier, the C ABI (libmnistnative.so from
    /// MNISTNATIVE_NATIVE_LIB or artifacts/native) and ONNX Runtime; the C ABI rows are left out when the library is
    /// missing.
    /// </summary>
    public static void Main(string[] args)
    {
        // DefaultConfig already exports GitHub markdown, CSV and HTML tables into the artifacts' results folder.
        // MNISTNATIVE_BENCH_INPROCESS=1 runs in this process (no per-benchmark project build, which took minutes on
        // the shared machine); the build timeout is raised for the same reason.
        Job job = Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(10);
        if (Environment.GetEnvironmentVariable("MNISTNATIVE_BENCH_INPROCESS") == "1")
            job = job.WithToolchain(BenchmarkDotNet.Toolchains.InProcess.Emit.InProcessEmitToolchain.Instance);
        IConfig config = DefaultConfig.Instance
            .AddJob(job)
            .WithBuildTimeout(TimeSpan.FromMinutes(15))
            .WithOptions(ConfigOptions.DisableOptimizationsValidator);
        string lib = InferenceBenchmarks.NativeLibPath;
        if (File.Exists(lib))
        {
            // the benchmark processes start elsewhere
            Environment.SetEnvironmentVariable("MNISTNATIVE_NATIVE_LIB", Path.GetFullPath(lib));
        }
        else
        {
            Console.WriteLine($"C ABI benchmarks skipped: {lib} not found "
                + "(run ./build.sh --target=Native or set MNISTNATIVE_NATIVE_LIB)");
            config = config.AddFilter(
                new SimpleFilter(b => !b.Descriptor.Categories.Contains(InferenceBenchmarks.CAbiCategory)));
        }
        string model = InferenceBenchmarks.ModelPath;
        if (File.Exists(model)) Environment.SetEnvironmentVariable("MNISTNATIVE_BENCH_MODEL", Path.GetFullPath(model));
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
    }
}

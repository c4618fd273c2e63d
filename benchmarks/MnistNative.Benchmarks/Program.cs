using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Exporters.Csv;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;

namespace MnistNative.Benchmarks;

public static class Program
{
    /// <summary>
    /// dotnet run -c Release -- --filter "*Training*" [--artifacts DIR]. Few, long iterations: one scalar step
    /// at H = 128 takes about a second, and the machine is shared, so medians over 10 iterations are reported.
    /// </summary>
    public static void Main(string[] args)
    {
        IConfig config = DefaultConfig.Instance
            .AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(10))
            .AddExporter(MarkdownExporter.GitHub, CsvExporter.Default)
            .WithOptions(ConfigOptions.DisableOptimizationsValidator);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
    }
}

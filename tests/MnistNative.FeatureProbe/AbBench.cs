using System.Diagnostics;
using System.Reflection;
using System.Runtime.Loader;
using MnistNative.Core;
using MnistNative.Data;

/// <summary>
/// `ab <mnist dir> <dirA> <dirB> <avx2|avx512> <hidden> <threads> [rounds] [iterations]`: interleaved A/B
/// timing of two builds of MnistNative.Backends.Cpu.dll (e.g. a baseline commit and the working tree) in
/// one process. Each build is loaded into its own AssemblyLoadContext (MnistNative.Core is shared, so both
/// are IFullBatchBackend); rounds alternate A, B, A, B... so both see the same machine load, and the
/// per-round ms/iteration are summarised as median and min. With AB_PREDICT=1 the rounds time Predict over the
/// 10,000 test images instead of training steps.
/// </summary>
internal static class AbBench
{
    private sealed class Context(string dir) : AssemblyLoadContext(Path.GetFileName(dir), isCollectible: false)
    {
        protected override Assembly? Load(AssemblyName name) =>
            name.Name == "MnistNative.Backends.Cpu" ? LoadFromAssemblyPath(Path.Combine(dir, name.Name + ".dll")) : null;
    }

    private const double TicksPerSecond = 100; // USER_HZ

    private struct Timespec { public long Seconds, Nanoseconds; }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out Timespec t);

    /// <summary>CPU time of the calling thread in ms (CLOCK_THREAD_CPUTIME_ID): excludes time descheduled by other load.</summary>
    public static double ThreadCpuMs()
    {
        ClockGetTime(3, out Timespec t);
        return t.Seconds * 1e3 + t.Nanoseconds / 1e6;
    }

    /// <summary>
    /// Busy CPU time of the whole machine and of this process, in clock ticks (/proc/stat, /proc/self/stat). The
    /// machine is shared with other tenants whose processes this one cannot see; the difference over a round is
    /// what they ran meanwhile, so rounds they disturbed can be set aside.
    /// </summary>
    public static (long Machine, long Self) BusyTicks()
    {
        string[] cpu = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        long machine = 0;
        for (int i = 1; i < cpu.Length && i <= 8; i++) if (i != 4 && i != 5) machine += long.Parse(cpu[i]); // all but idle, iowait
        string stat = File.ReadAllText("/proc/self/stat");
        string[] f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (machine, long.Parse(f[11]) + long.Parse(f[12])); // utime, stime (fields 14, 15)
    }

    public static void Run(string[] args)
    {
        var mnist = MnistFiles.Load(args[1]);
        LabeledImages data = mnist.Train.Take(10_000);
        // AB_PREDICT=1: time Predict over the 10,000 test images (forward only, softmax out) instead of Step
        bool predict = Environment.GetEnvironmentVariable("AB_PREDICT") == "1";
        byte[] testImages = mnist.Test.Pixels;
        var probabilities = new double[mnist.Test.Count * 10];
        string backend = args[4];
        int hidden = int.Parse(args[5]), threads = int.Parse(args[6]);
        int rounds = args.Length > 7 ? int.Parse(args[7]) : 10, iterations = args.Length > 8 ? int.Parse(args[8]) : 10;
        var dirs = new[] { Path.GetFullPath(args[2]), Path.GetFullPath(args[3]) };
        var backends = new IFullBatchBackend[2];
        for (int v = 0; v < 2; v++)
        {
            Assembly asm = new Context(dirs[v]).LoadFromAssemblyPath(Path.Combine(dirs[v], "MnistNative.Backends.Cpu.dll"));
            Type t = asm.GetType(backend == "avx512" ? "MnistNative.Backends.Cpu.Simd.Avx512Backend" : "MnistNative.Backends.Cpu.Simd.Avx2Backend")!;
            backends[v] = (IFullBatchBackend)Activator.CreateInstance(t, hidden, threads)!;
            if (Environment.GetEnvironmentVariable("AB_VERBOSE") == "1") Console.WriteLine($"{(v == 0 ? "A" : "B")}: {asm.Location} in {AssemblyLoadContext.GetLoadContext(asm)!.Name}, MVID {asm.ManifestModule.ModuleVersionId}");
            backends[v].Upload(data);
            backends[v].SetWeights(MlpParameters.Initialize([784, hidden, 10], 0));
            for (int i = 0; i < 10; i++) backends[v].Step(0.1, false);
        }
        var times = new List<double>[] { new(), new() };
        var cpu = new List<double>[] { new(), new() };
        var quiet = new List<double>[] { new(), new() };
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < 2; v++)
            {
                double c0 = ThreadCpuMs();
                (long m0, long s0) = BusyTicks();
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < iterations; i++)
                    if (predict) backends[v].Predict(testImages, probabilities);
                    else backends[v].Step(0.1, false);
                double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                (long m1, long s1) = BusyTicks();
                times[v].Add(ms / iterations);
                cpu[v].Add((ThreadCpuMs() - c0) / iterations);
                // other tenants' share of the machine during the round (ticks are 10 ms: use rounds of 100 ms or more)
                double others = ((m1 - m0) - (s1 - s0)) * 1000.0 / TicksPerSecond / (ms * Environment.ProcessorCount);
                if (others < 0.05) quiet[v].Add(ms / iterations);
            }
        double flop = predict ? 2.0 * mnist.Test.Count * hidden * 784 : 4.0 * data.Count * hidden * 784;
        for (int v = 0; v < 2; v++)
        {
            double[] s = times[v].Order().ToArray();
            double median = s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
            double[] c = cpu[v].Order().ToArray();
            string cpuText = threads == 1 ? $"; caller CPU time median {c[c.Length / 2]:F3}, min {c[0]:F3}" : "";
            double[] q = quiet[v].Order().ToArray();
            cpuText += q.Length > 0 ? $"; quiet rounds {q.Length}/{s.Length}: median {q[q.Length / 2]:F3}, min {q[0]:F3}" : "; no quiet rounds";
            Console.WriteLine($"{(v == 0 ? "A" : "B")} {backend} H={hidden} threads={threads}: wall median {median:F3} ms/iteration, min {s[0]:F3}, {flop / (median * 1e6):F1} GFLOP/s{cpuText}  ({Path.GetFileName(dirs[v])})");
            backends[v].Dispose();
        }
    }

    /// <summary>
    /// `abdeep <mnist dir> <dirA> <dirB> <avx2|avx512> <hidden,list> <batch> <threads> [rounds] [steps]`: the same
    /// interleaved A/B for the deep mini-batch backend (DeepSimd.Create, Adam), on consecutive batches of a fixed
    /// shuffle of the 60,000 training images.
    /// </summary>
    public static void RunDeep(string[] args)
    {
        LabeledImages data = MnistFiles.Load(args[1]).Train;
        string width = args[4];
        int[] sizes = [784, .. args[5].Split(',').Select(int.Parse), 10];
        int batch = int.Parse(args[6]), threads = int.Parse(args[7]);
        int rounds = args.Length > 8 ? int.Parse(args[8]) : 10, steps = args.Length > 9 ? int.Parse(args[9]) : 50;
        var dirs = new[] { Path.GetFullPath(args[2]), Path.GetFullPath(args[3]) };
        var backends = new IMiniBatchBackend[2];
        var order = Enumerable.Range(0, data.Count).OrderBy(i => (i * 2654435761u) % 60013).ToArray();
        int cursor = 0;
        void Steps(IMiniBatchBackend b, int count)
        {
            for (int i = 0; i < count; i++)
            {
                if (cursor + batch > order.Length) cursor = 0;
                b.StepBatch(order.AsSpan(cursor, batch), 1e-3, false);
                cursor += batch;
            }
        }
        for (int v = 0; v < 2; v++)
        {
            Assembly asm = new Context(dirs[v]).LoadFromAssemblyPath(Path.Combine(dirs[v], "MnistNative.Backends.Cpu.dll"));
            MethodInfo create = asm.GetType("MnistNative.Backends.Cpu.Deep.DeepSimd")!.GetMethod("Create")!;
            backends[v] = (IMiniBatchBackend)create.Invoke(null, [sizes, new OptimizerSettings(OptimizerKind.Adam), batch, threads, width])!;
            backends[v].Upload(data);
            backends[v].SetWeights(MlpParameters.Initialize(sizes, 0));
            Steps(backends[v], 20);
        }
        var times = new List<double>[] { new(), new() };
        var cpu = new List<double>[] { new(), new() };
        for (int r = 0; r < rounds; r++)
            for (int v = 0; v < 2; v++)
            {
                double c0 = ThreadCpuMs();
                long t0 = Stopwatch.GetTimestamp();
                Steps(backends[v], steps);
                times[v].Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds / steps);
                cpu[v].Add((ThreadCpuMs() - c0) / steps);
            }
        for (int v = 0; v < 2; v++)
        {
            double[] s = times[v].Order().ToArray();
            double[] c = cpu[v].Order().ToArray();
            string cpuText = threads == 1 ? $"; caller CPU time median {c[c.Length / 2]:F3}, min {c[0]:F3}" : "";
            Console.WriteLine($"{(v == 0 ? "A" : "B")} {width} {string.Join('-', sizes)} batch {batch} threads={threads}: wall median {s[s.Length / 2]:F3} ms/step, min {s[0]:F3}{cpuText}  ({dirs[v]})");
            backends[v].Dispose();
        }
    }
}

// MnistNative build script (Cake). Run through ./build.sh, which installs what a fresh machine lacks.
//   ./build.sh --target=Train     fetch MNIST, build in Release, train the seed configuration, classify the test set
//                                 with the trained model through the C ABI (NativeAOT library + C example)
//   ./build.sh --target=Native    publish libmnistnative.so (NativeAOT) and build native/examples/classify.c
//   ./build.sh --target=Test      run the test suite (all but the Long and Soak categories) and write TRX results
//   ./build.sh --target=Lint      code style (.editorconfig): dotnet format --verify-no-changes, C# lines <= 120 chars
//   ./build.sh --target=Soak      the soak test alone (8 threads predict for 60 s while the model is reloaded)
//   ./build.sh --target=Data      fetch and verify MNIST into data/mnist
//   ./build.sh --target=Bench     BenchmarkDotNet suite (--bench-filter="*Training*"); tables in artifacts/benchmarks
//   ./build.sh --target=Compare   the seed's numpy run side by side with `mnistnative train` on each backend
//   ./build.sh --target=ServeLoad bounded wrk load on `mnistnative serve` over loopback (benchmarks/serve/load.sh;
//                                 --load-args="--seconds 10 --connections 8 --rounds 3 --model F.npz")
//   ./build.sh --target=Fuzz      SharpFuzz + AFL++ on each parser for --fuzz-seconds=N (default 60) each, one at a time;
//                                 --fuzz-targets=idx,npz,... picks some; findings in artifacts/fuzz (see docs/reliability.md)
// Arguments: --configuration=Release|Debug, --train-args="..." (extra flags for Train), --filter="..." (Test),
//   --backends=scalar,avx2,avx512,opencl, --kernels=auto|dense,sparse and --iterations=N (Compare).

var target = Argument("target", "Train");
var configuration = Argument("configuration", "Release");
var trainArgs = Argument("train-args", "");
var testFilter = Argument("filter", "Category!=Long&Category!=Soak");
var solution = "./MnistNative.sln";
var cliProject = "./src/MnistNative.Cli/MnistNative.Cli.csproj";
var artifacts = MakeAbsolute(Directory("./artifacts"));
var cliDll = $"./src/MnistNative.Cli/bin/{configuration}/net10.0/mnistnative.dll";

Task("Restore").Does(() => DotNetRestore(solution));

Task("Build").IsDependentOn("Restore").Does(() =>
{
    DotNetBuild(solution, new DotNetBuildSettings { Configuration = configuration, NoRestore = true });
});

Task("Data").IsDependentOn("Build").Does(() =>
{
    RunCli("data fetch");
    RunCli("data verify");
});

Task("Native").Does(() =>
{
    var output = artifacts.Combine("native");
    DotNetPublish("./src/MnistNative.Native/MnistNative.Native.csproj", new DotNetPublishSettings
    {
        Configuration = "Release",
        Runtime = "linux-x64",
        OutputDirectory = output,
    });
    if (StartProcess("bash", new ProcessSettings { Arguments = $"native/examples/build.sh {output}" }) != 0)
        throw new Exception("building native/examples/classify.c failed");
});

Task("Train").IsDependentOn("Data").IsDependentOn("Native").Does(() =>
{
    RunCli($"train {trainArgs}");
    // The same model through the C ABI: the NativeAOT library and the C example classify the test set.
    var mnist = MakeAbsolute(Directory("./data/mnist"));
    int code = StartProcess(artifacts.Combine("native").CombineWithFilePath("classify").FullPath, new ProcessSettings
    {
        Arguments = $"model.npz {mnist}/t10k-images-idx3-ubyte {mnist}/t10k-labels-idx1-ubyte",
    });
    if (code != 0) throw new Exception($"native/examples/classify exited with {code}");
});

const int MaxLineLength = 120; // .editorconfig's max_line_length for *.cs

// dotnet format (whitespace and the style rules .editorconfig sets to warning) on the solution, then no tracked
// *.cs line over MaxLineLength. Each offender is printed as path:line.
Task("Lint").IsDependentOn("Restore").Does(() =>
{
    var clock = System.Diagnostics.Stopwatch.StartNew();
    int formatCode = StartProcess("dotnet", new ProcessSettings
    {
        Arguments = $"format {solution} --verify-no-changes --no-restore",
    });
    Information($"Lint: dotnet format took {clock.Elapsed.TotalSeconds:F0} s");

    if (StartProcess("git", new ProcessSettings { Arguments = "ls-files -- \"*.cs\"", RedirectStandardOutput = true },
        out IEnumerable<string> tracked) != 0)
        throw new Exception("Lint: `git ls-files` failed; the line-length check needs a git checkout");
    var longLines = new List<string>();
    int checkedFiles = 0;
    // (a tracked file deleted in the working tree is not there to check)
    foreach (string path in tracked.Where(p => p.Length > 0 && System.IO.File.Exists(p)))
    {
        checkedFiles++;
        string[] lines = System.IO.File.ReadAllLines(path);
        for (int i = 0; i < lines.Length; i++)
            if (lines[i].Length > MaxLineLength)
                longLines.Add($"{path}:{i + 1}: {lines[i].Length} characters");
    }
    foreach (string line in longLines) Console.WriteLine(line);
    Information($"Lint: {checkedFiles} C# files checked for lines over {MaxLineLength} characters: "
        + $"{longLines.Count} found");

    if (formatCode != 0)
        throw new Exception("dotnet format found code that does not follow .editorconfig (listed above); "
            + $"run `dotnet format {solution}` to fix it");
    if (longLines.Count > 0)
        throw new Exception($"{longLines.Count} C# line{(longLines.Count == 1 ? " is" : "s are")} longer than "
            + $"{MaxLineLength} characters (listed above)");
});

Task("Test").IsDependentOn("Data").IsDependentOn("Lint").Does(() =>
{
    var results = artifacts.Combine("test-results");
    CleanDirectory(results);
    var settings = new DotNetTestSettings
    {
        Configuration = configuration,
        NoBuild = true,
        Filter = testFilter,
        ResultsDirectory = results,
        Loggers = { "trx;LogFileName=tests.trx", "console;verbosity=normal" },
    };
    Exception failure = null;
    try { DotNetTest(solution, settings); }
    catch (Exception e) { failure = e; }
    PrintCounts(results);
    if (failure != null) throw failure;
});

// The Soak category: a minute of mixed inference calls against a model reloaded every second (SoakTests);
// its figures (calls, reloads, GC heap and RSS) are in the console log.
Task("Soak").IsDependentOn("Data").Does(() =>
{
    DotNetTest("./tests/MnistNative.Tests/MnistNative.Tests.csproj", new DotNetTestSettings
    {
        Configuration = configuration,
        NoBuild = true,
        Filter = "Category=Soak",
        Loggers = { "console;verbosity=detailed" },
    });
});

Task("Bench").IsDependentOn("Data").IsDependentOn("Native").Does(() =>
{
    var output = artifacts.Combine("benchmarks");
    int code = StartProcess("dotnet", new ProcessSettings
    {
        Arguments = $"run -c Release --project ./benchmarks/MnistNative.Benchmarks/MnistNative.Benchmarks.csproj -- --filter \"{Argument("bench-filter", "*")}\" --artifacts \"{output}\"",
    });
    if (code != 0) throw new Exception($"the benchmarks exited with {code}");
    Information($"Tables (markdown, CSV) are in {output}/results");
});

Task("Compare").IsDependentOn("Data").Does(() =>
{
    var iterations = Argument("iterations", 1000);
    var backends = Argument("backends", "scalar,avx2,avx512,opencl").Split(',', StringSplitOptions.RemoveEmptyEntries);
    // --kernels=dense,sparse runs avx2/avx512/opencl once per layer-1 kernel (scalar has only dense ones)
    var kernels = Argument("kernels", "auto").Split(',', StringSplitOptions.RemoveEmptyEntries);
    string python = "/usr/bin/python3";
    // Debian's numpy runs on whichever libblas.so.3 is installed; the reference BLAS makes the seed ~7x slower
    // (about 100 ms per iteration here instead of 15), so OpenBLAS comes with it.
    if (StartProcess(python, new ProcessSettings { Arguments = "-c \"import numpy\"", Silent = true }) != 0
        || !System.IO.Directory.Exists("/usr/lib/x86_64-linux-gnu/openblas-pthread"))
    {
        Information("Compare: installing Debian's python3-numpy and libopenblas0-pthread (apt-get)");
        if (StartProcess("bash", new ProcessSettings { Arguments = "-c \"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-numpy libopenblas0-pthread >/dev/null\"" }) != 0)
            throw new Exception("could not install python3-numpy and libopenblas0-pthread; install them (sudo apt-get install python3-numpy libopenblas0-pthread) and run Compare again");
    }
    EnsureDirectoryExists(artifacts);
    var dataDir = MakeAbsolute(Directory("./data/mnist")).FullPath;
    var rows = new List<(string Name, double Ms, double Accuracy)>();
    var numpy = RunJson(python, $"benchmarks/reference/seed_numpy.py {dataDir} --iterations {iterations} --json");
    rows.Add(("numpy (seed, float64)", numpy.GetProperty("ms_per_iteration").GetDouble(), numpy.GetProperty("test_accuracy").GetDouble()));
    Information($"numpy {numpy.GetProperty("numpy").GetString()} with BLAS {numpy.GetProperty("blas").GetString()}");
    foreach (var backend in backends)
        foreach (var kernel in backend is "avx2" or "avx512" or "opencl" ? kernels : new[] { "auto" })
        {
            try
            {
                var run = RunJson("dotnet", $"{cliDll} train --backend {backend} --kernel {kernel} --iterations {iterations} --out {artifacts}/compare-{backend}-{kernel}.npz --json");
                rows.Add(($"mnistnative {backend} {run.GetProperty("kernel").GetString()} ({run.GetProperty("precision").GetString()}, {run.GetProperty("threads").GetInt32()} threads)",
                    run.GetProperty("ms_per_iteration").GetDouble(), run.GetProperty("test_accuracy").GetDouble()));
            }
            catch (Exception e) { Warning($"{backend} --kernel {kernel}: skipped ({e.Message})"); }
        }
    double baseline = rows[0].Ms;
    Console.WriteLine();
    Console.WriteLine($"{"run",-44} {"ms/iteration",13} {"vs numpy",9} {"test acc",9}");
    foreach (var r in rows)
        Console.WriteLine($"{r.Name,-44} {r.Ms,13:F3} {baseline / r.Ms,8:F1}x {r.Accuracy,9:F4}");
});

Task("ServeLoad").IsDependentOn("Data").Does(() =>
{
    int code = StartProcess("bash", new ProcessSettings { Arguments = $"benchmarks/serve/load.sh {Argument("load-args", "")}" });
    if (code != 0) throw new Exception($"benchmarks/serve/load.sh exited with {code}");
});

// The parsers under AFL++ (SharpFuzz instruments the assemblies that read untrusted bytes). Each target runs alone
// for --fuzz-seconds, from its committed corpus tests/fuzz/TARGET; crashes and hangs end the task with their paths.
Task("Fuzz").Does(() =>
{
    int seconds = Argument("fuzz-seconds", 60);
    int timeoutMs = Argument("fuzz-timeout-ms", 1000);
    var targets = Argument("fuzz-targets", "idx,idx-gz,npz,checkpoint,png,load-memory")
        .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    string fuzzProject = "./tests/MnistNative.Fuzz/MnistNative.Fuzz.csproj";
    var root = artifacts.Combine("fuzz");
    var bin = root.Combine("bin");
    CleanDirectory(bin);
    DotNetPublish(fuzzProject, new DotNetPublishSettings { Configuration = "Release", OutputDirectory = bin });
    // The uninstrumented build replays findings: instrumented code needs AFL's shared memory to run.
    DotNetBuild(fuzzProject, new DotNetBuildSettings { Configuration = "Release" });
    string replayDll = "./tests/MnistNative.Fuzz/bin/Release/net10.0/MnistNative.Fuzz.dll";
    foreach (string assembly in new[] { "MnistNative.Formats.dll", "MnistNative.Data.dll", "MnistNative.Inference.dll",
        "libmnistnative.dll" })
    {
        if (StartProcess("dotnet", new ProcessSettings { Arguments = $"tool run sharpfuzz {bin.CombineWithFilePath(assembly)}" }) != 0)
            throw new Exception($"sharpfuzz could not instrument {assembly}");
    }
    var environment = new Dictionary<string, string>
    {
        ["AFL_SKIP_BIN_CHECK"] = "1",                    // dotnet itself is not instrumented; the assemblies are
        ["AFL_NO_UI"] = "1",
        ["AFL_SKIP_CPUFREQ"] = "1",
        ["AFL_NO_AFFINITY"] = "1",                       // a shared machine: do not pin a core
        ["AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES"] = "1", // containers cannot set core_pattern
        // A huge allocation is a finding: a 512 MiB GC heap turns one into an OutOfMemoryException (a crash).
        ["DOTNET_GCHeapHardLimit"] = "0x20000000",
    };
    var summary = new List<string> { "| target | seconds | executions | execs/s | corpus | crashes | hangs |", "|---|---|---|---|---|---|---|" };
    var findings = new List<string>();
    foreach (string target in targets)
    {
        var output = root.Combine(target);
        if (DirectoryExists(output)) DeleteDirectory(output, new DeleteDirectorySettings { Recursive = true, Force = true });
        Information($"Fuzz: {target} for {seconds} s (log: {output}.log)");
        string dictionary = $"tests/MnistNative.Fuzz/dictionaries/{FuzzDictionary(target)}.dict";
        string command = $"afl-fuzz -i tests/fuzz/{target} -o {output} -x {dictionary} -t {timeoutMs} -V {seconds} -- "
            + $"dotnet {bin.CombineWithFilePath("MnistNative.Fuzz.dll")} {target} > {output}.log 2>&1";
        int code = StartProcess("bash", new ProcessSettings { Arguments = $"-c \"{command}\"", EnvironmentVariables = environment });
        var statsFile = output.Combine("default").CombineWithFilePath("fuzzer_stats");
        if (code != 0 || !FileExists(statsFile))
            throw new Exception($"afl-fuzz on {target} exited with {code}; see {output}.log");
        var stats = System.IO.File.ReadAllLines(statsFile.FullPath).Select(l => l.Split(':', 2))
            .Where(p => p.Length == 2).ToDictionary(p => p[0].Trim(), p => p[1].Trim());
        summary.Add($"| {target} | {stats["run_time"]} | {stats["execs_done"]} | {stats["execs_per_sec"]} | {stats["corpus_count"]} "
            + $"| {stats["saved_crashes"]} | {stats["saved_hangs"]} |");
        foreach (string kind in new[] { "crashes", "hangs" })
        {
            var files = GetFiles($"{output}/default/{kind}/id*").Select(f => f.FullPath).ToList();
            if (files.Count == 0) continue;
            findings.AddRange(files.Select(f => $"{target} {kind}: {f}"));
            StartProcess("dotnet", new ProcessSettings { Arguments = $"{replayDll} replay {target} {string.Join(" ", files.Select(f => $"\"{f}\""))}" });
        }
    }
    System.IO.File.WriteAllLines(root.CombineWithFilePath("summary.md").FullPath, summary);
    foreach (string line in summary) Console.WriteLine(line);
    if (findings.Count > 0)
        throw new Exception($"{findings.Count} findings (copy each reproducer into tests/fuzz/TARGET/):\n{string.Join("\n", findings)}");
});

// The AFL++ dictionary (tests/MnistNative.Fuzz/dictionaries) of the format each target reads.
string FuzzDictionary(string target) => target switch
{
    "idx" or "idx-gz" => "idx",
    "png" => "png",
    _ => "npy",
};

Task("Default").IsDependentOn("Train");

RunTarget(target);

void RunCli(string arguments)
{
    int code = StartProcess("dotnet", new ProcessSettings { Arguments = $"{cliDll} {arguments}" });
    if (code != 0) throw new Exception($"mnistnative {arguments} exited with {code}");
}

System.Text.Json.JsonElement RunJson(string tool, string arguments)
{
    int code = StartProcess(tool, new ProcessSettings { Arguments = arguments, RedirectStandardOutput = true }, out IEnumerable<string> stdout);
    if (code != 0) throw new Exception($"{tool} {arguments} exited with {code}");
    return System.Text.Json.JsonDocument.Parse(string.Join("\n", stdout)).RootElement.Clone();
}

// One line from the TRX files: N passed, N failed, N skipped.
void PrintCounts(DirectoryPath results)
{
    int passed = 0, failed = 0, total = 0;
    foreach (var trx in GetFiles(results.FullPath + "/**/*.trx"))
    {
        var counters = System.Xml.Linq.XDocument.Load(trx.FullPath).Descendants().First(e => e.Name.LocalName == "Counters");
        total += int.Parse(counters.Attribute("total").Value);
        passed += int.Parse(counters.Attribute("passed").Value);
        failed += int.Parse(counters.Attribute("failed").Value);
    }
    Console.WriteLine($"{passed} passed, {failed} failed, {total - passed - failed} skipped");
}

// MnistNative build script (Cake). Run through ./build.sh, which installs what a fresh machine lacks.
//   ./build.sh --target=Train     fetch MNIST, build in Release, train the seed configuration
//   ./build.sh --target=Test      run the test suite (all but the Long category) and write TRX results
//   ./build.sh --target=Data      fetch and verify MNIST into data/mnist
// Arguments: --configuration=Release|Debug, --train-args="..." (extra flags for Train), --filter="..." (Test).

var target = Argument("target", "Train");
var configuration = Argument("configuration", "Release");
var trainArgs = Argument("train-args", "");
var testFilter = Argument("filter", "Category!=Long");
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

Task("Train").IsDependentOn("Data").Does(() =>
{
    RunCli($"train {trainArgs}");
});

Task("Test").IsDependentOn("Data").Does(() =>
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

Task("Default").IsDependentOn("Train");

RunTarget(target);

void RunCli(string arguments)
{
    int code = StartProcess("dotnet", new ProcessSettings { Arguments = $"{cliDll} {arguments}" });
    if (code != 0) throw new Exception($"mnistnative {arguments} exited with {code}");
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
    Information($"{passed} passed, {failed} failed, {total - passed - failed} skipped");
}

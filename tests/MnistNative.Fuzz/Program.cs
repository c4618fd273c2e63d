using MnistNative.Fuzz;
using SharpFuzz;

// afl-fuzz ... -- dotnet MnistNative.Fuzz.dll TARGET       (the assemblies under test instrumented by `sharpfuzz`)
// dotnet MnistNative.Fuzz.dll replay TARGET FILE...          (runs inputs through the harness, e.g. crash triage)
// dotnet MnistNative.Fuzz.dll seeds tests/fuzz              (writes the starting corpus, seed-* in each target)
if (args is [var name] && FuzzTargets.All.TryGetValue(name, out var target))
{
    // Out of process: SharpFuzz runs the target in a child, so a crash that kills the process is still reported.
    Fuzzer.OutOfProcess.Run(stream =>
    {
        using var input = new MemoryStream();
        stream.CopyTo(input);
        target(input.ToArray());
    });
    return 0;
}
if (args is ["seeds", var corpusRoot])
{
    Seeds.Write(corpusRoot);
    return 0;
}
if (args is ["replay", var replayName, .. var files] && FuzzTargets.All.TryGetValue(replayName, out var replay))
{
    int findings = 0;
    foreach (string file in files)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            FuzzOutcome outcome = replay(File.ReadAllBytes(file));
            Console.WriteLine($"{file}: {outcome} ({clock.Elapsed.TotalMilliseconds:F1} ms)");
        }
        catch (Exception e)
        {
            findings++;
            Console.WriteLine($"{file}: FINDING {e.GetType().Name}: {e.Message}");
            Console.WriteLine(e.StackTrace);
        }
    }
    return findings == 0 ? 0 : 1;
}
Console.Error.WriteLine("usage: MnistNative.Fuzz TARGET | replay TARGET FILE... | seeds CORPUS_ROOT   "
    + $"(targets: {string.Join(", ", FuzzTargets.All.Keys)})");
return 2;

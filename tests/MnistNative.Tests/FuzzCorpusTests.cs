using System.Diagnostics;
using MnistNative.Fuzz;
using Xunit;

namespace MnistNative.Tests;

/// <summary>
/// Replays every committed fuzz input (tests/fuzz/TARGET/*: the seeds, the inputs AFL++ kept, and every crash
/// reproducer) through the fuzz targets' harness methods and checks their contract: the input loads or is
/// refused with the documented bad-input exception, within a second, without a huge allocation.
/// </summary>
public sealed class FuzzCorpusTests
{
    private static readonly string CorpusRoot = Path.Combine(TestPaths.RepoRoot, "tests", "fuzz");
    private static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(10);
    private const double MaxMilliseconds = 1000;
    private const long MaxAllocatedBytes = 64L << 20; // the corpus holds files of a few KB; a model of one is ~50 KB

    public static TheoryData<string, string> CorpusFiles()
    {
        var data = new TheoryData<string, string>();
        foreach (string target in FuzzTargets.All.Keys)
        {
            var files = Directory.EnumerateFiles(Path.Combine(CorpusRoot, target)).Order(StringComparer.Ordinal);
            foreach (string file in files) data.Add(target, Path.GetFileName(file));
        }
        return data;
    }

    [Fact]
    public void EveryTargetHasACorpusAndEveryCorpusFolderIsATarget()
    {
        string[] folders = Directory.EnumerateDirectories(CorpusRoot).Select(Path.GetFileName).Order().ToArray()!;
        Assert.Equal(FuzzTargets.All.Keys.Order(), folders);
        foreach (string target in FuzzTargets.All.Keys)
            Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(CorpusRoot, target)));
    }

    [Theory]
    [MemberData(nameof(CorpusFiles))]
    public void InputLoadsOrIsRefusedWithinASecondAndWithoutAHugeAllocation(string target, string file)
    {
        byte[] input = File.ReadAllBytes(Path.Combine(CorpusRoot, target, file));
        Func<byte[], FuzzOutcome> harness = FuzzTargets.All[target];
        // The first run pays for the JIT; the second is measured. A run on its own thread so a hang fails the
        // test instead of blocking the suite (an exception escaping the harness rethrows here: the finding).
        RunBounded(harness, input);
        var (elapsed, allocated) = RunBounded(harness, input);
        Assert.True(elapsed.TotalMilliseconds < MaxMilliseconds,
            $"{target}/{file}: took {elapsed.TotalMilliseconds:F0} ms");
        Assert.True(allocated < MaxAllocatedBytes, $"{target}/{file}: allocated {allocated} bytes");
    }

    private static (TimeSpan Elapsed, long Allocated) RunBounded(Func<byte[], FuzzOutcome> harness, byte[] input)
    {
        var run = Task.Factory.StartNew(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            var clock = Stopwatch.StartNew();
            harness(input);
            return (clock.Elapsed, GC.GetAllocatedBytesForCurrentThread() - before);
        }, TaskCreationOptions.LongRunning);
        Assert.True(run.Wait(HangLimit), $"the input did not finish within {HangLimit.TotalSeconds} s (a hang)");
        return run.Result;
    }
}

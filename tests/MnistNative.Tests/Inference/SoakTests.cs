using System.Diagnostics;
using MnistNative.Inference;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

/// <summary>
/// The inference core under a long, mixed load (not in the default run: `./build.sh --target=Soak`): 8 threads
/// call Predict / PredictBatch / Probabilities for a minute while another thread reloads the model every second,
/// alternating two model files of different shapes (the fused small kernels and the general path). Every answer
/// is checked against the answers of the model that gave it; no call may fail; the GC heap and the RSS at the end
/// must be within a bound of their values after the warm-up. MNISTNATIVE_SOAK_SECONDS shortens or lengthens it.
/// </summary>
public sealed class SoakTests(ITestOutputHelper output)
{
    private const int Workers = 8;
    private const int Classes = MnistClassifier.ClassCount;
    private const int Pixels = MnistClassifier.PixelCount;
    private const int Images = 1024;            // >= ParallelThreshold: PredictBatch takes the parallel path
    private const int SmallBatch = 16;          // and a batch under it takes the caller's thread
    private const long HeapGrowthBound = 8L << 20;
    private const long RssGrowthBound = 32L << 20;
    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(3);

    /// <summary>One loaded model, which of the two files it came from, and the calls running on it.</summary>
    private sealed class Lease(MnistClassifier model, int file)
    {
        public readonly MnistClassifier Model = model;
        public readonly int File = file;
        public int InFlight;
    }

    [Fact]
    [Trait("Category", "Soak")]
    public void EightThreadsPredictForAMinuteWhileTheModelIsReloadedEverySecond()
    {
        int seconds = int.TryParse(Environment.GetEnvironmentVariable("MNISTNATIVE_SOAK_SECONDS"), out int s) ? s : 60;
        byte[] images = InferenceFixtures.TestSet.Images.AsSpan(0, Images * Pixels).ToArray();
        string directory = Directory.CreateTempSubdirectory("mnistnative-soak-").FullName;
        try
        {
            string[] files = [Path.Combine(directory, "a.npz"), Path.Combine(directory, "b.npz")];
            int[][] shapes = [[784, 10, 10], [784, 64, 32, 10]];
            for (int f = 0; f < 2; f++)
            {
                var (w, b) = InferenceFixtures.RandomModel(shapes[f], seed: 40 + f);
                File.WriteAllBytes(files[f], InferenceFixtures.NpzBytes(shapes[f], w, b, float32: false));
            }
            var known = files.Select(f => KnownAnswers(f, images)).ToArray();
            int differing = known[0].Labels.Zip(known[1].Labels).Count(p => p.First != p.Second);
            Assert.True(differing > Images / 4, $"the two models agree on {Images - differing} of {Images} images; "
                + "the test could not tell which one answered");
            Run(seconds, files, images, known);
        }
        finally { Directory.Delete(directory, recursive: true); }
    }

    private sealed record Answers(int[] Labels, float[] Probabilities);

    private static Answers KnownAnswers(string file, byte[] images)
    {
        using MnistClassifier model = MnistClassifier.Load(file);
        var labels = new int[Images];
        var probabilities = new float[Images * Classes];
        for (int i = 0; i < Images; i++)
        {
            labels[i] = model.Predict(Image(images, i));
            model.Probabilities(Image(images, i), probabilities.AsSpan(i * Classes, Classes));
        }
        return new Answers(labels, probabilities);
    }

    private static ReadOnlySpan<byte> Image(byte[] images, int i) =>
        images.AsSpan(i * Pixels, Pixels);

    private void Run(int seconds, string[] files, byte[] images, Answers[] known)
    {
        Lease current = new(MnistClassifier.Load(files[0]), 0);
        var stop = new CancellationTokenSource();
        long calls = 0, wrong = 0, failed = 0, reloads = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();

        Lease Acquire()
        {
            while (true)
            {
                Lease lease = Volatile.Read(ref current);
                Interlocked.Increment(ref lease.InFlight);
                if (ReferenceEquals(lease, Volatile.Read(ref current))) return lease;
                Interlocked.Decrement(ref lease.InFlight); // swapped meanwhile: its reloader may be disposing it
            }
        }

        void Work(int worker)
        {
            var labels = new int[Images];
            Span<float> probabilities = stackalloc float[Classes];
            for (long n = worker; !stop.IsCancellationRequested; n++)
            {
                Lease lease = Acquire();
                try
                {
                    Answers expected = known[lease.File];
                    int image = (int)(n * 7919 % Images);
                    bool right;
                    switch (n % 4)
                    {
                        case 0:
                            right = lease.Model.Predict(Image(images, image)) == expected.Labels[image];
                            break;
                        case 1:
                            lease.Model.Probabilities(Image(images, image), probabilities);
                            ReadOnlySpan<float> known = expected.Probabilities.AsSpan(image * Classes, Classes);
                            right = probabilities.SequenceEqual(known);
                            break;
                        case 2:
                            lease.Model.PredictBatch(images, labels);
                            right = labels.AsSpan().SequenceEqual(expected.Labels);
                            break;
                        default:
                            int first = image % (Images - SmallBatch);
                            Span<int> few = labels.AsSpan(0, SmallBatch);
                            lease.Model.PredictBatch(images.AsSpan(first * Pixels, SmallBatch * Pixels), few);
                            right = few.SequenceEqual(expected.Labels.AsSpan(first, SmallBatch));
                            break;
                    }
                    Interlocked.Increment(ref calls);
                    if (!right)
                    {
                        Interlocked.Increment(ref wrong);
                        failures.Enqueue($"call {n % 4} on model {lease.File}: wrong answer");
                    }
                }
                catch (Exception e)
                {
                    Interlocked.Increment(ref failed);
                    failures.Enqueue($"call {n % 4} on model {lease.File}: {e.GetType().Name}: {e.Message}");
                }
                finally { Interlocked.Decrement(ref lease.InFlight); }
            }
        }

        void Reload()
        {
            // At a fixed rate (the k-th reload at k seconds), so a slow reload on a busy machine is not compounded.
            var schedule = Stopwatch.StartNew();
            for (int next = 1, k = 1; ; next ^= 1, k++)
            {
                TimeSpan wait = TimeSpan.FromSeconds(k) - schedule.Elapsed;
                if (stop.Token.WaitHandle.WaitOne(wait > TimeSpan.Zero ? wait : TimeSpan.Zero)) return;
                Lease fresh = new(MnistClassifier.Load(files[next]), next);
                Lease old = Interlocked.Exchange(ref current, fresh);
                SpinWait.SpinUntil(() => Volatile.Read(ref old.InFlight) == 0);
                old.Model.Dispose();
                Interlocked.Increment(ref reloads);
            }
        }

        var threads = Enumerable.Range(0, Workers).Select(w => new Thread(() => Work(w)) { IsBackground = true })
            .Append(new Thread(Reload) { IsBackground = true }).ToList();
        threads.ForEach(t => t.Start());
        var clock = Stopwatch.StartNew();
        Thread.Sleep(WarmUp);
        var (heapStart, rssStart) = Memory();
        output.WriteLine($"after {WarmUp.TotalSeconds:F0} s: GC heap {heapStart / 1e6:F1} MB, "
            + $"RSS {rssStart / 1e6:F1} MB");
        for (TimeSpan left; (left = TimeSpan.FromSeconds(seconds) - clock.Elapsed) > TimeSpan.Zero;)
        {
            Thread.Sleep(left < TimeSpan.FromSeconds(10) ? left : TimeSpan.FromSeconds(10));
            output.WriteLine($"{clock.Elapsed.TotalSeconds:F0} s: {Interlocked.Read(ref calls)} calls, "
                + $"{Interlocked.Read(ref reloads)} reloads, RSS {Rss() / 1e6:F1} MB");
        }
        stop.Cancel();
        threads.ForEach(t => t.Join());
        current.Model.Dispose();
        var (heapEnd, rssEnd) = Memory();
        output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s, {Workers} threads: {calls} calls "
            + $"({calls / clock.Elapsed.TotalSeconds:F0}/s), {reloads} reloads, {wrong} wrong answers, "
            + $"{failed} failed calls");
        output.WriteLine($"end: GC heap {heapEnd / 1e6:F1} MB ({(heapEnd - heapStart) / 1e6:+0.0;-0.0} MB), "
            + $"RSS {rssEnd / 1e6:F1} MB ({(rssEnd - rssStart) / 1e6:+0.0;-0.0} MB)");
        foreach (string f in failures.Take(5)) output.WriteLine(f);

        Assert.Equal(0, failed);
        Assert.Equal(0, wrong);
        // Half the schedule: the bound a heavily shared CI machine still meets (the figures are in the log).
        Assert.True(reloads >= seconds / 2, $"only {reloads} reloads in {seconds} s");
        Assert.True(calls > 1000 * Workers, $"only {calls} calls");
        Assert.True(heapEnd - heapStart < HeapGrowthBound, $"the GC heap grew by {heapEnd - heapStart} bytes");
        Assert.True(rssEnd - rssStart < RssGrowthBound, $"the RSS grew by {rssEnd - rssStart} bytes");
    }

    private static (long Heap, long Rss) Memory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return (GC.GetTotalMemory(forceFullCollection: true), Rss());
    }

    private static long Rss()
    {
        using var self = Process.GetCurrentProcess();
        return self.WorkingSet64;
    }
}

using MnistNative.Backends.Cpu.Simd;
using Xunit;

namespace MnistNative.Tests;

/// <summary>
/// The persistent pool's hand-off: back-to-back jobs (workers spinning), jobs after a pause (workers and caller asleep
/// on their semaphores) and jobs arriving just as a waiter goes to sleep, every worker runs every job exactly once, a
/// worker's exception reaches the caller, and Dispose ends the threads whether they just finished a job or have been
/// idle.
/// </summary>
public class WorkerPoolTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void EveryWorkerRunsEveryJobOnceBackToBackOrAfterAPause(int count)
    {
        var runs = new int[count];
        using var pool = new WorkerPool(count, "test");
        Action<int> work = w => Interlocked.Increment(ref runs[w]);
        int jobs = 0;
        for (int round = 0; round < 6; round++)
        {
            for (int i = 0; i < 500; i++, jobs++) pool.Run(work);                   // back to back
            Thread.Sleep(20);               // a pause: everyone sleeps
            pool.Run(work); jobs++;
            Assert.All(runs, r => Assert.Equal(jobs, Volatile.Read(ref r)));
        }
    }

    [Fact]
    public async Task JobsArrivingAsTheWaitersGoToSleepAreNotLost()
    {
        // Pauses spread over twice the spin time, before a job (the worker goes to sleep) and inside worker 1's share
        // (the caller goes to sleep), hit the hand-off between spinning and sleeping on both sides. A lost wake-up
        // shows as a Run that never returns; the bound turns that hang into a failure.
        var runs = new int[2];
        var random = new Random(7);
        long maxPause = 2 * (long)(WorkerPool.SpinTime.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        long workerPause = 0;
        Action<int> work = w =>
        {
            if (w == 1) SpinFor(Volatile.Read(ref workerPause));
            Interlocked.Increment(ref runs[w]);
        };
        Task jobs = Task.Run(() =>
        {
            using var pool = new WorkerPool(2, "test");
            for (int job = 1; job <= 1500; job++)
            {
                SpinFor(random.NextInt64(maxPause));
                Volatile.Write(ref workerPause, job % 2 == 0 ? random.NextInt64(maxPause) : 0);
                pool.Run(work);
                Assert.Equal(job, Volatile.Read(ref runs[0]));
                Assert.Equal(job, Volatile.Read(ref runs[1]));
            }
        });
        Assert.True(await Task.WhenAny(jobs, Task.Delay(TimeSpan.FromSeconds(60))) == jobs,
            "a job was lost in the hand-off between spinning and sleeping");
        await jobs; // its assertions
    }

    private static void SpinFor(long ticks)
    {
        long until = System.Diagnostics.Stopwatch.GetTimestamp() + ticks;
        while (System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(4);
    }

    [Fact]
    public void TheCallerWaitsForASlowWorker()
    {
        int finished = 0;
        using var pool = new WorkerPool(2, "test");
        Action<int> work = w =>
        {
            if (w == 1) Thread.Sleep(20); // the caller has to block
            Interlocked.Increment(ref finished);
        };
        for (int i = 0; i < 5; i++)
        {
            pool.Run(work);
            Assert.Equal(2 * (i + 1), Volatile.Read(ref finished));
        }
    }

    [Fact]
    public void AWorkersExceptionReachesTheCallerAndThePoolStaysUsable()
    {
        bool fail = true;
        int ran = 0;
        using var pool = new WorkerPool(2, "test");
        Action<int> work = w =>
        {
            if (w == 1 && Volatile.Read(ref fail)) throw new InvalidOperationException("worker 1 failed");
            Interlocked.Increment(ref ran);
        };
        var e = Assert.Throws<InvalidOperationException>(() => pool.Run(work));
        Assert.Equal("worker 1 failed", e.Message);
        Volatile.Write(ref fail, false);
        pool.Run(work);
        Assert.Equal(3, Volatile.Read(ref ran));
    }

    [Fact]
    public void DisposeEndsBusyAndIdleWorkers()
    {
        // Dispose joins the worker threads, so a worker that missed the stop signal shows as a Dispose that does
        // not return; the bound turns that hang into a failure.
        static void DisposeWithin(WorkerPool pool, string when) =>
            Assert.True(Task.Run(pool.Dispose).Wait(TimeSpan.FromSeconds(30)), $"Dispose {when} did not return");
        var busy = new WorkerPool(2, "test");
        busy.Run(static _ => { });
        DisposeWithin(busy, "right after a job");
        var sleeping = new WorkerPool(2, "test");
        sleeping.Run(static _ => { });
        Thread.Sleep(20);
        DisposeWithin(sleeping, "of an idle pool, asleep on its semaphore");
        DisposeWithin(sleeping, "a second time (idempotent)");
    }
}

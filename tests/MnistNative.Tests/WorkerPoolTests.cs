using MnistNative.Backends.Cpu.Simd;
using Xunit;

namespace MnistNative.Tests;

/// <summary>
/// The persistent pool's hand-off: back-to-back jobs (workers still spinning), jobs after a pause longer than the
/// spin budget (workers and caller asleep on their semaphores), every worker runs every job exactly once, a
/// worker's exception reaches the caller, and Dispose ends the threads whether they spin or sleep.
/// </summary>
public class WorkerPoolTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void EveryWorkerRunsEveryJobOnceWhetherTheWorkersSpinOrSleep(int count)
    {
        var runs = new int[count];
        using var pool = new WorkerPool(count, w => Interlocked.Increment(ref runs[w]), "test");
        int jobs = 0;
        for (int round = 0; round < 6; round++)
        {
            for (int i = 0; i < 500; i++, jobs++) pool.Run();                   // back to back: spinning hand-offs
            Thread.Sleep(WorkerPool.SpinMicroseconds / 1000 + 5);               // past the budget: everyone sleeps
            pool.Run(); jobs++;
            Assert.All(runs, r => Assert.Equal(jobs, Volatile.Read(ref r)));
        }
    }

    [Fact]
    public void TheCallerWaitsForASlowWorkerPastTheSpinBudget()
    {
        int finished = 0;
        using var pool = new WorkerPool(2, w =>
        {
            if (w == 1) Thread.Sleep(WorkerPool.SpinMicroseconds / 1000 + 20); // the caller gives up spinning and sleeps
            Interlocked.Increment(ref finished);
        }, "test");
        for (int i = 0; i < 5; i++)
        {
            pool.Run();
            Assert.Equal(2 * (i + 1), Volatile.Read(ref finished));
        }
    }

    [Fact]
    public void AWorkersExceptionReachesTheCallerAndThePoolStaysUsable()
    {
        bool fail = true;
        int ran = 0;
        using var pool = new WorkerPool(2, w =>
        {
            if (w == 1 && Volatile.Read(ref fail)) throw new InvalidOperationException("worker 1 failed");
            Interlocked.Increment(ref ran);
        }, "test");
        var e = Assert.Throws<InvalidOperationException>(pool.Run);
        Assert.Equal("worker 1 failed", e.Message);
        Volatile.Write(ref fail, false);
        pool.Run();
        Assert.Equal(3, Volatile.Read(ref ran));
    }

    [Fact]
    public void DisposeEndsSpinningAndSleepingWorkers()
    {
        var spinning = new WorkerPool(2, _ => { }, "test");
        spinning.Run();
        spinning.Dispose(); // right after a job: the worker is still spinning
        var sleeping = new WorkerPool(2, _ => { }, "test");
        sleeping.Run();
        Thread.Sleep(WorkerPool.SpinMicroseconds / 1000 + 20);
        sleeping.Dispose(); // asleep on its semaphore
        sleeping.Dispose(); // idempotent
    }
}

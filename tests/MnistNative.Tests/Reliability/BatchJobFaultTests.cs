using MnistNative.Inference;
using Xunit;

namespace MnistNative.Tests.Reliability;

/// <summary>
/// Issue 13, defect 3: a failure inside a parallel batch. The caller's images and labels are pinned only for the
/// duration of its call, so it must not return (or throw) while a pool worker still reads or writes them, and a
/// failure on a pool thread must come back to the caller instead of ending the process.
/// </summary>
public sealed unsafe class BatchJobFaultTests
{
    // Chunks sleep so that the other thread is surely mid-chunk when the failing one throws; the failing chunk
    // first waits until another thread is inside a chunk. Touching the batch after the call returned is counted.
    private sealed class FaultyPredictor(Func<bool> shouldThrow) : IRangePredictor
    {
        private int _inFlight;
        public int ChunksRun;
        public int TouchedAfterReturn;
        public volatile bool Returned;

        public int InFlight => Volatile.Read(ref _inFlight);

        public void PredictRange(byte* images, int* labels, int start, int end)
        {
            Interlocked.Increment(ref _inFlight);
            try
            {
                Interlocked.Increment(ref ChunksRun);
                if (shouldThrow())
                {
                    SpinWait.SpinUntil(() => InFlight >= 2, TimeSpan.FromSeconds(5));
                    throw new InsufficientExecutionStackException("injected failure");
                }
                Thread.Sleep(20);
                if (Returned) Interlocked.Increment(ref TouchedAfterReturn);
                for (int i = start; i < end; i++) labels[i] = images[i];
            }
            finally { Interlocked.Decrement(ref _inFlight); }
        }
    }

    private static (FaultyPredictor Predictor, Exception? Thrown) RunBatch(Func<int, bool> throwOnThread)
    {
        const int count = 40 * 128;
        var images = new byte[count];
        var labels = new int[count];
        int caller = Environment.CurrentManagedThreadId;
        int thrown = 0;
        var predictor = new FaultyPredictor(() => throwOnThread(caller) && Interlocked.Exchange(ref thrown, 1) == 0);
        Exception? error = null;
        fixed (byte* pi = images)
        fixed (int* pl = labels)
        {
            try
            {
                BatchJob.Run(predictor, pi, pl, count, threads: 2);
            }
            catch (Exception e) { error = e; }
            predictor.Returned = true;
        }
        return (predictor, error);
    }

    [Fact]
    public void ACallerWhoseOwnChunkThrowsWaitsForItsWorkersFirst()
    {
        var (predictor, error) = RunBatch(caller => Environment.CurrentManagedThreadId == caller);
        int inFlightAtReturn = predictor.InFlight;
        Assert.IsType<InsufficientExecutionStackException>(error);
        Assert.True(inFlightAtReturn == 0, $"{inFlightAtReturn} worker chunk(s) still running after the caller " +
            $"returned");
        Thread.Sleep(100);
        Assert.Equal(0, predictor.TouchedAfterReturn);
        Assert.True(predictor.ChunksRun < 40, $"all {predictor.ChunksRun} chunks ran: the failure did not stop the " +
            $"batch");
    }

    [Fact]
    public void AFailureOnAPoolThreadIsRethrownToTheCallerAfterEveryWorkerCheckedIn()
    {
        var (predictor, error) = RunBatch(caller => Environment.CurrentManagedThreadId != caller);
        int inFlightAtReturn = predictor.InFlight;
        Assert.True(predictor.ChunksRun > 0);
        Assert.IsType<InsufficientExecutionStackException>(error);
        Assert.Equal(0, inFlightAtReturn);
        Thread.Sleep(100);
        Assert.Equal(0, predictor.TouchedAfterReturn);
    }

    [Fact]
    public void TheJobStillWorksAfterAFailure()
    {
        RunBatch(caller => Environment.CurrentManagedThreadId == caller);
        var (predictor, error) = RunBatch(_ => false);
        Assert.Null(error);
        Assert.Equal(40, predictor.ChunksRun);
    }
}

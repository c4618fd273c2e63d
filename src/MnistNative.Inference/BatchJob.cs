using System.Runtime.ExceptionServices;

namespace MnistNative.Inference;

/// <summary>
/// Predicts the labels of images [start, end) of a batch; what <see cref="BatchJob"/> spreads over threads.
/// </summary>
internal unsafe interface IRangePredictor
{
    void PredictRange(byte* images, int* labels, int start, int end);
}

/// <summary>
/// Spreads one PredictBatch call over the thread pool without allocating: each calling thread owns one job
/// object (created on its first large batch), queues it to the pool threads-1 times, and works on it itself.
/// Chunks of <see cref="MnistClassifier.BatchChunk"/> images are claimed with one interlocked increment, so a
/// slow or late worker costs nothing. The caller returns only after every queued copy has checked in, whatever
/// happened (its own chunk threw, queuing failed part-way): the image and label pointers are pinned by the
/// caller's stack frame and must not outlive it. A failure on a pool thread is caught there (an exception
/// escaping a pool thread ends the process), stops the other workers at their next chunk, and is rethrown on
/// the caller's thread once every worker has checked in.
/// The caller spins briefly, then blocks with Monitor.Wait on a gate object made with the job: a
/// ManualResetEventSlim allocates its lock object the first time a Wait really blocks, which showed up as 24
/// bytes in a later batch whenever the workers happened to be slow (CallsAfterLoadAllocateNothing).
/// </summary>
internal sealed unsafe class BatchJob : IThreadPoolWorkItem
{
    [ThreadStatic] private static BatchJob? t_job;

    private const int SpinsBeforeBlocking = 35; // as ManualResetEventSlim's default on a multi-core machine

    private readonly object _gate = new();
    private IRangePredictor? _predictor;
    private byte* _images;
    private int* _labels;
    private int _count;
    private int _chunks;
    private int _nextChunk;
    private int _pending;
    private ExceptionDispatchInfo? _failure;

    public static void Run(IRangePredictor predictor, byte* images, int* labels, int count, int threads)
    {
        BatchJob job = t_job ??= new BatchJob();
        job._predictor = predictor;
        job._images = images;
        job._labels = labels;
        job._count = count;
        job._chunks = (count + MnistClassifier.BatchChunk - 1) / MnistClassifier.BatchChunk;
        job._nextChunk = 0;
        job._failure = null;
        job._pending = threads - 1;
        int queued = 0;
        try
        {
            for (; queued < threads - 1; queued++) ThreadPool.UnsafeQueueUserWorkItem(job, preferLocal: false);
            job.Work();
        }
        catch (Exception e)
        {
            job.Fail(e);
        }
        finally
        {
            // copies that were never queued will never check in
            if (queued < threads - 1) Interlocked.Add(ref job._pending, queued - (threads - 1));
            job.WaitForWorkers();
            job._predictor = null;
            job._images = null;
            job._labels = null;
        }
        ExceptionDispatchInfo? failure = job._failure;
        job._failure = null;
        failure?.Throw();
    }

    void IThreadPoolWorkItem.Execute()
    {
        try
        {
            Work();
        }
        catch (Exception e)
        {
            Fail(e);
        }
        finally
        {
            if (Interlocked.Decrement(ref _pending) == 0)
                lock (_gate) Monitor.PulseAll(_gate);
        }
    }

    // The first failure wins; claiming every remaining chunk stops the other workers at their next one.
    private void Fail(Exception e)
    {
        Interlocked.CompareExchange(ref _failure, ExceptionDispatchInfo.Capture(e), null);
        Volatile.Write(ref _nextChunk, int.MaxValue / 2);
    }

    private void WaitForWorkers()
    {
        SpinWait spin = default;
        for (int i = 0; i < SpinsBeforeBlocking && Volatile.Read(ref _pending) != 0; i++)
            spin.SpinOnce(sleep1Threshold: -1);
        if (Volatile.Read(ref _pending) == 0) return;
        lock (_gate)
            while (Volatile.Read(ref _pending) != 0) Monitor.Wait(_gate);
    }

    private void Work()
    {
        IRangePredictor predictor = _predictor!;
        int chunk;
        while ((chunk = Interlocked.Increment(ref _nextChunk) - 1) < _chunks)
        {
            int start = chunk * MnistClassifier.BatchChunk;
            predictor.PredictRange(_images, _labels, start, Math.Min(start + MnistClassifier.BatchChunk, _count));
        }
    }
}

namespace MnistNative.Inference;

/// <summary>
/// Spreads one PredictBatch call over the thread pool without allocating: each calling thread owns one job
/// object (created on its first large batch), queues it to the pool threads-1 times, and works on it itself.
/// Chunks of <see cref="MnistClassifier.BatchChunk"/> images are claimed with one interlocked increment, so a
/// slow or late worker costs nothing. The caller returns only after every queued copy has checked in: the
/// image and label pointers are pinned by the caller's stack frame and must not outlive it.
/// The caller spins briefly, then blocks with Monitor.Wait on a gate object made with the job: a
/// ManualResetEventSlim allocates its lock object the first time a Wait really blocks, which showed up as 24
/// bytes in a later batch whenever the workers happened to be slow (CallsAfterLoadAllocateNothing).
/// </summary>
internal sealed unsafe class BatchJob : IThreadPoolWorkItem
{
    [ThreadStatic] private static BatchJob? t_job;

    private const int SpinsBeforeBlocking = 35; // as ManualResetEventSlim's default on a multi-core machine

    private readonly object _gate = new();
    private MnistClassifier? _classifier;
    private byte* _images;
    private int* _labels;
    private int _count;
    private int _chunks;
    private int _nextChunk;
    private int _pending;

    public static void Run(MnistClassifier classifier, byte* images, int* labels, int count, int threads)
    {
        BatchJob job = t_job ??= new BatchJob();
        job._classifier = classifier;
        job._images = images;
        job._labels = labels;
        job._count = count;
        job._chunks = (count + MnistClassifier.BatchChunk - 1) / MnistClassifier.BatchChunk;
        job._nextChunk = 0;
        job._pending = threads - 1;
        for (int t = 1; t < threads; t++) ThreadPool.UnsafeQueueUserWorkItem(job, preferLocal: false);
        job.Work();
        job.WaitForWorkers();
        job._classifier = null;
        job._images = null;
        job._labels = null;
    }

    void IThreadPoolWorkItem.Execute()
    {
        Work();
        if (Interlocked.Decrement(ref _pending) == 0)
            lock (_gate) Monitor.PulseAll(_gate);
    }

    private void WaitForWorkers()
    {
        SpinWait spin = default;
        for (int i = 0; i < SpinsBeforeBlocking && Volatile.Read(ref _pending) != 0; i++) spin.SpinOnce(sleep1Threshold: -1);
        if (Volatile.Read(ref _pending) == 0) return;
        lock (_gate)
            while (Volatile.Read(ref _pending) != 0) Monitor.Wait(_gate);
    }

    private void Work()
    {
        MnistClassifier classifier = _classifier!;
        int chunk;
        while ((chunk = Interlocked.Increment(ref _nextChunk) - 1) < _chunks)
        {
            int start = chunk * MnistClassifier.BatchChunk;
            classifier.PredictRange(_images, _labels, start, Math.Min(start + MnistClassifier.BatchChunk, _count));
        }
    }
}

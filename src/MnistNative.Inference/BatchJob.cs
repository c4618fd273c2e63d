namespace MnistNative.Inference;

/// <summary>
/// Spreads one PredictBatch call over the thread pool without allocating: each calling thread owns one job
/// object (created on its first large batch), queues it to the pool threads-1 times, and works on it itself.
/// Chunks of <see cref="MnistClassifier.BatchChunk"/> images are claimed with one interlocked increment, so a
/// slow or late worker costs nothing. The caller returns only after every queued copy has checked in: the
/// image and label pointers are pinned by the caller's stack frame and must not outlive it.
/// </summary>
internal sealed unsafe class BatchJob : IThreadPoolWorkItem
{
    [ThreadStatic] private static BatchJob? t_job;

    private readonly ManualResetEventSlim _done = new(false);
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
        job._done.Reset();
        for (int t = 1; t < threads; t++) ThreadPool.UnsafeQueueUserWorkItem(job, preferLocal: false);
        job.Work();
        job._done.Wait();
        job._classifier = null;
        job._images = null;
        job._labels = null;
    }

    void IThreadPoolWorkItem.Execute()
    {
        Work();
        if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
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

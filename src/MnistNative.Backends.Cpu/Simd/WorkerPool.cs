using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// Persistent worker threads: worker 0 is the calling thread, workers 1..P-1 are dedicated threads. Parallel.For
/// was seen running both items on one thread on this 2-core machine, and a fixed worker index per share is what
/// makes the reduction order fixed. Running a job allocates nothing: the work delegate is created once.
///
/// Between jobs a worker spins on the job counter for up to <see cref="SpinMicroseconds"/> and only then sleeps
/// on its semaphore (the caller likewise, waiting for the workers). A training step is a chain of short phases
/// (the deep backend runs eight per step, each ~20-400 µs): waking a sleeping thread took ~8 µs per phase here,
/// ~30 µs after a longer gap, while a spinning one answers in well under a microsecond. Past the budget
/// (between epochs, while the host evaluates) nobody burns a core.
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    /// <summary>How long an idle worker (or the waiting caller) spins before it sleeps.</summary>
    public const int SpinMicroseconds = 100;
    private static readonly long SpinTicks = Stopwatch.Frequency * SpinMicroseconds / 1_000_000;

    private readonly Action<int> _work;
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _go;
    private readonly int[] _sleeping;    // 1 while worker i is (about to be) asleep on _go[i]
    // A semaphore, not a ManualResetEventSlim: the latter allocates its lock object the first time it has to
    // block, which showed up as 24 bytes in the zero-allocation test.
    private readonly SemaphoreSlim _done = new(0);
    private readonly long[] _allocated;
    private int _generation;             // jobs started; a worker runs each one once
    private int _pending;                // dedicated workers still in the current job
    private int _callerSleeping;
    private volatile bool _stopping;
    private ExceptionDispatchInfo? _failure;

    public WorkerPool(int count, Action<int> work, string name)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        _work = work;
        Count = count;
        _allocated = new long[count];
        _threads = new Thread[count - 1];
        _go = new SemaphoreSlim[count - 1];
        _sleeping = new int[count - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _go[i] = new SemaphoreSlim(0);
            int index = i + 1;
            _threads[i] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"{name} worker {index}" };
            _threads[i].Start();
        }
    }

    public int Count { get; }

    /// <summary>Bytes the dedicated workers have allocated on the managed heap since they started (their own threads only).</summary>
    public long WorkerAllocatedBytes
    {
        get
        {
            long sum = 0;
            for (int i = 1; i < _allocated.Length; i++) sum += Volatile.Read(ref _allocated[i]);
            return sum;
        }
    }

    /// <summary>Runs work(0..Count-1) at once, work(0) on this thread, and returns when all are done.</summary>
    public void Run()
    {
        if (_threads.Length > 0)
        {
            Volatile.Write(ref _pending, _threads.Length);
            Interlocked.Increment(ref _generation);
            Wake();
        }
        try
        {
            _work(0);
        }
        finally
        {
            if (_threads.Length > 0) WaitForWorkers();
        }
        ExceptionDispatchInfo? failure = Interlocked.Exchange(ref _failure, null);
        failure?.Throw();
    }

    // Each side publishes "I am going to sleep" (or "there is a new job") with a full fence before it reads the
    // other side's word, so at least one of the two sees the other: a sleeper is always released, and a release
    // that raced with a sleeper changing its mind is consumed.
    private void Wake()
    {
        for (int i = 0; i < _go.Length; i++)
            if (Interlocked.Exchange(ref _sleeping[i], 0) == 1) _go[i].Release();
    }

    private void WaitForWorkers()
    {
        long deadline = Stopwatch.GetTimestamp() + SpinTicks;
        while (Volatile.Read(ref _pending) != 0)
        {
            if (Stopwatch.GetTimestamp() < deadline) { Thread.SpinWait(8); continue; }
            Interlocked.Exchange(ref _callerSleeping, 1);
            if (Volatile.Read(ref _pending) != 0 || Interlocked.Exchange(ref _callerSleeping, 0) == 0) _done.Wait();
            return;
        }
    }

    private void Loop(int index)
    {
        long start = GC.GetAllocatedBytesForCurrentThread();
        int seen = 0;
        while (true)
        {
            long deadline = Stopwatch.GetTimestamp() + SpinTicks;
            int generation;
            while ((generation = Volatile.Read(ref _generation)) == seen && !_stopping)
            {
                if (Stopwatch.GetTimestamp() < deadline) { Thread.SpinWait(8); continue; }
                Interlocked.Exchange(ref _sleeping[index - 1], 1);
                if (Volatile.Read(ref _generation) == seen && !_stopping || Interlocked.Exchange(ref _sleeping[index - 1], 0) == 0)
                    _go[index - 1].Wait();
                deadline = Stopwatch.GetTimestamp() + SpinTicks;
            }
            if (_stopping) return;
            seen = generation;
            try
            {
                _work(index);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, ExceptionDispatchInfo.Capture(e), null);
            }
            Volatile.Write(ref _allocated[index], GC.GetAllocatedBytesForCurrentThread() - start);
            if (Interlocked.Decrement(ref _pending) == 0 && Interlocked.Exchange(ref _callerSleeping, 0) == 1) _done.Release();
        }
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        foreach (SemaphoreSlim go in _go) go.Release();
        foreach (Thread t in _threads) t.Join();
        foreach (SemaphoreSlim go in _go) go.Dispose();
        _done.Dispose();
    }
}

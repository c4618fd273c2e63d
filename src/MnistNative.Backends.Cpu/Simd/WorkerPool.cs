using System.Runtime.ExceptionServices;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// Persistent worker threads: worker 0 is the calling thread, workers 1..P-1 are dedicated threads that
/// sleep on a semaphore between jobs. Parallel.For was seen running both items on one thread on this
/// 2-core machine, and a fixed worker index per share is what makes the reduction order fixed. One pool serves
/// both paths of the SIMD backend (each passes its own job). Running a job allocates nothing when the caller
/// passes a delegate it created once; the semaphores only spin and block.
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    private Action<int> _work = static _ => { };
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _go;
    // A semaphore, not a ManualResetEventSlim: the latter allocates its lock object the first time it has to
    // block, which showed up as 24 bytes in the zero-allocation test.
    private readonly SemaphoreSlim _done = new(0);
    private readonly long[] _allocated;
    private int _pending;
    private volatile bool _stopping;
    private ExceptionDispatchInfo? _failure;

    public WorkerPool(int count, string name)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        Count = count;
        _allocated = new long[count];
        _threads = new Thread[count - 1];
        _go = new SemaphoreSlim[count - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _go[i] = new SemaphoreSlim(0);
            int index = i + 1;
            _threads[i] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"{name} worker {index}" };
            _threads[i].Start();
        }
    }

    public int Count { get; }

    /// <summary>Bytes the dedicated workers have allocated on the managed heap since they started (their own
    /// threads only).</summary>
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
    public void Run(Action<int> work)
    {
        _work = work; // published to the workers by the semaphore release below
        if (_threads.Length > 0)
        {
            Volatile.Write(ref _pending, _threads.Length);
            foreach (SemaphoreSlim go in _go) go.Release();
        }
        try
        {
            _work(0);
        }
        finally
        {
            if (_threads.Length > 0) _done.Wait();
        }
        ExceptionDispatchInfo? failure = Interlocked.Exchange(ref _failure, null);
        failure?.Throw();
    }

    private void Loop(int index)
    {
        long start = GC.GetAllocatedBytesForCurrentThread();
        while (true)
        {
            _go[index - 1].Wait();
            if (_stopping) return;
            try
            {
                _work(index);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, ExceptionDispatchInfo.Capture(e), null);
            }
            Volatile.Write(ref _allocated[index], GC.GetAllocatedBytesForCurrentThread() - start);
            if (Interlocked.Decrement(ref _pending) == 0) _done.Release();
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

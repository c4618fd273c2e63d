using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// Persistent worker threads: worker 0 is the calling thread, workers 1..P-1 are dedicated threads. Parallel.For was
/// seen running both items on one thread on this 2-core machine, and a fixed worker index per share is what makes the
/// reduction order fixed. One pool serves both paths of the SIMD backend (each passes its own job). Running a job
/// allocates nothing when the caller passes a delegate it created once.
/// <para>
/// Between jobs a worker spins on the job counter for <see cref="SpinTime"/> before it sleeps on its semaphore, and
/// the caller spins the same way on the workers' count before it sleeps: a training step runs one or two jobs of a
/// few hundred microseconds with microseconds between them, and waking a sleeping thread (on a VM, an idle virtual
/// CPU) costs a sizeable share of such a job (docs/journal/sparse-training.md, section 10). A sleeper is woken only
/// when it said it sleeps, and the flag is taken exactly once, by the waker (who then releases) or by the sleeper
/// taking it back.
/// </para>
/// </summary>
internal sealed class WorkerPool : IDisposable
{
    /// <summary>How long a waiting thread spins before it sleeps: longer than the gap between a step's jobs and
    /// between steps, short enough that an idle pool costs nothing.</summary>
    internal static readonly TimeSpan SpinTime = TimeSpan.FromMicroseconds(200);

    private readonly long _spinTicks;
    private Action<int> _work = static _ => { };
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _go;
    private readonly int[] _workerSleeping; // 1: worker i + 1 sleeps (or is about to) on _go[i]
    private readonly SemaphoreSlim _done = new(0);
    private int _callerSleeping;            // 1: the caller sleeps (or is about to) on _done
    private readonly long[] _allocated;
    private long _job;                      // jobs published so far
    private int _pending;
    private volatile bool _stopping;
    private ExceptionDispatchInfo? _failure;

    public WorkerPool(int count, string name)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        Count = count;
        // spinning only pays when every thread has a core of its own
        _spinTicks = count <= Environment.ProcessorCount ? (long)(SpinTime.TotalSeconds * Stopwatch.Frequency) : 0;
        _allocated = new long[count];
        _threads = new Thread[count - 1];
        _go = new SemaphoreSlim[count - 1];
        _workerSleeping = new int[count - 1];
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
        _work = work; // published to the workers by the job counter's increment below (a full fence)
        if (_threads.Length > 0)
        {
            Volatile.Write(ref _pending, _threads.Length);
            Interlocked.Increment(ref _job);
            for (int i = 0; i < _go.Length; i++)
                if (Interlocked.Exchange(ref _workerSleeping[i], 0) == 1) _go[i].Release();
        }
        try
        {
            _work(0);
        }
        finally
        {
            if (_threads.Length > 0)
                WaitUntil(static (pool, _) => Volatile.Read(ref pool._pending) == 0, 0, ref _callerSleeping, _done);
        }
        ExceptionDispatchInfo? failure = Interlocked.Exchange(ref _failure, null);
        failure?.Throw();
    }

    private void Loop(int index)
    {
        long start = GC.GetAllocatedBytesForCurrentThread();
        long seen = 0;
        while (true)
        {
            WaitUntil(static (pool, seen) => Volatile.Read(ref pool._job) != seen || pool._stopping, seen,
                ref _workerSleeping[index - 1], _go[index - 1]);
            if (_stopping) return;
            seen = Volatile.Read(ref _job);
            try
            {
                _work(index);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, ExceptionDispatchInfo.Capture(e), null);
            }
            Volatile.Write(ref _allocated[index], GC.GetAllocatedBytesForCurrentThread() - start);
            if (Interlocked.Decrement(ref _pending) == 0 && Interlocked.Exchange(ref _callerSleeping, 0) == 1)
                _done.Release();
        }
    }

    // Spins until `ready` (a few pauses, then yielding the core to any other runnable thread, so a loaded machine
    // loses little to the spinning), then, past the spin time, says it sleeps and sleeps until released. If `ready`
    // turns true after the flag is set, the flag is taken back; when the waker took it first, its release is consumed.
    // (The conditions are static lambdas with their state passed in: nothing is allocated per wait.)
    private void WaitUntil(Func<WorkerPool, long, bool> ready, long state, ref int sleeping, SemaphoreSlim wake)
    {
        long until = Stopwatch.GetTimestamp() + _spinTicks;
        for (int spins = 0; !ready(this, state); spins++)
        {
            if (Stopwatch.GetTimestamp() < until)
            {
                if (spins < 64) Thread.SpinWait(8);
                else Thread.Yield();
                continue;
            }
            Interlocked.Exchange(ref sleeping, 1);
            if (!ready(this, state)) wake.Wait();
            else if (Interlocked.Exchange(ref sleeping, 0) == 0) wake.Wait();
        }
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        Interlocked.Increment(ref _job);
        for (int i = 0; i < _go.Length; i++)
            if (Interlocked.Exchange(ref _workerSleeping[i], 0) == 1) _go[i].Release();
        foreach (Thread t in _threads) t.Join();
        foreach (SemaphoreSlim go in _go) go.Dispose();
        _done.Dispose();
    }
}

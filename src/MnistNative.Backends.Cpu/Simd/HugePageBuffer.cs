using System.Runtime.InteropServices;

namespace MnistNative.Backends.Cpu.Simd;

/// <summary>
/// Zeroed native memory that, on Linux, sits in 2 MB-aligned transparent huge pages (mmap + madvise(MADV_HUGEPAGE),
/// which the default THP mode "madvise" honours); elsewhere, or if mmap fails, 4 KB-aligned NativeMemory.
///
/// Why: each SIMD worker's tile buffers and gradient partials were separate 64-byte-aligned allocations on 4 KB
/// pages, and on this machine one worker (whichever got the unlucky pages, the same one for a whole process) ran
/// its tiles ~20% slower, in HiddenForward mostly: at H=10, 2 threads, the workers finished 260-550 µs apart in a
/// ~2.3 ms step. Identical virtual layouts did not help; backing each worker's block by a huge page did (finishes
/// 0-40 µs apart), so the cause is in the physical placement of the pages (L2 set conflicts or page walks; this
/// VM exposes no hardware counters to tell which).
/// </summary>
internal sealed unsafe partial class HugePageBuffer : IDisposable
{
    private const nint HugePage = 2 << 20;
    private const int ProtReadWrite = 0x1 | 0x2, MapPrivateAnonymous = 0x02 | 0x20, MadvHugePage = 14;

    private readonly nint _mapping, _mappedBytes;
    private void* _pointer;

    public HugePageBuffer(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1L);
        nint length = (nint)((bytes + HugePage - 1) & ~(long)(HugePage - 1));
        if (OperatingSystem.IsLinux())
        {
            // one huge page more than needed, so that a 2 MB boundary falls inside; anonymous memory comes zeroed
            nint mapped = length + HugePage;
            nint m = Mmap(0, mapped, ProtReadWrite, MapPrivateAnonymous, -1, 0);
            if (m != -1)
            {
                _mapping = m;
                _mappedBytes = mapped;
                nint aligned = (m + HugePage - 1) & ~(HugePage - 1);
                _ = Madvise(aligned, length, MadvHugePage); // only advice: without THP the pages stay 4 KB
                _pointer = (void*)aligned;
            }
        }
        if (_pointer == null)
        {
            _pointer = NativeMemory.AlignedAlloc((nuint)length, 4096);
            new Span<byte>(_pointer, (int)Math.Min(length, int.MaxValue)).Clear();
        }
        Bytes = length;
    }

    /// <summary>Usable bytes from <see cref="Pointer"/>: the request rounded up to whole 2 MB.</summary>
    public long Bytes { get; }

    public void* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(HugePageBuffer));

    public void Dispose()
    {
        if (_pointer == null) return;
        if (_mapping != 0) _ = Munmap(_mapping, _mappedBytes);
        else NativeMemory.AlignedFree(_pointer);
        _pointer = null;
    }

    [LibraryImport("libc", EntryPoint = "mmap")]
    private static partial nint Mmap(nint address, nint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nint length, int advice);

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int Munmap(nint address, nint length);
}

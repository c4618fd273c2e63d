using System.Runtime.InteropServices;
using CommunityToolkit.HighPerformance;

namespace MnistNative.Core;

/// <summary>
/// A 64-byte aligned block of native memory holding <see cref="Length"/> values of <typeparamref name="T"/>.
/// 64 bytes is one cache line and one Vector512, so every row that starts at a multiple of 16 floats is
/// aligned for the widest loads. Dispose is idempotent; the finalizer frees a buffer nobody disposed.
/// </summary>
public sealed unsafe class NativeBuffer<T> : IDisposable where T : unmanaged
{
    public const int Alignment = 64;
    private T* _pointer;

    public NativeBuffer(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        nuint bytes = (nuint)Math.Max(1L, (long)length * sizeof(T));
        _pointer = (T*)NativeMemory.AlignedAlloc(bytes, Alignment);
        NativeMemory.Clear(_pointer, bytes);
    }

    public int Length { get; }

    public T* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(NativeBuffer<T>));

    public Span<T> Span => new(Pointer, Length);

    /// <summary>
    /// A row-major 2-D view: <paramref name="height"/> rows of <paramref name="width"/> values, rows
    /// <paramref name="pitch"/> values apart beyond the width.
    /// </summary>
    public Span2D<T> AsSpan2D(int height, int width, int pitch = 0)
    {
        if ((long)height * (width + pitch) > Length + (long)pitch)
            throw new ArgumentOutOfRangeException(nameof(height),
                $"a {height}x{width} view (pitch {pitch}) does not fit in {Length} values");
        return new Span2D<T>(Pointer, height, width, pitch);
    }

    public void Clear() => Span.Clear();

    public void Dispose()
    {
        T* p = _pointer;
        _pointer = null;
        if (p != null) NativeMemory.AlignedFree(p);
        GC.SuppressFinalize(this);
    }

    ~NativeBuffer()
    {
        if (_pointer != null) NativeMemory.AlignedFree(_pointer);
    }
}

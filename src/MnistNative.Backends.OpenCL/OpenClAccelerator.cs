using MnistNative.Core;
using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

/// <summary>
/// The one OpenCL host object of a backend: it picks the device, owns the context, the command queue, the
/// programs it builds (embedded or --kernels DIR sources), their kernels and every buffer, does the host/device
/// transfers in the device's precision, enqueues kernels with event profiling, and disposes all of it in one
/// place, children before parents in reverse order of creation. The kernel families on top of it
/// (<see cref="FusedKernels"/>, <see cref="LayerKernels"/>) create through it and never release anything.
/// The host side always speaks float64; the device holds float32 or float64 (<see cref="RealSize"/>).
/// </summary>
internal sealed unsafe class OpenClAccelerator : IDisposable
{
    // Event profiling collects the queued events when this many are pending, so a long run without a
    // measuring step cannot pile up events without bound.
    private const int MaxPendingEvents = 4096;

    private readonly List<ClHandle> _owned = [];
    private readonly List<(string Kernel, nint Event)> _pendingEvents = [];
    private readonly ClContext _context;
    private readonly ClCommandQueue _queue;
    private float[] _floats = [];
    private bool _disposed;

    public OpenClAccelerator(string? deviceSelector, Precision precision, bool profiling)
    {
        if (!OpenClRuntime.TryProbe(out string reason)) throw new BackendUnavailableException(reason);
        Device = OpenClRuntime.SelectDevice(deviceSelector);
        if (precision == Precision.F64 && !Device.SupportsDouble)
            throw new BackendUnavailableException(
                $"OpenCL device {Device.Id} {Device.Name} has no double support (cl_khr_fp64): use float32");
        Precision = precision;
        RealSize = precision == Precision.F64 ? 8 : 4;
        Profiling = profiling;
        try
        {
            _context = Own(ClContext.Create(Device.DeviceHandle));
            _queue = Own(ClCommandQueue.Create(_context, Device.DeviceHandle, profiling));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public OpenClDeviceInfo Device { get; }

    public Precision Precision { get; }

    /// <summary>Bytes of one device real: 4 (float32) or 8 (float64).</summary>
    public int RealSize { get; }

    /// <summary>The OpenCL C type of a real, for the programs' -D REAL=.</summary>
    public string RealType => RealSize == 8 ? "double" : "float";

    /// <summary>The queue was created with CL_QUEUE_PROFILING_ENABLE: kernels can be timed by the device.</summary>
    public bool Profiling { get; }

    /// <summary>
    /// Where transfers and (with <see cref="Profiling"/>) each kernel's device time are recorded; null: off,
    /// which costs one null check per transfer or launch.
    /// </summary>
    public Profiler? Profiler { get; set; }

    /// <summary>Builds the files (concatenated, from the assembly or <paramref name="kernelsDirectory"/>) into a
    /// program; a failed build throws with the compiler's log.</summary>
    public ClProgram BuildProgram(IEnumerable<string> files, string? kernelsDirectory, string defines) =>
        Own(ClProgram.Build(_context, Device.DeviceHandle,
            KernelSource.Program(files, string.IsNullOrEmpty(kernelsDirectory) ? null : kernelsDirectory),
            "-cl-std=CL1.2 " + defines));

    public ClKernel CreateKernel(ClProgram program, string name) => Own(ClKernel.Create(program, name));

    /// <summary>A device buffer, or a clear error naming what it was for when the device cannot hold it in one
    /// allocation.</summary>
    public ClBuffer Allocate(long bytes, string what, void* hostData = null, MemFlags flags = MemFlags.ReadWrite)
    {
        if (bytes > Device.MaxAllocationBytes)
            throw new OpenClException("clCreateBuffer", -61,
                $"the {what} need {bytes:N0} bytes, more than the largest allocation of {Device.Name} " +
                $"({Device.MaxAllocationBytes:N0} bytes)");
        return Own(ClBuffer.Create(_context, flags, bytes, hostData, what));
    }

    public ClBuffer AllocateReals(long count, string what) => Allocate(count * RealSize, what);

    /// <summary>A buffer of <paramref name="count"/> zeros.</summary>
    public ClBuffer AllocateZeros(long count, string what)
    {
        ClBuffer buffer = AllocateReals(count, what);
        WriteReals(buffer, new double[count]);
        return buffer;
    }

    /// <summary>Releases a buffer before the accelerator goes (a replaced training set); waits for the queue, so
    /// that no queued command still reads it.</summary>
    public void Release(ClBuffer? buffer)
    {
        if (buffer == null) return;
        Finish();
        _owned.Remove(buffer);
        buffer.Dispose();
    }

    public void SetReal(ClKernel kernel, uint index, double value)
    {
        if (RealSize == 8) kernel.SetArg(index, value);
        else kernel.SetArg(index, (float)value);
    }

    /// <summary>Writes values as device reals starting at real <paramref name="offset"/> (blocking).</summary>
    public void WriteReals(ClBuffer buffer, ReadOnlySpan<double> values, long offset = 0)
    {
        long t = Profiler != null ? Profiler.Now() : 0;
        if (RealSize == 8)
        {
            fixed (double* p = values) Write(buffer, p, offset * 8, values.Length * 8L);
        }
        else
        {
            Span<float> f = Floats(values.Length);
            for (int i = 0; i < values.Length; i++) f[i] = (float)values[i];
            fixed (float* p = f) Write(buffer, p, offset * 4, f.Length * 4L);
        }
        Profiler?.Record(Phases.TransferToDevice, t);
    }

    /// <summary>Reads values.Length reals starting at real <paramref name="offset"/> (blocking: waits for the queue).
    /// </summary>
    public void ReadReals(ClBuffer buffer, Span<double> values, long offset = 0)
    {
        long t = Profiler != null ? Profiler.Now() : 0;
        if (RealSize == 8)
        {
            fixed (double* p = values) Read(buffer, p, offset * 8, values.Length * 8L);
        }
        else
        {
            Span<float> f = Floats(values.Length);
            fixed (float* p = f) Read(buffer, p, offset * 4, f.Length * 4L);
            for (int i = 0; i < values.Length; i++) values[i] = f[i];
        }
        Profiler?.Record(Phases.TransferFromDevice, t);
    }

    public void WriteBytes(ClBuffer buffer, void* data, long bytes)
    {
        long t = Profiler != null ? Profiler.Now() : 0;
        Write(buffer, data, 0, bytes);
        Profiler?.Record(Phases.TransferToDevice, t);
    }

    /// <summary>A non-blocking write; the caller keeps <paramref name="data"/> pinned and unchanged until the returned
    /// event completes and releases the event.</summary>
    public nint WriteBytesAsync(ClBuffer buffer, void* data, long bytes)
    {
        nint ev;
        ClErrors.Check(OpenClRuntime.Api.EnqueueWriteBuffer(_queue.Raw, buffer.Raw, false, 0, (nuint)bytes, data, 0,
            null, &ev), "clEnqueueWriteBuffer");
        return ev;
    }

    /// <summary>Waits for an event from <see cref="WriteBytesAsync"/> and releases it.</summary>
    public static void WaitAndRelease(nint ev)
    {
        CL api = OpenClRuntime.Api;
        int wait = api.WaitForEvents(1, &ev);
        api.ReleaseEvent(ev);
        ClErrors.Check(wait, "clWaitForEvents");
    }

    /// <summary>Enqueues a device-side copy of <paramref name="count"/> reals (no host round trip).</summary>
    public void CopyReals(ClBuffer source, long sourceOffset, ClBuffer destination, long destinationOffset, long count)
    {
        ClErrors.Check(OpenClRuntime.Api.EnqueueCopyBuffer(_queue.Raw, source.Raw, destination.Raw,
            (nuint)(sourceOffset * RealSize), (nuint)(destinationOffset * RealSize), (nuint)(count * RealSize), 0, null,
            null), "clEnqueueCopyBuffer");
    }

    /// <summary>
    /// Enqueues a kernel over a 1-D or 2-D range (local null: the runtime picks). With a profiler attached to a
    /// profiling queue, the launch's event is kept and later recorded as a "device: NAME" row.
    /// </summary>
    public void Enqueue(ClKernel kernel, ReadOnlySpan<nuint> global, ReadOnlySpan<nuint> local = default)
    {
        bool timed = Profiling && Profiler != null;
        nint ev = 0;
        fixed (nuint* g = global)
        fixed (nuint* l = local)
        {
            int code = OpenClRuntime.Api.EnqueueNdrangeKernel(_queue.Raw, kernel.Raw, (uint)global.Length, null, g,
                local.IsEmpty ? null : l, 0, null, timed ? &ev : null);
            if (code != 0) throw new OpenClException($"clEnqueueNDRangeKernel({kernel.Name})", code);
        }
        if (!timed) return;
        _pendingEvents.Add((kernel.Name, ev));
        if (_pendingEvents.Count >= MaxPendingEvents) RecordDeviceTimes();
    }

    /// <summary>Starts the queued commands without waiting for them.</summary>
    public void Flush() => ClErrors.Check(OpenClRuntime.Api.Flush(_queue.Raw), "clFlush");

    /// <summary>Waits until every queued command has run.</summary>
    public void Finish()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ClErrors.Check(OpenClRuntime.Api.Finish(_queue.Raw), "clFinish");
    }

    /// <summary>Waits for the queue and records the device time of every kernel launched since the last call.</summary>
    public void RecordDeviceTimes()
    {
        if (_pendingEvents.Count == 0) return;
        CL api = OpenClRuntime.Api;
        try
        {
            ClErrors.Check(api.Finish(_queue.Raw), "clFinish");
            foreach (var (kernel, e) in _pendingEvents)
            {
                ulong start, end;
                ClErrors.Check(api.GetEventProfilingInfo(e, ProfilingInfo.Start, sizeof(ulong), &start, null),
                    "clGetEventProfilingInfo");
                ClErrors.Check(api.GetEventProfilingInfo(e, ProfilingInfo.End, sizeof(ulong), &end, null),
                    "clGetEventProfilingInfo");
                Profiler?.RecordDevice(Phases.DevicePrefix + kernel, (long)start, (long)end, thread: 1);
            }
        }
        finally
        {
            foreach (var (_, e) in _pendingEvents) api.ReleaseEvent(e);
            _pendingEvents.Clear();
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        CL? api = null;
        try { api = OpenClRuntime.Api; } catch (BackendUnavailableException) { }
        if (api != null && _queue is { IsClosed: false }) api.Finish(_queue.Raw); // nothing may run on what goes
        foreach (var (_, e) in _pendingEvents) api?.ReleaseEvent(e);
        _pendingEvents.Clear();
        // Reverse order of creation: kernels and buffers before their program, everything before queue and context.
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
    }

    private T Own<T>(T handle) where T : ClHandle
    {
        _owned.Add(handle);
        return handle;
    }

    private Span<float> Floats(int count)
    {
        if (_floats.Length < count) _floats = new float[count];
        return _floats.AsSpan(0, count);
    }

    private void Write(ClBuffer buffer, void* data, long offsetBytes, long bytes) =>
        ClErrors.Check(OpenClRuntime.Api.EnqueueWriteBuffer(_queue.Raw, buffer.Raw, true, (nuint)offsetBytes,
            (nuint)bytes, data, 0, null, null), "clEnqueueWriteBuffer");

    private void Read(ClBuffer buffer, void* data, long offsetBytes, long bytes) =>
        ClErrors.Check(OpenClRuntime.Api.EnqueueReadBuffer(_queue.Raw, buffer.Raw, true, (nuint)offsetBytes,
            (nuint)bytes, data, 0, null, null), "clEnqueueReadBuffer");
}

using System.Runtime.InteropServices;
using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

/// <summary>
/// One owner per OpenCL object kind: ReleaseHandle calls the matching clRelease*. The count of live
/// handles is kept so tests can prove that creating and disposing backends leaks nothing.
/// <see cref="OpenClAccelerator"/> creates and owns them all and releases them in reverse order of creation
/// (kernels and buffers, programs, queue, context).
/// </summary>
internal abstract class ClHandle : SafeHandle
{
    private static int s_live;

    protected ClHandle(nint handle) : base(0, ownsHandle: true)
    {
        SetHandle(handle);
        Interlocked.Increment(ref s_live);
    }

    public static int Live => Volatile.Read(ref s_live);

    public override bool IsInvalid => handle == 0;

    public nint Raw => IsClosed ? throw new ObjectDisposedException(GetType().Name) : handle;

    protected static CL Api => OpenClRuntime.Api;

    protected sealed override bool ReleaseHandle()
    {
        Interlocked.Decrement(ref s_live);
        return Release(handle) == 0;
    }

    protected abstract int Release(nint h);

    /// <summary>Wraps the result of a clCreate* call, throwing when it failed.</summary>
    protected static nint Created(nint h, int code, string call)
    {
        ClErrors.Check(code, call);
        if (h == 0) throw new OpenClException(call, -5, "returned a null object");
        return h;
    }
}

internal sealed class ClContext(nint h) : ClHandle(h)
{
    protected override int Release(nint h) => Api.ReleaseContext(h);

    public static unsafe ClContext Create(nint device)
    {
        int code;
        nint h = Api.CreateContext(null, 1, &device, null, null, &code);
        return new ClContext(Created(h, code, "clCreateContext"));
    }
}

internal sealed class ClCommandQueue(nint h) : ClHandle(h)
{
    protected override int Release(nint h) => Api.ReleaseCommandQueue(h);

    public static unsafe ClCommandQueue Create(ClContext context, nint device, bool profiling)
    {
        int code;
        CommandQueueProperties properties =
            profiling ? CommandQueueProperties.ProfilingEnable : CommandQueueProperties.None;
        nint h = Api.CreateCommandQueue(context.Raw, device, properties, &code);
        return new ClCommandQueue(Created(h, code, "clCreateCommandQueue"));
    }
}

internal sealed class ClProgram(nint h) : ClHandle(h)
{
    protected override int Release(nint h) => Api.ReleaseProgram(h);

    /// <summary>Creates and builds a program; a failed build throws with the compiler's log.</summary>
    public static unsafe ClProgram Build(ClContext context, nint device, string source, string options)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(source);
        int code;
        nint h;
        fixed (byte* p = bytes)
        {
            byte* strings = p;
            nuint length = (nuint)bytes.Length;
            h = Api.CreateProgramWithSource(context.Raw, 1, &strings, &length, &code);
        }
        var program = new ClProgram(Created(h, code, "clCreateProgramWithSource"));
        code = Api.BuildProgram(program.Raw, 1, &device, options, null, null);
        if (code != 0)
        {
            string log = BuildLog(program.Raw, device);
            program.Dispose();
            throw new OpenClException("clBuildProgram", code, $"options '{options}'", log);
        }
        return program;
    }

    private static unsafe string BuildLog(nint program, nint device)
    {
        nuint size;
        if (Api.GetProgramBuildInfo(program, device, ProgramBuildInfo.BuildLog, 0, null, &size) != 0 || size == 0)
            return "(no build log)";
        var buffer = new byte[(int)size];
        fixed (byte* b = buffer)
            if (Api.GetProgramBuildInfo(program, device, ProgramBuildInfo.BuildLog, size, b, null) != 0)
                return "(no build log)";
        return System.Text.Encoding.UTF8.GetString(buffer).TrimEnd('\0');
    }
}

internal sealed class ClKernel(nint h, string name) : ClHandle(h)
{
    public string Name { get; } = name;

    protected override int Release(nint h) => Api.ReleaseKernel(h);

    public static unsafe ClKernel Create(ClProgram program, string name)
    {
        int code;
        nint h = Api.CreateKernel(program.Raw, name, &code);
        return new ClKernel(Created(h, code, $"clCreateKernel({name})"), name);
    }

    public unsafe void SetArg<T>(uint index, T value) where T : unmanaged =>
        Checked(Api.SetKernelArg(Raw, index, (nuint)sizeof(T), &value), index);

    public unsafe void SetArg(uint index, ClBuffer buffer)
    {
        nint mem = buffer.Raw;
        Checked(Api.SetKernelArg(Raw, index, (nuint)sizeof(nint), &mem), index);
    }

    // The call's name is built only on failure: arguments are set every step, which then allocates nothing.
    private void Checked(int code, uint index)
    {
        if (code != 0) throw new OpenClException($"clSetKernelArg({Name}, {index})", code);
    }

    public unsafe nuint WorkGroupSize(nint device)
    {
        nuint size;
        ClErrors.Check(Api.GetKernelWorkGroupInfo(Raw, device, KernelWorkGroupInfo.WorkGroupSize, (nuint)sizeof(nuint),
            &size, null), "clGetKernelWorkGroupInfo");
        return size;
    }
}

internal sealed class ClBuffer(nint h, long bytes) : ClHandle(h)
{
    public long Bytes { get; } = bytes;

    protected override int Release(nint h) => Api.ReleaseMemObject(h);

    public static unsafe ClBuffer Create(ClContext context, MemFlags flags, long bytes, void* hostData = null,
        string? what = null)
    {
        int code;
        MemFlags copy = hostData != null ? MemFlags.CopyHostPtr : MemFlags.None;
        nint h = Api.CreateBuffer(context.Raw, flags | copy, (nuint)Math.Max(bytes, 1), hostData, &code);
        if (code != 0)
            throw new OpenClException("clCreateBuffer", code, $"{what ?? "buffer"} of {bytes:N0} bytes");
        return new ClBuffer(Created(h, code, "clCreateBuffer"), bytes);
    }
}

using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

/// <summary>
/// Blocking host/device copies and real-valued kernel arguments in the device's precision (realSize 4: float32,
/// 8: float64), shared by the OpenCL backends. The host side always speaks float64.
/// </summary>
internal static unsafe class ClTransfers
{
    /// <summary>A device buffer, or a clear error naming what it was for when it is larger than the device allows in one allocation.</summary>
    public static ClBuffer Allocate(ClContext context, OpenClDeviceInfo device, MemFlags flags, long bytes, string what, void* hostData = null)
    {
        if (bytes > device.MaxAllocationBytes)
            throw new OpenClException("clCreateBuffer", -61,
                $"the {what} need {bytes:N0} bytes, more than the largest allocation of {device.Name} ({device.MaxAllocationBytes:N0} bytes)");
        return ClBuffer.Create(context, flags, bytes, hostData, what);
    }

    public static void SetReal(ClKernel kernel, uint index, double value, int realSize)
    {
        if (realSize == 8) kernel.SetArg(index, value);
        else kernel.SetArg(index, (float)value);
    }

    public static void WriteReals(ClCommandQueue queue, ClBuffer buffer, double[] values, int realSize)
    {
        if (realSize == 8)
        {
            fixed (double* p = values) WriteBytes(queue, buffer, p, values.Length * 8L);
        }
        else
        {
            float[] f = Array.ConvertAll(values, v => (float)v);
            fixed (float* p = f) WriteBytes(queue, buffer, p, f.Length * 4L);
        }
    }

    /// <summary>Reads values.Length reals from the start of the buffer; float32 goes through <paramref name="floats"/> when it is long enough (no allocation), else a new array.</summary>
    public static void ReadReals(ClCommandQueue queue, ClBuffer buffer, Span<double> values, int realSize, float[]? floats = null)
    {
        if (realSize == 8)
        {
            fixed (double* p = values) ReadBytes(queue, buffer, p, values.Length * 8L);
            return;
        }
        Span<float> f = floats != null && values.Length <= floats.Length ? floats.AsSpan(0, values.Length) : new float[values.Length];
        fixed (float* p = f) ReadBytes(queue, buffer, p, f.Length * 4L);
        for (int i = 0; i < values.Length; i++) values[i] = f[i];
    }

    public static void WriteBytes(ClCommandQueue queue, ClBuffer buffer, void* data, long bytes) =>
        ClErrors.Check(OpenClRuntime.Api.EnqueueWriteBuffer(queue.Raw, buffer.Raw, true, 0, (nuint)bytes, data, 0, null, null), "clEnqueueWriteBuffer");

    public static void ReadBytes(ClCommandQueue queue, ClBuffer buffer, void* data, long bytes) =>
        ClErrors.Check(OpenClRuntime.Api.EnqueueReadBuffer(queue.Raw, buffer.Raw, true, 0, (nuint)bytes, data, 0, null, null), "clEnqueueReadBuffer");
}

using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using MnistNative.Tests.Conformance;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.OpenCl;

/// <summary>The conformance suite on the CPU-device kernels (explicit vector code, few work-items).</summary>
[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClCpuVariantConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden)
    {
        OpenClTestDevice.RequireOpenCl();
        return new OpenClBackend(hidden, new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = "cpu" });
    }
}

/// <summary>The conformance suite on the GPU kernels (work-groups, local memory); PoCL runs them too.</summary>
[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClGpuVariantConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden)
    {
        OpenClTestDevice.RequireOpenCl();
        return new OpenClBackend(hidden, new OpenClBackendOptions { Device = OpenClTestDevice.Device, Variant = "gpu" });
    }
}

/// <summary>float64 kernels, where the device has cl_khr_fp64 (PoCL does); tolerances as the suite's.</summary>
[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClF64Conformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden)
    {
        OpenClTestDevice.RequireOpenCl();
        return new OpenClBackend(hidden, new OpenClBackendOptions { Device = OpenClTestDevice.Device, Precision = Precision.F64 });
    }
}

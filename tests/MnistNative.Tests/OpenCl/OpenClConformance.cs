using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using MnistNative.Tests.Conformance;
using Xunit;

namespace MnistNative.Tests.OpenCl;

/// <summary>The one conformance suite on OpenCL: both kernel variants, forced whatever the device, in both
/// precisions; the CPU variant also with its sparse layer-1 kernels forced (auto takes the dense kernel on the
/// suite's random images: their blocks of 8 keep most pixel columns).</summary>
public abstract class OpenClConformance(string variant, Precision precision, KernelMode kernel = KernelMode.Auto)
    : TrainingBackendConformance
{
    protected override ITrainingBackend Create(IReadOnlyList<int> sizes, OptimizerSettings optimizer, int maxBatch)
    {
        OpenClTestDevice.RequireOpenCl();
        // Profiling: the kernels' rows come from OpenCL event profiling, which the queue must be created with,
        // as the catalog does for train --profile / --trace
        return new OpenClBackend(sizes, optimizer, maxBatch, new OpenClBackendOptions
        {
            Device = OpenClTestDevice.Device,
            Variant = variant,
            Precision = precision,
            Profiling = true,
            Kernel = kernel,
        });
    }

    protected override double Tolerance => precision == Precision.F64 ? 1e-10 : 1e-4;
}

[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClCpuVariantF32Conformance() : OpenClConformance("cpu", Precision.F32);

[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClCpuVariantF64Conformance() : OpenClConformance("cpu", Precision.F64);

[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClCpuVariantSparseF32Conformance() : OpenClConformance("cpu", Precision.F32, KernelMode.Sparse);

[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClCpuVariantSparseF64Conformance() : OpenClConformance("cpu", Precision.F64, KernelMode.Sparse);

[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClGpuVariantF32Conformance() : OpenClConformance("gpu", Precision.F32);

[Collection(OpenClTestDevice.Collection)]
public sealed class OpenClGpuVariantF64Conformance() : OpenClConformance("gpu", Precision.F64);

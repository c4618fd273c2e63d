using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using Xunit.Abstractions;

namespace MnistNative.Tests.Conformance;

// The SIMD backends are float32: the suite's default tolerances (those of the float32 scalar reference) apply.
// Each width runs the suite with its dense and its sparse layer-1 kernels forced (auto picks sparse on the suite's
// MNIST-like data, so the plain classes cover auto too).

public sealed class Avx2OneThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx2Backend(hidden, threads: 1);
}

public sealed class Avx2TwoThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx2Backend(hidden, threads: 2);
}

public sealed class Avx512OneThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx512Backend(hidden, threads: 1);
}

public sealed class Avx512TwoThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx512Backend(hidden, threads: 2);
}

public sealed class Avx2DenseConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx2Backend(hidden, threads: 2, KernelMode.Dense);
}

public sealed class Avx2SparseConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx2Backend(hidden, threads: 2, KernelMode.Sparse);
}

public sealed class Avx512DenseConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx512Backend(hidden, threads: 2, KernelMode.Dense);
}

public sealed class Avx512SparseConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override IFullBatchBackend Create(int hidden) => new Avx512Backend(hidden, threads: 2, KernelMode.Sparse);
}

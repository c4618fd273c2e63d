using MnistNative.Backends.Cpu.Simd;
using MnistNative.Core;
using Xunit.Abstractions;

namespace MnistNative.Tests.Conformance;

// The SIMD backends are float32: the suite's default tolerances (those of the float32 scalar reference) apply.

public sealed class Avx2OneThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override ITrainingBackend Create(int hidden) => new Avx2Backend(hidden, threads: 1);
}

public sealed class Avx2TwoThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override ITrainingBackend Create(int hidden) => new Avx2Backend(hidden, threads: 2);
}

public sealed class Avx512OneThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override ITrainingBackend Create(int hidden) => new Avx512Backend(hidden, threads: 1);
}

public sealed class Avx512TwoThreadConformance(ITestOutputHelper output) : BackendConformance(output)
{
    protected override ITrainingBackend Create(int hidden) => new Avx512Backend(hidden, threads: 2);
}

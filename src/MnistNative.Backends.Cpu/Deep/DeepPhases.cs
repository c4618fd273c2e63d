using System.Runtime.Intrinsics;
using MnistNative.Backends.Cpu.Simd;

namespace MnistNative.Backends.Cpu.Deep;

/// <summary>Where the deep SIMD backend's step time goes (per phase and layer), summed over all instances; for bench-minibatch.</summary>
public static class DeepPhases
{
    public static long[] Ticks => DeepSimdBackend<Avx2Width, Vector256<float>>.PhaseTicks;
}

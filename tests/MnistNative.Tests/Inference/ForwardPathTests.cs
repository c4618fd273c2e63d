using System.Runtime.Intrinsics;
using MnistNative.Inference;
using Xunit;

namespace MnistNative.Tests.Inference;

// MnistClassifier runs every call through one ForwardPath chosen at load (or when a test forces a kernel): which
// family each model shape and kernel gets.
public sealed class ForwardPathTests
{
    private static MnistClassifier Random(int[] sizes)
    {
        var (w, b) = InferenceFixtures.RandomModel(sizes, seed: 7);
        return MnistClassifier.Load(InferenceFixtures.NpzBytes(sizes, w, b, float32: true));
    }

    [SkippableFact]
    public void TheSeedsShapeTakesTheSmallModelKernelsWithTheIntegerPassBeforeThem()
    {
        Skip.IfNot(Width256.IsSupported && ForwardKernels.CanRunSmall256, "no AVX2 + FMA: no small-model kernels");
        using MnistClassifier c = Random([784, 10, 10]);
        c.ForceKernel(InferenceKernel.Avx2);
        var int16 = Assert.IsType<Int16FirstLayerPath>(c.Path);
        Assert.IsType<SmallModelPath<Width256, Vector256<float>, SmallModelKernels256>>(int16.Float);
        c.DisableInt16Pass();
        Assert.IsType<SmallModelPath<Width256, Vector256<float>, SmallModelKernels256>>(c.Path);
        Assert.Equal(InferenceKernel.Avx2, c.Kernel);
        if (SmallModelKernels512.IsSupported)
        {
            c.ForceKernel(InferenceKernel.Avx512);
            var wide = Assert.IsType<Int16FirstLayerPath>(c.Path);
            Assert.IsType<SmallModelPath<Width512, Vector512<float>, SmallModelKernels512>>(wide.Float);
        }
        // 11..16 hidden units: the small float kernels without the integer pass
        using MnistClassifier sixteen = Random([784, 16, 10]);
        sixteen.ForceKernel(InferenceKernel.Avx2);
        Assert.IsType<SmallModelPath<Width256, Vector256<float>, SmallModelKernels256>>(sixteen.Path);
    }

    [SkippableFact]
    public void OtherShapesTakeTheSparsePathOfTheKernelsWidth()
    {
        foreach (int[] sizes in new[] { new[] { 784, 17, 10 }, [784, 32, 16, 10], [784, 10, 10, 10] })
        {
            using MnistClassifier c = Random(sizes);
            c.ForceKernel(InferenceKernel.Scalar);
            Assert.IsType<ScalarPath>(c.Path);
            if (Width128.IsSupported)
            {
                c.ForceKernel(InferenceKernel.Sse41);
                Assert.IsType<SparsePath<Width128, Vector128<float>>>(c.Path);
            }
            if (Width256.IsSupported)
            {
                c.ForceKernel(InferenceKernel.Avx2);
                Assert.IsType<SparsePath<Width256, Vector256<float>>>(c.Path);
            }
            if (Width512.IsSupported)
            {
                // layer 1 over pixel pairs in integers where AVX-512BW runs it, else the float path
                c.ForceKernel(InferenceKernel.Avx512);
                if (PairedFirstLayerPath.IsSupported) Assert.IsType<PairedFirstLayerPath>(c.Path);
                else Assert.IsType<SparsePath<Width512, Vector512<float>>>(c.Path);
                c.DisableInt16Pass();
                Assert.IsType<SparsePath<Width512, Vector512<float>>>(c.Path);
            }
        }
        // the seed's shape on kernels without small-model kernels
        using MnistClassifier seed = Random([784, 10, 10]);
        seed.ForceKernel(InferenceKernel.Scalar);
        Assert.IsType<ScalarPath>(seed.Path);
        Assert.False(seed.Int16Pass);
    }
}

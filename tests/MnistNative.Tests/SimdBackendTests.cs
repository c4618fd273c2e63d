using System.Diagnostics;
using MnistNative.Backends;
using MnistNative.Backends.Cpu;
using MnistNative.Backends.Cpu.Simd;
using MnistNative.Cli;
using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Tests.Conformance;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests;

/// <summary>The SIMD backend beyond the conformance suite: determinism, threads, the fused path's kernel choice and
/// seed parity, the paths sharing one model, allocation, fallback.</summary>
public sealed class SimdBackendTests(ITestOutputHelper output)
{
    public static TheoryData<string> Names => new() { "avx2", "avx512" };

    /// <summary>Both widths with each layer-1 kernel forced.</summary>
    public static TheoryData<string, KernelMode> NamesAndKernels => new()
    {
        { "avx2", KernelMode.Dense }, { "avx2", KernelMode.Sparse },
        { "avx512", KernelMode.Dense }, { "avx512", KernelMode.Sparse },
    };

    internal static ITrainingBackend Create(string name, int hidden, int threads, KernelMode kernel = KernelMode.Auto,
        int maxBatch = 60_000) => Create(name, [784, hidden, 10], OptimizerSettings.Gd, maxBatch, threads, kernel);

    internal static ITrainingBackend Create(string name, int[] sizes, OptimizerSettings optimizer, int maxBatch,
        int threads, KernelMode kernel = KernelMode.Auto)
    {
        try
        {
            return SimdBackend.Create(name, sizes, optimizer, maxBatch, threads, kernel);
        }
        catch (BackendUnavailableException e) when (Environment.GetEnvironmentVariable("CI") != "true")
        {
            Skip.If(true, $"backend unavailable on this machine: {e.Message}");
            throw;
        }
    }

    private static MlpParameters Train(string name, int threads, int hidden, int steps,
        KernelMode kernel = KernelMode.Auto)
    {
        var (data, weights) = TrainingBackendConformance.RandomProblem([784, hidden, 10], 1000, seed: 7);
        using ITrainingBackend b = Create(name, hidden, threads, kernel);
        b.Upload(data);
        Assert.Equal(kernel == KernelMode.Dense ? "dense" : "sparse", b.KernelChoice!.Name);
        b.SetWeights(weights);
        for (int i = 0; i < steps; i++) b.Step(TrainingBatch.WholeSet, 0.5, measure: i % 5 == 0);
        return b.GetWeights();
    }

    [SkippableTheory]
    [MemberData(nameof(NamesAndKernels))]
    public void SameThreadsGiveBitwiseIdenticalWeights(string name, KernelMode kernel)
    {
        foreach (int threads in new[] { 1, 2, 3 })
        {
            MlpParameters a = Train(name, threads, 33, 20, kernel), b = Train(name, threads, 33, 20, kernel);
            for (int l = 0; l < 2; l++)
            {
                Assert.Equal(a.W[l], b.W[l]);
                Assert.Equal(a.B[l], b.B[l]);
            }
        }
    }

    [SkippableTheory]
    [MemberData(nameof(NamesAndKernels))]
    public void OneAndTwoThreadsAgree(string name, KernelMode kernel)
    {
        MlpParameters one = Train(name, 1, 10, 20, kernel), two = Train(name, 2, 10, 20, kernel);
        double max = 0;
        for (int l = 0; l < 2; l++)
            for (int i = 0; i < one.W[l].Length; i++)
            {
                double diff = Math.Abs(one.W[l][i] - two.W[l][i]);
                max = Math.Max(max, diff);
                Assert.True(diff <= 1e-5 + 1e-4 * Math.Abs(one.W[l][i]),
                    $"w{l + 1}[{i}]: 1 thread {one.W[l][i]:R}, 2 threads {two.W[l][i]:R}");
            }
        output.WriteLine($"{name} {kernel}: max |1 thread - 2 threads| after 20 steps: {max:E2}");
    }

    /// <summary>The sparse kernels compute the same sums as the dense ones in another order: float reassociation
    /// only.</summary>
    [SkippableTheory]
    [MemberData(nameof(Names))]
    public void SparseAndDenseKernelsAgree(string name)
    {
        // 10 and 31 (odd): sample blocks; 33, 128: the blocks' forward and the rows' gradient
        foreach (int hidden in new[] { 10, 31, 33, 128 })
        {
            MlpParameters dense = Train(name, 2, hidden, 10, KernelMode.Dense);
            MlpParameters sparse = Train(name, 2, hidden, 10, KernelMode.Sparse);
            double max = 0;
            for (int l = 0; l < 2; l++)
                for (int i = 0; i < dense.W[l].Length; i++)
                {
                    double diff = Math.Abs(dense.W[l][i] - sparse.W[l][i]);
                    max = Math.Max(max, diff);
                    Assert.True(diff <= 1e-5 + 1e-4 * Math.Abs(dense.W[l][i]),
                        $"H={hidden} w{l + 1}[{i}]: dense {dense.W[l][i]:R}, sparse {sparse.W[l][i]:R}");
                }
            output.WriteLine($"{name} H={hidden}: max |dense - sparse| after 10 steps: {max:E2}");
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Names))]
    public void AutoPicksSparseForMnistLikeImagesAndDenseForImagesWithoutZeros(string name)
    {
        var (sparseData, _) = TrainingBackendConformance.RandomProblem([784, 10, 10], 200, seed: 8);
        var rng = new Random(8);
        var full = new byte[sparseData.Pixels.Length];
        for (int i = 0; i < full.Length; i++) full[i] = (byte)rng.Next(1, 256); // like standardised pixels: no zeros
        var denseData = new LabeledImages(full, sparseData.Labels);
        foreach (int hidden in new[] { 10, 128 })
        {
            using ITrainingBackend b = Create(name, hidden, 1);
            Assert.Null(b.KernelChoice);
            b.Upload(sparseData);
            KernelChoice mnistLike = b.KernelChoice!;
            b.Upload(denseData);
            KernelChoice noZeros = b.KernelChoice!;
            output.WriteLine(
                $"{name} H={hidden}: {mnistLike.Name}: {mnistLike.Reason}\n{noZeros.Name}: {noZeros.Reason}");
            Assert.Equal(KernelMode.Sparse, mnistLike.Kernel);
            Assert.InRange(mnistLike.Density, 0.15, 0.25);
            Assert.StartsWith("auto: ", mnistLike.Reason);
            Assert.Equal(KernelMode.Dense, noZeros.Kernel);
            Assert.Equal(1.0, noZeros.Density);
            Assert.StartsWith("auto: dense (100.0", noZeros.Reason, StringComparison.Ordinal);
            Assert.True(mnistLike.UsefulFlopsPerStep < 0.5 * FlopCount.TrainingStep(200, hidden));
            Assert.Equal(FlopCount.TrainingStep(200, hidden), noZeros.UsefulFlopsPerStep,
                1e-6 * noZeros.UsefulFlopsPerStep);
            // after a re-upload the backend trains with the kernel it picked last, from the same weights
            b.SetWeights(MlpParameters.Initialize([784, hidden, 10], 8));
            Assert.Equal(200, b.Step(TrainingBatch.WholeSet, 0.1, measure: true).Count);
        }
    }

    /// <summary>MNIST's similar digits share their strokes, so blocks of them keep few pixel columns: auto picks
    /// the sample blocks at a narrow hidden layer, and at a wide one their forward with the rows' gradient.</summary>
    [SkippableTheory]
    [MemberData(nameof(Names))]
    public void AutoPicksSampleBlocksForMnistAtNarrowHiddenLayers(string name)
    {
        LabeledImages mnist = TestPaths.Train.Take(2000);
        foreach ((int hidden, string kernel) in new[] { (10, "sparse sample blocks"), (31, "sparse sample blocks"),
            (128, "sparse sample blocks forward, rows gradient") })
        {
            using ITrainingBackend b = Create(name, hidden, 1);
            b.Upload(mnist);
            output.WriteLine($"{name} H={hidden}: {b.KernelChoice!.Reason}");
            Assert.Equal(KernelMode.Sparse, b.KernelChoice.Kernel);
            Assert.StartsWith($"auto: {kernel} (", b.KernelChoice.Reason, StringComparison.Ordinal);
        }
    }

    /// <summary>Every layer-1 kernel at both widths: dense, the sparse family auto would take on MNIST (sample
    /// blocks), and the sparse rows forced.</summary>
    public static TheoryData<string, KernelMode, bool> NamesKernelsAndRows => new()
    {
        { "avx2", KernelMode.Dense, false }, { "avx2", KernelMode.Sparse, false }, { "avx2", KernelMode.Sparse, true },
        { "avx512", KernelMode.Dense, false }, { "avx512", KernelMode.Sparse, false },
        { "avx512", KernelMode.Sparse, true },
    };

    [SkippableTheory]
    [MemberData(nameof(NamesKernelsAndRows))]
    public void Float32MatchesTheSeedFor1000Iterations(string name, KernelMode kernel, bool rows)
    {
        var (expected, expectedTest) = SeedParityTests.Expected();
        using ITrainingBackend backend = Create(name, 10, 0, kernel, maxBatch: 10_000);
        if (rows) ((ISparseFamilyChoice)backend).SparseFamily = Layer1Kernel.Rows;
        backend.Upload(TestPaths.Train.Take(10_000));
        string ran = backend.KernelChoice!.Reason;
        if (kernel == KernelMode.Sparse)
            Assert.StartsWith(rows ? "forced: sparse rows (" : "forced by --kernel sparse: sparse sample blocks (",
                ran);
        backend.SetWeights(ModelFile.Load(Path.Combine(TestPaths.SeedParity, "init.npz")));
        var clock = Stopwatch.StartNew();
        int logged = 0;
        for (int i = 0; i < 1000; i++)
        {
            // the seed's log: the metrics of iteration i's forward pass, before its update, every 50 iterations
            StepMetrics got = backend.Step(TrainingBatch.WholeSet, 0.1, measure: i % 50 == 0);
            if (i % 50 != 0) continue;
            logged++;
            SeedParityTests.ExpectedLog want = expected.Single(e => e.Iteration == i);
            output.WriteLine($"iteration {i}: accuracy {got.Accuracy:F4} (seed {want.TrainAccuracy:F4}), "
                + $"loss {got.Loss:F6} (seed {want.Loss:F6})");
            Assert.InRange(got.Accuracy, want.TrainAccuracy - 0.003, want.TrainAccuracy + 0.003);
        }
        double msPerIteration = clock.Elapsed.TotalMilliseconds / 1000;
        Assert.Equal(20, logged);
        var probabilities = new double[TestPaths.Test.Count * 10];
        backend.Predict(TestPaths.Test.Pixels, probabilities);
        int[] predictions = Enumerable.Range(0, TestPaths.Test.Count)
            .Select(i => Backends.Cpu.Reference.Reference.ArgMax<double>(probabilities.AsSpan(i * 10, 10))).ToArray();
        double test = Evaluation.Accuracy(predictions, TestPaths.Test.Labels);
        output.WriteLine(
            $"{name} {kernel}: test accuracy {test:F4} (seed {expectedTest:F4}), {msPerIteration:F2} ms/iteration");
        Assert.InRange(test, expectedTest - 0.003, expectedTest + 0.003);
    }

    [SkippableTheory]
    [InlineData("avx512", "DOTNET_EnableAVX512", "avx2")]
    [InlineData("avx2", "DOTNET_EnableAVX2", "none")]
    public void DisabledInstructionSetIsAClearErrorAndTheNextBestIsChosen(string disabled, string variable,
        string expectedBest)
    {
        Skip.IfNot(CpuFeatures.CanRunAvx2 && CpuFeatures.CanRunAvx512,
            "needs a CPU with both AVX2 and AVX-512F to switch one off");
        string probe = ProbePath();
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        start.ArgumentList.Add(probe);
        start.Environment[variable] = "0";
        using Process p = Process.Start(start)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "the probe did not finish in 60 s");
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, p.ExitCode);
        string[] lines = stdout.Split('\n', StringSplitOptions.TrimEntries);
        string line = lines.Single(l => l.StartsWith(disabled + ":", StringComparison.Ordinal));
        Assert.StartsWith($"{disabled}: unavailable: backend {disabled} needs", line);
        Assert.Contains(disabled == "avx512" ? "AVX-512F" : "AVX2", line);
        Assert.Contains(lines, l => l.StartsWith($"best: {expectedBest}:", StringComparison.Ordinal));
        if (disabled == "avx512")
        {
            Assert.Contains("avx2: ok", lines);
            // the remaining width still trains with both layer-1 kernels
            Assert.Contains(lines, l => l.StartsWith("avx2 dense: ok (loss ", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("avx2 sparse: ok (loss ", StringComparison.Ordinal));
            Assert.DoesNotContain(lines, l => l.StartsWith("avx512 ", StringComparison.Ordinal));
        }
    }

    private static string ProbePath()
    {
        var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string config = tfm.Parent!.Name;
        string path = Path.Combine(TestPaths.RepoRoot, "tests", "MnistNative.FeatureProbe", "bin", config, tfm.Name,
            "MnistNative.FeatureProbe.dll");
        Assert.True(File.Exists(path), $"the feature probe is not built at {path}");
        return path;
    }

    /// <summary>The dedicated workers' managed allocations so far, for either width.</summary>
    internal static Func<long> WorkerAllocatedBytes(ITrainingBackend b) => b switch
    {
        SimdBackend<Width256, System.Runtime.Intrinsics.Vector256<float>> a => () => a.WorkerAllocatedBytes,
        SimdBackend<Width512, System.Runtime.Intrinsics.Vector512<float>> a => () => a.WorkerAllocatedBytes,
        _ => throw new ArgumentException($"not a SIMD backend: {b.GetType()}"),
    };

    [SkippableFact]
    public void AutoPicksTheWidestSimdBackendAndSaysWhy()
    {
        var said = new List<string>();
        BackendRequest request = BackendRequest.FullBatch("auto", Precision.F32, 10, 100) with { Threads = 1 };
        using ITrainingBackend b = BackendCatalog.Create(request, said.Add);
        var (best, _) = CpuFeatures.BestSimdBackend();
        Assert.Equal(best ?? "scalar", b.Info.Name);
        Assert.Contains(said,
            s => s.StartsWith($"backend auto: picked {best ?? "scalar"} (", StringComparison.Ordinal));
        output.WriteLine(string.Join("\n", said));
    }

    [Theory]
    [InlineData("avx2")]
    [InlineData("avx512")]
    public void F64OnASimdBackendIsAClearError(string name)
    {
        var e = Assert.Throws<BackendUnavailableException>(() =>
            BackendCatalog.Create(BackendRequest.FullBatch(name, Precision.F64, 10, 100), _ => { }));
        Assert.Contains("f64 is only on the scalar and opencl backends", e.Message);
    }

    [Fact]
    public void CpuFeaturesDescribeThemselves()
    {
        IReadOnlyList<string> lines = CpuFeatures.Describe();
        foreach (string l in lines) output.WriteLine(l);
        Assert.Contains(lines, l => l.Contains("AVX-512F", StringComparison.Ordinal));
        Assert.Equal(CpuFeatures.CanRunAvx512, CpuFeatures.RunnableSimdBackends().Contains("avx512"));
    }
}

/// <summary>Process-wide measurements, so these run alone.</summary>
[Collection(nameof(SerialCollection))]
public sealed class SimdAllocationTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [MemberData(nameof(SimdBackendTests.NamesAndKernels), MemberType = typeof(SimdBackendTests))]
    public void TrainingAllocatesNothingAfterSetup(string name, KernelMode kernel)
    {
        // the sparse weight gradient walks rows at H=10, pixel columns at H=128
        foreach (int hidden in new[] { 10, 128 })
        {
            var (data, weights) = TrainingBackendConformance.RandomProblem([784, hidden, 10], 1000, seed: 5);
            using ITrainingBackend b = SimdBackendTests.Create(name, hidden, 2, kernel);
            b.Upload(data);
            b.SetWeights(weights);
            b.Step(TrainingBatch.WholeSet, 0.1, measure: true); // first call: JIT and lazily created events
            Func<long> workers = SimdBackendTests.WorkerAllocatedBytes(b);
            long workersBefore = workers();
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100; i++) b.Step(TrainingBatch.WholeSet, 0.1, measure: i % 50 == 0);
            long caller = GC.GetAllocatedBytesForCurrentThread() - before;
            long worker = workers() - workersBefore;
            output.WriteLine($"{name} {kernel} H={hidden}: 100 steps allocated {caller} bytes on the calling thread, "
                + $"{worker} on the workers");
            Assert.Equal(0, caller);
            Assert.Equal(0, worker);
        }
    }
}

/// <summary>Tests that measure process-wide allocation run alone.</summary>
[CollectionDefinition(nameof(SerialCollection), DisableParallelization = true)]
public sealed class SerialCollection;

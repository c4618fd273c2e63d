using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Microsoft.ML.OnnxRuntime;
using MnistNative.Cli.Onnx;
using MnistNative.Inference;

namespace MnistNative.Benchmarks;

/// <summary>
/// Inference of three models (Model: the seed's 784-10-10, and the PyTorch exports 784-128-10 and
/// 784-384-128-10 in tests/fixtures/onnx, loaded from their .onnx files) side by side: MnistClassifier in process,
/// the same library through its C ABI (the NativeAOT libmnistnative.so, P/Invoke), and ONNX Runtime on the model
/// exported by <see cref="OnnxExporter"/>. One image (the first test image; bytes for MnistNative, floats already
/// scaled to [0, 1] for ONNX Runtime, whose graph takes floats) and the 10,000 test images on 1 and 2 threads.
/// MnistNative returns labels (argmax); ONNX Runtime returns the 10 softmax probabilities per image.
/// The C ABI rows need the published library (build.cake --target=Native, or MNISTNATIVE_NATIVE_LIB);
/// without it Program leaves them out with a message.
/// </summary>
[MemoryDiagnoser, MedianColumn, MinColumn]
public unsafe class InferenceBenchmarks
{
    public const string CAbiCategory = "CAbi";
    private const int Images = 10_000;

    private MnistClassifier _classifier = null!;
    private byte[] _images = [];
    private byte[] _one = [];
    private readonly int[] _labels = new int[Images];
    private string _onnxPath = "";

    private nint _lib;
    private ulong _model;
    private delegate* unmanaged<ulong, byte*, nuint, int*, int> _predictU8;
    private delegate* unmanaged<ulong, byte*, nuint, nuint, int*, nuint, int> _predictBatchU8;
    private delegate* unmanaged<ulong, int> _free;

    private InferenceSession _ort1 = null!, _ort2 = null!;
    private RunOptions _runOptions = null!;
    private OrtValue _oneIn = null!, _oneOut = null!, _batchIn = null!, _batchOut = null!;
    private OrtIoBinding _binding = null!;
    private readonly string[] _inNames = [OnnxExporter.InputName], _outNames = [OnnxExporter.OutputName];
    private OrtValue[] _oneIns = [], _oneOuts = [], _batchIns = [], _batchOuts = [];

    /// <summary>MNISTNATIVE_BENCH_MODEL, else the seed's trained model, tests/fixtures/seed-parity/final.npz.</summary>
    public static string ModelPath => Environment.GetEnvironmentVariable("MNISTNATIVE_BENCH_MODEL") is { Length: > 0 } m
        ? m
        : Path.Combine(RepoRoot ?? ".", "tests", "fixtures", "seed-parity", "final.npz");

    /// <summary>MNISTNATIVE_NATIVE_LIB, else artifacts/native/libmnistnative.so in the checkout.</summary>
    public static string NativeLibPath =>
        Environment.GetEnvironmentVariable("MNISTNATIVE_NATIVE_LIB") is { Length: > 0 } p
        ? p
        : Path.Combine(RepoRoot ?? ".", "artifacts", "native", "libmnistnative.so");

    public static string? RepoRoot
    {
        get
        {
            foreach (string start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
                for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
                    if (File.Exists(Path.Combine(dir.FullName, "MnistNative.sln"))) return dir.FullName;
            return null;
        }
    }

    /// <summary>seed: <see cref="ModelPath"/>; the others: PyTorch exports in tests/fixtures/onnx.</summary>
    [ParamsSource(nameof(Models))]
    public string Model { get; set; } = "seed";

    /// <summary>MNISTNATIVE_BENCH_MODELS (comma-separated, e.g. "784-384-128-10"), else all three.</summary>
    public static IEnumerable<string> Models =>
        Environment.GetEnvironmentVariable("MNISTNATIVE_BENCH_MODELS") is { Length: > 0 } list
        ? list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        : ["seed", "784-128-10", "784-384-128-10"];

    private string ModelFile => Model switch
    {
        "seed" => ModelPath,
        "784-128-10" => Path.Combine(RepoRoot ?? ".", "tests", "fixtures", "onnx", "mlp_784_128_10_gemm.onnx"),
        "784-384-128-10" => Path.Combine(RepoRoot ?? ".", "tests", "fixtures", "onnx", "mlp_784_384_128_10.onnx"),
        _ => throw new ArgumentException($"unknown model {Model}"),
    };

    [GlobalSetup]
    public void Setup()
    {
        _images = Workload.Test.Pixels.AsSpan(0, Images * MnistClassifier.PixelCount).ToArray();
        _one = _images.AsSpan(0, MnistClassifier.PixelCount).ToArray();
        string modelFile = ModelFile;
        _classifier = MnistClassifier.Load(modelFile);

        if (File.Exists(NativeLibPath))
        {
            _lib = NativeLibrary.Load(NativeLibPath);
            var load = (delegate* unmanaged<byte*, ulong*, int>)NativeLibrary.GetExport(_lib, "mn_load_path");
            _predictU8 = (delegate* unmanaged<ulong, byte*, nuint, int*, int>)
                NativeLibrary.GetExport(_lib, "mn_predict_u8");
            _predictBatchU8 = (delegate* unmanaged<ulong, byte*, nuint, nuint, int*, nuint, int>)
                NativeLibrary.GetExport(_lib, "mn_predict_batch_u8");
            _free = (delegate* unmanaged<ulong, int>)NativeLibrary.GetExport(_lib, "mn_free");
            byte[] path = System.Text.Encoding.UTF8.GetBytes(modelFile + "\0");
            ulong model;
            fixed (byte* p = path) Check(load(p, &model), "mn_load_path");
            _model = model;
        }

        _onnxPath = Path.Combine(Path.GetTempPath(), $"mnistnative-bench-{Environment.ProcessId}.onnx");
        // ONNX Runtime runs the exporter's graph of the same weights (Gemm, Relu, Softmax; dynamic batch): the
        // 784-128-10 fixture is exported with a fixed batch of 1, which ORT could not run as one batch of 10k
        OnnxExporter.Export(modelFile, _onnxPath);
        _ort1 = Session(1);
        _ort2 = Session(2);
        _runOptions = new RunOptions();
        float[] oneF = new float[MnistClassifier.PixelCount], batchF = new float[_images.Length];
        for (int i = 0; i < _images.Length; i++) batchF[i] = _images[i] * (1f / 255f);
        Array.Copy(batchF, oneF, oneF.Length);
        _oneIn = OrtValue.CreateTensorValueFromMemory(oneF, [1, MnistClassifier.PixelCount]);
        _oneOut = OrtValue.CreateTensorValueFromMemory(
            new float[MnistClassifier.ClassCount], [1, MnistClassifier.ClassCount]);
        _batchIn = OrtValue.CreateTensorValueFromMemory(batchF, [Images, MnistClassifier.PixelCount]);
        _batchOut = OrtValue.CreateTensorValueFromMemory(
            new float[Images * MnistClassifier.ClassCount], [Images, MnistClassifier.ClassCount]);
        _oneIns = [_oneIn]; _oneOuts = [_oneOut]; _batchIns = [_batchIn]; _batchOuts = [_batchOut];
        _binding = _ort1.CreateIoBinding();
        _binding.BindInput(OnnxExporter.InputName, _oneIn);
        _binding.BindOutput(OnnxExporter.OutputName, _oneOut);
    }

    private InferenceSession Session(int threads)
    {
        using var options = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        return new InferenceSession(_onnxPath, options);
    }

    private static void Check(int status, string what)
    {
        if (status != 0) throw new InvalidOperationException($"{what} returned status {status}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _classifier.Dispose();
        if (_lib != 0)
        {
            _free(_model);
            // the library stays loaded: NativeAOT libraries cannot be unloaded
        }
        _binding.Dispose();
        foreach (var v in new[] { _oneIn, _oneOut, _batchIn, _batchOut }) v.Dispose();
        _runOptions.Dispose();
        _ort1.Dispose();
        _ort2.Dispose();
        File.Delete(_onnxPath);
    }

    [Benchmark(Description = "MnistClassifier.Predict, 1 image (bytes)")]
    public int ClassifierSingle() => _classifier.Predict(_one);

    [Benchmark(Description = "MnistClassifier.PredictBatch, 10k, 1 thread")]
    public void ClassifierBatch1() => _classifier.PredictBatch(_images, _labels, maxThreads: 1);

    [Benchmark(Description = "MnistClassifier.PredictBatch, 10k, 2 threads")]
    public void ClassifierBatch2() => _classifier.PredictBatch(_images, _labels, maxThreads: 2);

    [Benchmark(Description = "C ABI mn_predict_u8, 1 image")]
    [BenchmarkCategory(CAbiCategory)]
    public int CAbiSingle()
    {
        int label;
        fixed (byte* p = _one) Check(_predictU8(_model, p, (nuint)_one.Length, &label), "mn_predict_u8");
        return label;
    }

    [Benchmark(Description = "C ABI mn_predict_batch_u8, 10k, all cores (2)")]
    [BenchmarkCategory(CAbiCategory)]
    public void CAbiBatch()
    {
        fixed (byte* p = _images)
        fixed (int* l = _labels)
            Check(_predictBatchU8(_model, p, (nuint)_images.Length, Images, l, Images), "mn_predict_batch_u8");
    }

    [Benchmark(Description = "ORT Run, 1 image, reused OrtValues, 1 thread")]
    public void OrtSingle() => _ort1.Run(_runOptions, _inNames, _oneIns, _outNames, _oneOuts);

    [Benchmark(Description = "ORT RunWithBinding, 1 image, IOBinding, 1 thread")]
    public void OrtSingleIoBinding() => _ort1.RunWithBinding(_runOptions, _binding);

    [Benchmark(Description = "ORT Run, 10k, intra-op 1 thread")]
    public void OrtBatch1() => _ort1.Run(_runOptions, _inNames, _batchIns, _outNames, _batchOuts);

    [Benchmark(Description = "ORT Run, 10k, intra-op 2 threads")]
    public void OrtBatch2() => _ort2.Run(_runOptions, _inNames, _batchIns, _outNames, _batchOuts);
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Runtime.InteropServices;
using MnistNative.Formats;
using MnistNative.Inference.Onnx;

[module: SkipLocalsInit] // per-call scratch is stackalloc'd and fully written before it is read

namespace MnistNative.Inference;

/// <summary>
/// A trained MNIST MLP (784 -> hidden layers -> 10, ReLU, softmax) ready to classify images.
/// Loads the seed's .npz format: w1 (H1,784), b1 (H1,1) or (H1,), ..., wL (10,H_{L-1}), bL (10,1);
/// float64 or float32 arrays, kept as float32, 64-byte aligned, in one pinned array (the pinned object heap).
/// All prediction methods allocate nothing, may be called from many threads at once on one instance,
/// and throw <see cref="ObjectDisposedException"/> after <see cref="Dispose"/>. A call costs no interlocked
/// operation: Dispose only marks the model, calls already in flight keep the instance (and so the weights)
/// alive until they return, and the weights go with the instance when the GC collects it.
/// </summary>
public sealed unsafe partial class MnistClassifier : IDisposable, IRangePredictor
{
    public const int PixelCount = 784;
    public const int ClassCount = 10;
    private const int MaxWidth = 1 << 16;
    private const int StackScratchBytes = 48 * 1024;

    private readonly DenseLayer[] _layers;
    private readonly int _scratchBytes;
    private readonly float[] _memory; // pinned; the layers point into it
    private readonly Int16FirstLayer? _int16; // one hidden layer of at most 10 units: the integer first pass
    private readonly PairedFirstLayer? _pairs; // any other shape: layer 1 over pixel pairs in integers
    private int _disposed;
    private InferenceKernel _kernel;
    private ForwardPath _path; // chosen by UsePath: the one object every entry point runs through

    private MnistClassifier(string source, Dictionary<string, NpyArray> arrays, List<string> unexpected)
    {
        int[] sizes = Validate(source, arrays, unexpected);
        int layerCount = sizes.Length - 1;
        var offsets = new long[layerCount * 2];
        long floats = 0;
        for (int l = 0; l < layerCount; l++)
        {
            int outPad = Pad(sizes[l + 1]);
            offsets[2 * l] = floats; floats += (long)sizes[l] * outPad;
            offsets[2 * l + 1] = floats; floats += outPad;
        }
        if (floats > (1L << 28))
            throw new DataFormatException(source, $"holds {floats} weights; more than this library accepts (2^28)");
        // zeroed: the padding columns must be 0, they feed ReLU and the next layer; + 15 floats to align to 64 bytes
        _memory = GC.AllocateArray<float>((int)floats + 15, pinned: true);
        float* basePtr = (float*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_memory)) + 63)
            & ~(nint)63);
        _layers = new DenseLayer[layerCount];
        for (int l = 0; l < layerCount; l++)
        {
            int inputs = sizes[l], outputs = sizes[l + 1], outPad = Pad(outputs);
            float* wt = basePtr + offsets[2 * l], bias = basePtr + offsets[2 * l + 1];
            NpyArray w = arrays[$"w{l + 1}"], b = arrays[$"b{l + 1}"];
            for (int j = 0; j < outputs; j++)
                for (int k = 0; k < inputs; k++)
                    wt[(long)k * outPad + j] = ReadFloat(w, (long)j * inputs + k);
            for (int j = 0; j < outputs; j++) bias[j] = ReadFloat(b, j);
            for (long i = 0; i < (long)inputs * outPad; i++)
                if (!float.IsFinite(wt[i]))
                    throw new DataFormatException(source,
                        $"w{l + 1} holds NaN or infinite values (or values beyond float32 range)");
            for (int j = 0; j < outputs; j++)
                if (!float.IsFinite(bias[j]))
                    throw new DataFormatException(source,
                        $"b{l + 1} holds NaN or infinite values (or values beyond float32 range)");
            _layers[l] = new DenseLayer(inputs, outputs, outPad, wt, bias);
        }
        Sizes = sizes;
        if (layerCount == 2 && sizes[1] <= Int16FirstLayer.Units)
            _int16 = Int16FirstLayer.Build(_layers[0].Wt, _layers[0].Bias, sizes[1], _layers[1].Wt, _layers[1].Bias);
        bool seedShape = layerCount == 2 && _layers[0].OutPad == ForwardKernels.Lane;
        if (!seedShape && PairedFirstLayerPath.IsSupported) _pairs = PairedFirstLayer.Build(_layers);
        _scratchBytes = ForwardPath.ScratchBytes(sizes[..^1].Max(), _layers.Max(x => x.OutPad));
        _path = UsePath(ForwardKernels.Best, int16Pass: true);
    }

    // The path for this model and kernel: the seed's shape (one hidden layer of at most 16 units: W1t rows are one
    // 64-byte line, W2t is (H, 16)) takes the fused small-model kernels, with the integer first pass before them for
    // at most 10 units; any other model the sparse path of the kernel's width.
    private ForwardPath UsePath(InferenceKernel kernel, bool int16Pass)
    {
        _kernel = kernel;
        bool seedShape = _layers.Length == 2 && _layers[0].OutPad == ForwardKernels.Lane
            && _layers[1].OutPad == ForwardKernels.Lane;
        ForwardPath? small = !seedShape ? null
            : kernel == InferenceKernel.Avx512 && SmallModelKernels512.IsSupported
                ? new SmallModelPath<Width512, Vector512<float>, SmallModelKernels512>(_layers)
            : (kernel == InferenceKernel.Avx512 || kernel == InferenceKernel.Avx2) && SmallModelKernels256.IsSupported
                ? new SmallModelPath<Width256, Vector256<float>, SmallModelKernels256>(_layers)
            : null;
        ForwardPath path = small != null && int16Pass && _int16 != null && Int16FirstLayerPath.IsSupported
            ? new Int16FirstLayerPath(_layers, _int16, small)
            : small ?? kernel switch
            {
                InferenceKernel.Avx512 when int16Pass && _pairs != null => new PairedFirstLayerPath(_layers, _pairs),
                InferenceKernel.Avx512 => new SparsePath<Width512, Vector512<float>>(_layers),
                InferenceKernel.Avx2 => new SparsePath<Width256, Vector256<float>>(_layers),
                InferenceKernel.Sse41 => new SparsePath<Width128, Vector128<float>>(_layers),
                _ => new ScalarPath(_layers),
            };
        _path = path;
        return path;
    }

    /// <summary>
    /// Loads a model from a .npz file (the seed's format) or an ONNX file (an MLP graph, see
    /// <see cref="OnnxImporter"/>), told apart by content: a .npz is a zip archive, anything else is read as ONNX.
    /// </summary>
    /// <exception cref="DataFormatException">The file is missing, unreadable or not a valid model.</exception>
    public static MnistClassifier Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) throw new DataFormatException(path, "is a directory, not a model file");
        byte[] bytes;
        try
        {
            // A .npz is read as a stream (its arrays are capped before they are inflated); anything else is taken
            // as ONNX, which protobuf parses from memory, so its size is capped here first.
            using (var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
            {
                Span<byte> head = stackalloc byte[4];
                if (OnnxImporter.IsZip(head[..file.ReadAtLeast(head, 4, throwOnEndOfStream: false)]))
                {
                    var unexpected = new List<string>();
                    return new MnistClassifier(
                        path, Npz.Read(path, ModelArrays.LayerArraysOnly(unexpected)), unexpected);
                }
                if (file.Length > MaxOnnxBytes)
                    throw new DataFormatException(path,
                        $"is {file.Length} bytes; an ONNX MLP over 784 inputs is read up to {MaxOnnxBytes}");
            }
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException) { throw new DataFormatException(path, "file not found"); }
        catch (DirectoryNotFoundException) { throw new DataFormatException(path, "file not found"); }
        catch (UnauthorizedAccessException)
        {
            throw new DataFormatException(path, "cannot be read (permission denied)");
        }
        catch (IOException e) { throw new DataFormatException(path, $"cannot be read ({e.GetType().Name})"); }
        return FromBytes(bytes, path);
    }

    /// <summary>Loads a model from the bytes of a .npz or ONNX file held in memory.</summary>
    /// <exception cref="DataFormatException">The bytes are not a valid model.</exception>
    public static MnistClassifier Load(ReadOnlySpan<byte> modelBytes) => FromBytes(modelBytes.ToArray(), "<memory>");

    private static MnistClassifier FromBytes(byte[] bytes, string source)
    {
        if (OnnxImporter.IsZip(bytes))
        {
            using var stream = new MemoryStream(bytes, writable: false);
            var unexpected = new List<string>();
            return new MnistClassifier(
                source, Npz.Read(stream, source, ModelArrays.LayerArraysOnly(unexpected)), unexpected);
        }
        string problem = source.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)
            ? "is not a valid ONNX model" : "is not a valid .npz (zip) file or ONNX model";
        return new MnistClassifier(source, ToArrays(OnnxImporter.Import(bytes, source, problem)), []);
    }

    /// <summary>The largest ONNX file read: a 784-4096-4096-10 float64 MLP is about 160 MB.</summary>
    private const long MaxOnnxBytes = 256L << 20;

    // The imported layers as the .npz arrays the constructor validates and converts (float64: no rounding yet).
    private static Dictionary<string, NpyArray> ToArrays(MlpWeights weights)
    {
        var arrays = new Dictionary<string, NpyArray>(StringComparer.Ordinal);
        for (int l = 0; l < weights.W.Length; l++)
        {
            int[] shape = [weights.Sizes[l + 1], weights.Sizes[l]];
            arrays[$"w{l + 1}"] = new NpyArray("<f8", shape, Float64Bytes(weights.W[l]));
            arrays[$"b{l + 1}"] = new NpyArray("<f8", [weights.Sizes[l + 1]], Float64Bytes(weights.B[l]));
        }
        return arrays;
    }

    private static byte[] Float64Bytes(double[] values)
    {
        var bytes = new byte[values.Length * sizeof(double)];
        MemoryMarshal.AsBytes(values.AsSpan()).CopyTo(bytes);
        return bytes;
    }

    /// <summary>Layer sizes, input first: [784, H1, ..., 10].</summary>
    public IReadOnlyList<int> Sizes { get; }

    /// <summary>The widest kernel this CPU (and, under NativeAOT, the compiled instruction set) supports.</summary>
    public static InferenceKernel BestKernel => ForwardKernels.Best;

    /// <summary>The inner kernel in use (the widest the CPU supports).</summary>
    public InferenceKernel Kernel => _kernel;

    /// <summary>Tests force a narrower kernel to compare paths on one machine.</summary>
    internal void ForceKernel(InferenceKernel kernel)
    {
        if (!ForwardKernels.IsSupported(kernel))
            throw new PlatformNotSupportedException($"kernel {kernel} is not supported by this CPU");
        UsePath(kernel, int16Pass: true);
    }

    /// <summary>Tests turn the integer first passes off to compare them with the float kernels alone.</summary>
    internal void DisableInt16Pass() => UsePath(_kernel, int16Pass: false);

    /// <summary>Whether byte images go through the integer first pass (see <see cref="Int16FirstLayer"/>).</summary>
    internal bool Int16Pass => _path is Int16FirstLayerPath;

    /// <summary>The path every entry point runs through (tests).</summary>
    internal ForwardPath Path => _path;

    /// <summary>
    /// The lead a class needs for the integer pass's answer to stand (see <see cref="Int16FirstLayer"/>).
    /// </summary>
    internal float Int16Threshold => _int16?.Threshold ?? float.NaN;

    /// <summary>
    /// Tests: the integer pass alone on one image: its hidden vector (16 floats, after ReLU) and its certified class,
    /// or -1 where the float kernels would settle the image.
    /// </summary>
    internal int Int16Only(ReadOnlySpan<byte> pixels, Span<float> hidden)
    {
        CheckLength(pixels.Length, PixelCount, nameof(pixels));
        CheckLength(hidden.Length, ForwardKernels.Lane, nameof(hidden));
        if (_path is not Int16FirstLayerPath int16)
            throw new InvalidOperationException("the integer first pass is not in use");
        float* h = stackalloc float[ForwardKernels.Lane + 16];
        h = (float*)ForwardPath.AlignScratch((byte*)h);
        fixed (byte* p = pixels)
        {
            int label = int16.CertifiedLabel(p, h);
            new ReadOnlySpan<float>(h, ForwardKernels.Lane).CopyTo(hidden);
            return label;
        }
    }

    /// <summary>
    /// Classifies one image of 784 raw pixels (0..255, row-major 28x28), scaled by 1/255 as the seed does.
    /// </summary>
    public int Predict(ReadOnlySpan<byte> pixels)
    {
        CheckLength(pixels.Length, PixelCount, nameof(pixels));
        Enter();
        try
        {
            ForwardPath path = _path;
            fixed (byte* p = pixels)
            {
                if (_scratchBytes <= StackScratchBytes)
                {
                    byte* scratch = stackalloc byte[_scratchBytes];
                    return path.Predict(p, scratch);
                }
                fixed (byte* scratch = ThreadScratch()) return path.Predict(p, scratch);
            }
        }
        finally { Exit(); }
    }

    /// <summary>Classifies one image of 784 pixels already scaled to [0, 1].</summary>
    public int Predict(ReadOnlySpan<float> pixels)
    {
        CheckLength(pixels.Length, PixelCount, nameof(pixels));
        Enter();
        try
        {
            ForwardPath path = _path;
            fixed (float* p = pixels)
            {
                if (_scratchBytes <= StackScratchBytes)
                {
                    byte* scratch = stackalloc byte[_scratchBytes];
                    return path.ArgMaxOf(path.Logits(null, p, scratch));
                }
                fixed (byte* scratch = ThreadScratch()) return path.ArgMaxOf(path.Logits(null, p, scratch));
            }
        }
        finally { Exit(); }
    }

    /// <summary>
    /// The softmax of the output layer for one image of 784 raw pixels; <paramref name="probs"/> holds 10 values.
    /// </summary>
    public void Probabilities(ReadOnlySpan<byte> pixels, Span<float> probs)
    {
        CheckLength(pixels.Length, PixelCount, nameof(pixels));
        CheckLength(probs.Length, ClassCount, nameof(probs));
        Enter();
        try
        {
            ForwardPath path = _path;
            fixed (byte* p = pixels)
            {
                if (_scratchBytes <= StackScratchBytes)
                {
                    byte* scratch = stackalloc byte[_scratchBytes];
                    ForwardKernels.Softmax(path.Logits(p, null, scratch), ClassCount, probs);
                }
                else
                {
                    fixed (byte* scratch = ThreadScratch())
                        ForwardKernels.Softmax(path.Logits(p, null, scratch), ClassCount, probs);
                }
            }
        }
        finally { Exit(); }
    }

    /// <summary>
    /// Classifies n images stored back to back (n * 784 raw bytes) into <paramref name="labels"/> (n values).
    /// Batches of <see cref="ParallelThreshold"/> images or more are spread over all cores, or over at most
    /// <paramref name="maxThreads"/> threads (the calling thread included) when it is 1 or more; 0 means all cores.
    /// </summary>
    public void PredictBatch(ReadOnlySpan<byte> images, Span<int> labels, int maxThreads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxThreads);
        if (images.Length % PixelCount != 0)
            throw new ArgumentException(
                $"images holds {images.Length} bytes, not a multiple of {PixelCount} (one 28x28 image)",
                nameof(images));
        int count = images.Length / PixelCount;
        CheckLength(labels.Length, count, nameof(labels));
        Enter();
        try
        {
            fixed (byte* p = images)
            fixed (int* l = labels)
            {
                int threads = Math.Min(maxThreads > 0 ? maxThreads : Environment.ProcessorCount,
                    (count + BatchChunk - 1) / BatchChunk);
                if (count < ParallelThreshold || threads < 2) PredictRange(p, l, 0, count);
                else BatchJob.Run(this, p, l, count, threads);
            }
        }
        finally { Exit(); }
    }

    /// <summary>Smallest batch that is spread over several threads.</summary>
    public const int ParallelThreshold = 512;
    internal const int BatchChunk = 128;

    void IRangePredictor.PredictRange(byte* images, int* labels, int start, int end) =>
        PredictRange(images, labels, start, end);

    internal void PredictRange(byte* images, int* labels, int start, int end)
    {
        ForwardPath path = _path;
        if (_scratchBytes <= StackScratchBytes)
        {
            byte* scratch = stackalloc byte[_scratchBytes];
            path.PredictRange(images, labels, start, end, scratch);
        }
        else
            fixed (byte* scratch = ThreadScratch()) path.PredictRange(images, labels, start, end, scratch);
    }

    [ThreadStatic] private static byte[]? t_scratch;

    // For models too wide for the stack: one pinned buffer per thread, grown on demand, never shrunk.
    private byte[] ThreadScratch()
    {
        byte[]? s = t_scratch;
        if (s == null || s.Length < _scratchBytes)
            t_scratch = s = GC.AllocateUninitializedArray<byte>(_scratchBytes, pinned: true);
        return s;
    }

    private static void CheckLength(int actual, int expected, string name)
    {
        if (actual != expected) ThrowLength(actual, expected, name);
    }

    private static void ThrowLength(int actual, int expected, string name) =>
        throw new ArgumentException($"{name} holds {actual} values; exactly {expected} expected", name);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Enter()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowDisposed();
    }

    // The weights are reachable only through this instance: keep it alive until the call has finished with them.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Exit() => GC.KeepAlive(this);

    private static void ThrowDisposed() =>
        throw new ObjectDisposedException(nameof(MnistClassifier), "the model has been disposed");

    /// <summary>
    /// Marks the model disposed: later calls throw <see cref="ObjectDisposedException"/>; calls in flight finish
    /// normally. The weights are managed memory, released when the instance is collected. Idempotent.
    /// </summary>
    public void Dispose() => Volatile.Write(ref _disposed, 1);

    private static int Pad(int n) => (n + ForwardKernels.Lane - 1) / ForwardKernels.Lane * ForwardKernels.Lane;

    private static float ReadFloat(NpyArray a, long i) => a.Descr == "<f8"
        ? (float)BitConverter.Int64BitsToDouble(
            System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(a.Data.AsSpan((int)(8 * i))))
        : System.Buffers.Binary.BinaryPrimitives.ReadSingleLittleEndian(a.Data.AsSpan((int)(4 * i)));

    // w1..wL and b1..bL, nothing else; shapes chain from 784 to 10; float dtypes. Returns the layer sizes.
    private static int[] Validate(string source, Dictionary<string, NpyArray> arrays, List<string> unexpected)
    {
        if (unexpected.Count > 0)
            throw new DataFormatException(source, $"has an unexpected array '{Npz.Printable(unexpected[0])}'; a " +
                $"model holds only w1..wL and b1..bL");
        int layers = ModelArrays.LayerCount(source, arrays);
        var sizes = new List<int> { PixelCount };
        for (int l = 1; l <= layers; l++)
        {
            NpyArray w = arrays[$"w{l}"], b = arrays[$"b{l}"];
            if (!w.IsFloat)
                throw new DataFormatException(source, $"w{l} has dtype {w.Descr}; float64 or float32 expected");
            if (w.Shape.Length != 2)
                throw new DataFormatException(source,
                    $"w{l} has shape ({string.Join(", ", w.Shape)}); a 2-D array expected");
            if (w.Shape[1] != sizes[^1])
                throw new DataFormatException(source,
                    $"w{l} has shape ({w.Shape[0]}, {w.Shape[1]}); its second dimension must be {sizes[^1]}");
            if (w.Shape[0] < 1 || w.Shape[0] > MaxWidth)
                throw new DataFormatException(source, $"w{l} has {w.Shape[0]} rows; 1..{MaxWidth} expected");
            int rows = w.Shape[0];
            bool biasOk = b.IsFloat && ((b.Shape.Length == 1 && b.Shape[0] == rows)
                || (b.Shape.Length == 2 && b.Shape[0] == rows && b.Shape[1] == 1));
            if (!biasOk)
                throw new DataFormatException(source, $"b{l} has shape ({string.Join(", ", b.Shape)}) and dtype "
                    + $"{b.Descr}; float ({rows},) or ({rows}, 1) expected");
            sizes.Add(rows);
        }
        if (sizes[^1] != ClassCount)
            throw new DataFormatException(source,
                $"w{layers} has {sizes[^1]} rows; the output layer must have {ClassCount}");
        return sizes.ToArray();
    }
}

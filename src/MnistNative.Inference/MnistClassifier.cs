using System.Runtime.CompilerServices;
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

    private readonly Layer[] _layers;
    private readonly int _scratchBytes;
    private readonly int _maxInputs;
    private readonly int _maxOutPad;
    private readonly float[] _memory; // pinned; the layers point into it
    private int _disposed;
    private InferenceKernel _kernel = ForwardKernels.Best;
    private SmallKernel _small; // the seed's shape (one hidden layer of at most 16 units): the fused kernels (see UseKernel)
    private readonly Int16FirstLayer? _int16; // one hidden layer of at most 10 units: the integer first pass
    private bool _int16Pass;                  // whether it runs (before the small float kernels, which settle near ties)

    private enum SmallKernel { None, Avx512, Avx2 }

    // One layer: wt (In, OutPad) is W transposed with each row padded to a 64-byte line, bias (OutPad).
    private readonly struct Layer(int inputs, int outputs, int outPad, float* wt, float* bias)
    {
        public readonly int In = inputs, Out = outputs, OutPad = outPad;
        public readonly float* Wt = wt, Bias = bias;
    }

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
        if (floats > (1L << 28)) throw new DataFormatException(source, $"holds {floats} weights; more than this library accepts (2^28)");
        // zeroed: the padding columns must be 0, they feed ReLU and the next layer; + 15 floats to align to 64 bytes
        _memory = GC.AllocateArray<float>((int)floats + 15, pinned: true);
        float* basePtr = (float*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_memory)) + 63) & ~(nint)63);
        _layers = new Layer[layerCount];
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
                if (!float.IsFinite(wt[i])) throw new DataFormatException(source, $"w{l + 1} holds NaN or infinite values (or values beyond float32 range)");
            for (int j = 0; j < outputs; j++)
                if (!float.IsFinite(bias[j])) throw new DataFormatException(source, $"b{l + 1} holds NaN or infinite values (or values beyond float32 range)");
            _layers[l] = new Layer(inputs, outputs, outPad, wt, bias);
        }
        Sizes = sizes;
        _maxInputs = sizes[..^1].Max();
        _maxOutPad = _layers.Max(x => x.OutPad);
        if (layerCount == 2 && sizes[1] <= Int16FirstLayer.Units)
            _int16 = Int16FirstLayer.Build(_layers[0].Wt, _layers[0].Bias, sizes[1], _layers[1].Wt, _layers[1].Bias);
        _scratchBytes = (_maxInputs + ForwardKernels.CompactSlack) * (sizeof(int) + sizeof(float)) + _maxOutPad * sizeof(float)
            + ForwardKernels.ByteScratch + SmallGroup * ForwardKernels.Lane * sizeof(float) + ScratchAlignment;
        UseKernel(ForwardKernels.Best);
    }

    // One hidden layer of at most 16 units (W1t rows are one 64-byte line, W2t is (H, 16)) takes the fused path.
    private void UseKernel(InferenceKernel kernel)
    {
        _kernel = kernel;
        bool seedShape = _layers.Length == 2 && _layers[0].OutPad == ForwardKernels.Lane && _layers[1].OutPad == ForwardKernels.Lane;
        _small = !seedShape || kernel == InferenceKernel.Scalar ? SmallKernel.None
            : kernel == InferenceKernel.Avx512 && ForwardKernels.CanCompactBytes ? SmallKernel.Avx512
            : ForwardKernels.CanRunSmall256 ? SmallKernel.Avx2
            : SmallKernel.None;
        _int16Pass = _small != SmallKernel.None && _int16 != null && ForwardKernels.CanRunInt16;
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
                    return new MnistClassifier(path, Npz.Read(path, ModelArrays.LayerArraysOnly(unexpected)), unexpected);
                }
                if (file.Length > MaxOnnxBytes)
                    throw new DataFormatException(path, $"is {file.Length} bytes; an ONNX MLP over 784 inputs is read up to {MaxOnnxBytes}");
            }
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException) { throw new DataFormatException(path, "file not found"); }
        catch (DirectoryNotFoundException) { throw new DataFormatException(path, "file not found"); }
        catch (UnauthorizedAccessException) { throw new DataFormatException(path, "cannot be read (permission denied)"); }
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
            return new MnistClassifier(source, Npz.Read(stream, source, ModelArrays.LayerArraysOnly(unexpected)), unexpected);
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
        if (!ForwardKernels.IsSupported(kernel)) throw new PlatformNotSupportedException($"kernel {kernel} is not supported by this CPU");
        UseKernel(kernel);
    }

    /// <summary>Tests turn the integer first pass off to compare it with the float kernels alone.</summary>
    internal void DisableInt16Pass() => _int16Pass = false;

    /// <summary>Whether byte images go through the integer first pass (see <see cref="Int16FirstLayer"/>).</summary>
    internal bool Int16Pass => _int16Pass;

    /// <summary>The lead a class needs for the integer pass's answer to stand (see <see cref="Int16FirstLayer"/>).</summary>
    internal float Int16Threshold => _int16?.Threshold ?? float.NaN;

    /// <summary>
    /// Tests: the integer pass alone on one image: its hidden vector (16 floats, after ReLU) and its certified class,
    /// or -1 where the float kernels would settle the image.
    /// </summary>
    internal int Int16Only(ReadOnlySpan<byte> pixels, Span<float> hidden)
    {
        CheckLength(pixels.Length, PixelCount, nameof(pixels));
        CheckLength(hidden.Length, ForwardKernels.Lane, nameof(hidden));
        if (!_int16Pass) throw new InvalidOperationException("the integer first pass is not in use");
        float* h = stackalloc float[ForwardKernels.Lane + 16];
        h = (float*)AlignScratch((byte*)h);
        fixed (byte* p = pixels)
        {
            int label = CertifiedLabel(p, h);
            new ReadOnlySpan<float>(h, ForwardKernels.Lane).CopyTo(hidden);
            return label;
        }
    }

    /// <summary>Classifies one image of 784 raw pixels (0..255, row-major 28x28), scaled by 1/255 as the seed does.</summary>
    public int Predict(ReadOnlySpan<byte> pixels)
    {
        CheckLength(pixels.Length, PixelCount, nameof(pixels));
        Enter();
        try
        {
            fixed (byte* p = pixels)
            {
                if (_scratchBytes <= StackScratchBytes)
                {
                    byte* scratch = stackalloc byte[_scratchBytes];
                    return ArgMaxOf(p, null, scratch);
                }
                fixed (byte* scratch = ThreadScratch()) return ArgMaxOf(p, null, scratch);
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
            fixed (float* p = pixels)
            {
                if (_scratchBytes <= StackScratchBytes)
                {
                    byte* scratch = stackalloc byte[_scratchBytes];
                    return ArgMaxOf(null, p, scratch);
                }
                fixed (byte* scratch = ThreadScratch()) return ArgMaxOf(null, p, scratch);
            }
        }
        finally { Exit(); }
    }

    /// <summary>The softmax of the output layer for one image of 784 raw pixels; <paramref name="probs"/> holds 10 values.</summary>
    public void Probabilities(ReadOnlySpan<byte> pixels, Span<float> probs)
    {
        CheckLength(pixels.Length, PixelCount, nameof(pixels));
        CheckLength(probs.Length, ClassCount, nameof(probs));
        Enter();
        try
        {
            fixed (byte* p = pixels)
            {
                if (_scratchBytes <= StackScratchBytes)
                {
                    byte* scratch = stackalloc byte[_scratchBytes];
                    ForwardKernels.Softmax(Forward(p, null, scratch), ClassCount, probs);
                }
                else
                {
                    fixed (byte* scratch = ThreadScratch()) ForwardKernels.Softmax(Forward(p, null, scratch), ClassCount, probs);
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
            throw new ArgumentException($"images holds {images.Length} bytes, not a multiple of {PixelCount} (one 28x28 image)", nameof(images));
        int count = images.Length / PixelCount;
        CheckLength(labels.Length, count, nameof(labels));
        Enter();
        try
        {
            fixed (byte* p = images)
            fixed (int* l = labels)
            {
                int threads = Math.Min(maxThreads > 0 ? maxThreads : Environment.ProcessorCount, (count + BatchChunk - 1) / BatchChunk);
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
        if (_scratchBytes <= StackScratchBytes)
        {
            byte* scratch = stackalloc byte[_scratchBytes];
            PredictRange(images, labels, start, end, scratch);
        }
        else
            fixed (byte* scratch = ThreadScratch()) PredictRange(images, labels, start, end, scratch);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PredictRange(byte* images, int* labels, int start, int end, byte* scratch)
    {
        if (_int16Pass)
        {
            PredictRangeInt16(images, labels, start, end, scratch);
            return;
        }
        if (_small != SmallKernel.None)
        {
            PredictRangeSmall(images, labels, start, end, scratch);
            return;
        }
        for (int i = start; i < end; i++)
        {
            PrefetchImage(images + (long)Math.Min(i + PrefetchDistance, end - 1) * PixelCount);
            labels[i] = ArgMaxOf(images + (long)i * PixelCount, null, scratch);
        }
    }

    // The small-model kernels over a range, SmallGroup images at a time: layer 1 of each image into the group's
    // hidden vectors, then layer 2 and the argmax of the group. Per image, layer 2 and the argmax are a ~60-cycle
    // dependency chain that the next image's compaction did not hide; a group's chains are independent (kernel
    // probe, 1 thread: 137-140 -> 128-130 ns/image). Same arithmetic as PredictSmall.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PredictRangeSmall(byte* images, int* labels, int start, int end, byte* scratch)
    {
        SmallScratch layout = SmallScratchOf(scratch);
        uint* entries = layout.Entries;
        byte* tmp = layout.Tmp;
        float* group = layout.Group;
        Layer l1 = _layers[0], l2 = _layers[1];
        bool avx512 = _small == SmallKernel.Avx512;
        for (int g = start; g < end; g += SmallGroup)
        {
            int count = Math.Min(SmallGroup, end - g);
            for (int i = 0; i < count; i++)
            {
                PrefetchImage(images + (long)Math.Min(g + i + PrefetchDistance, end - 1) * PixelCount);
                byte* pixels = images + (long)(g + i) * PixelCount;
                float* hidden = group + i * ForwardKernels.Lane;
                if (avx512) ForwardKernels.HiddenSmall(l1.Wt, l1.Bias, entries, ForwardKernels.CompactPixelsSmall(pixels, tmp, entries), hidden);
                else ForwardKernels.HiddenSmall256(l1.Wt, l1.Bias, entries, ForwardKernels.CompactPixelsSmall256(pixels, entries), hidden);
            }
            for (int i = 0; i < count; i++)
            {
                float* hidden = group + i * ForwardKernels.Lane;
                labels[g + i] = avx512 ? ForwardKernels.OutputSmall(l2.Wt, l2.Bias, l1.Out, hidden) : ForwardKernels.OutputSmall256(l2.Wt, l2.Bias, l1.Out, hidden);
            }
        }
    }

    private const int SmallGroup = 16;

    // As PredictRangeSmall with the integer first pass: layer 1 of the group's images, then layer 2 and the
    // certificate of each; an image without a certain answer (near ties) goes through the float kernels.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PredictRangeInt16(byte* images, int* labels, int start, int end, byte* scratch)
    {
        Int16FirstLayer q = _int16!;
        float* group = SmallScratchOf(scratch).Group;
        Layer l1 = _layers[0], l2 = _layers[1];
        for (int g = start; g < end; g += SmallGroup)
        {
            int count = Math.Min(SmallGroup, end - g);
            for (int i = 0; i < count; i++)
            {
                PrefetchImage(images + (long)Math.Min(g + i + PrefetchDistance, end - 1) * PixelCount);
                ForwardKernels.HiddenInt16(images + (long)(g + i) * PixelCount, q.Weights, q.Scale, l1.Bias, group + i * ForwardKernels.Lane);
            }
            for (int i = 0; i < count; i++)
            {
                int label = ForwardKernels.OutputCertified(l2.Wt, l2.Bias, l1.Out, group + i * ForwardKernels.Lane, q.Threshold);
                labels[g + i] = label >= 0 ? label : PredictSmallFloat(images + (long)(g + i) * PixelCount, scratch);
            }
        }
    }

    // The small kernels' scratch: entries (8 bytes per input, as Forward's idx and val), h (one line), the byte
    // arrays of the AVX-512 compaction, then SmallGroup hidden vectors; all at 64-byte boundaries. Returned as a
    // struct: out parameters made the single-image path 5-10% slower (address-taken locals).
    private readonly struct SmallScratch(uint* entries, float* h, byte* tmp, float* group)
    {
        public readonly uint* Entries = entries;
        public readonly float* H = h;
        public readonly byte* Tmp = tmp;
        public readonly float* Group = group;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private SmallScratch SmallScratchOf(byte* scratch)
    {
        uint* entries = (uint*)AlignScratch(scratch);
        float* h = (float*)(entries + 2 * (_maxInputs + ForwardKernels.CompactSlack));
        byte* tmp = (byte*)(h + _maxOutPad);
        return new SmallScratch(entries, h, tmp, (float*)(tmp + ForwardKernels.ByteScratch));
    }

    // A batch streams its images from L3 or memory at ~150 ns an image; the hardware prefetcher alone left the
    // small-model kernel waiting on them (A/B in docs/inference-benchmarks.md), so each step asks for the 13
    // lines of the image PrefetchDistance ahead.
    private const int PrefetchDistance = 4;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchImage(byte* image)
    {
        if (!Sse.IsSupported) return;
        for (int line = 0; line < PixelCount; line += 64) Sse.Prefetch0(image + line);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int ArgMaxOf(byte* pixels, float* x, byte* scratch) =>
        pixels != null && _small != SmallKernel.None ? PredictSmall(pixels, scratch) : ForwardKernels.ArgMax(Forward(pixels, x, scratch), ClassCount);

    // 784 -> H <= 16 -> 10 from bytes: the integer first pass where it applies and is certain, else the float kernels
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int PredictSmall(byte* pixels, byte* scratch)
    {
        if (_int16Pass)
        {
            int label = CertifiedLabel(pixels, SmallScratchOf(scratch).H);
            if (label >= 0) return label;
        }
        return PredictSmallFloat(pixels, scratch);
    }

    // One image through the integer first pass: h (16 floats, 64-byte aligned) its hidden vector, the result its
    // certified class or -1 (see Int16FirstLayer). The batch path runs the same two kernels, split by group.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int CertifiedLabel(byte* pixels, float* h)
    {
        Int16FirstLayer q = _int16!;
        Layer l1 = _layers[0], l2 = _layers[1];
        ForwardKernels.HiddenInt16(pixels, q.Weights, q.Scale, l1.Bias, h);
        return ForwardKernels.OutputCertified(l2.Wt, l2.Bias, l1.Out, h, q.Threshold);
    }

    // 784 -> H <= 16 -> 10 from bytes: compaction into 32-bit (W1t row, raw value) entries, then the fused
    // float kernels, AVX-512 (with VBMI2's byte compress) or AVX2.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int PredictSmallFloat(byte* pixels, byte* scratch)
    {
        SmallScratch layout = SmallScratchOf(scratch);
        uint* entries = layout.Entries;
        float* h = layout.H;
        byte* tmp = layout.Tmp;
        Layer l1 = _layers[0], l2 = _layers[1];
        if (_small == SmallKernel.Avx512)
        {
            ForwardKernels.HiddenSmall(l1.Wt, l1.Bias, entries, ForwardKernels.CompactPixelsSmall(pixels, tmp, entries), h);
            return ForwardKernels.OutputSmall(l2.Wt, l2.Bias, l1.Out, h);
        }
        ForwardKernels.HiddenSmall256(l1.Wt, l1.Bias, entries, ForwardKernels.CompactPixelsSmall256(pixels, entries), h);
        return ForwardKernels.OutputSmall256(l2.Wt, l2.Bias, l1.Out, h);
    }

    // pixels (784 bytes) or x (784 floats) -> logits (10, inside scratch)
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private float* Forward(byte* pixels, float* x, byte* scratch)
    {
        int* idx = (int*)AlignScratch(scratch);
        float* val = (float*)(idx + _maxInputs + ForwardKernels.CompactSlack);
        float* z = val + _maxInputs + ForwardKernels.CompactSlack;
        InferenceKernel kernel = _kernel;
        int n = pixels == null ? ForwardKernels.CompactFloats(kernel, x, PixelCount, idx, val)
            : kernel == InferenceKernel.Avx512 && ForwardKernels.CanCompactBytes ? ForwardKernels.CompactPixelsBytes(pixels, (byte*)(z + _maxOutPad), idx, val)
            : ForwardKernels.CompactPixels(kernel, pixels, idx, val);
        Layer[] layers = _layers;
        for (int l = 0; ; l++)
        {
            Layer layer = layers[l];
            ForwardKernels.Accumulate(kernel, z, layer.Wt, layer.Bias, layer.OutPad, idx, val, n);
            if (l == layers.Length - 1) return z;
            ForwardKernels.Relu(z, layer.OutPad);
            n = ForwardKernels.CompactFloats(kernel, z, layer.Out, idx, val);
        }
    }

    // The kernels store whole 64-byte vectors into scratch; from a 64-byte boundary, those at fixed offsets (the
    // entries, h) never straddle two cache lines. _scratchBytes holds the room to move up to it.
    private const int ScratchAlignment = 64;

    private static byte* AlignScratch(byte* scratch) => (byte*)(((nint)scratch + ScratchAlignment - 1) & ~(nint)(ScratchAlignment - 1));

    [ThreadStatic] private static byte[]? t_scratch;

    // For models too wide for the stack: one pinned buffer per thread, grown on demand, never shrunk.
    private byte[] ThreadScratch()
    {
        byte[]? s = t_scratch;
        if (s == null || s.Length < _scratchBytes) t_scratch = s = GC.AllocateUninitializedArray<byte>(_scratchBytes, pinned: true);
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

    private static void ThrowDisposed() => throw new ObjectDisposedException(nameof(MnistClassifier), "the model has been disposed");

    /// <summary>
    /// Marks the model disposed: later calls throw <see cref="ObjectDisposedException"/>; calls in flight finish
    /// normally. The weights are managed memory, released when the instance is collected. Idempotent.
    /// </summary>
    public void Dispose() => Volatile.Write(ref _disposed, 1);

    private static int Pad(int n) => (n + ForwardKernels.Lane - 1) / ForwardKernels.Lane * ForwardKernels.Lane;

    private static float ReadFloat(NpyArray a, long i) => a.Descr == "<f8"
        ? (float)BitConverter.Int64BitsToDouble(System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(a.Data.AsSpan((int)(8 * i))))
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
            if (!w.IsFloat) throw new DataFormatException(source, $"w{l} has dtype {w.Descr}; float64 or float32 expected");
            if (w.Shape.Length != 2) throw new DataFormatException(source, $"w{l} has shape ({string.Join(", ", w.Shape)}); a 2-D array expected");
            if (w.Shape[1] != sizes[^1]) throw new DataFormatException(source, $"w{l} has shape ({w.Shape[0]}, {w.Shape[1]}); its second dimension must be {sizes[^1]}");
            if (w.Shape[0] < 1 || w.Shape[0] > MaxWidth) throw new DataFormatException(source, $"w{l} has {w.Shape[0]} rows; 1..{MaxWidth} expected");
            int rows = w.Shape[0];
            bool biasOk = b.IsFloat && ((b.Shape.Length == 1 && b.Shape[0] == rows) || (b.Shape.Length == 2 && b.Shape[0] == rows && b.Shape[1] == 1));
            if (!biasOk) throw new DataFormatException(source, $"b{l} has shape ({string.Join(", ", b.Shape)}) and dtype {b.Descr}; float ({rows},) or ({rows}, 1) expected");
            sizes.Add(rows);
        }
        if (sizes[^1] != ClassCount)
            throw new DataFormatException(source, $"w{layers} has {sizes[^1]} rows; the output layer must have {ClassCount}");
        return sizes.ToArray();
    }}

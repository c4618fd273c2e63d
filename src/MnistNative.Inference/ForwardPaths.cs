using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MnistNative.Inference;

/// <summary>
/// One layer of a loaded model: wt (In, OutPad) is W transposed with each row padded to a 64-byte line (the
/// padding columns are 0), bias (OutPad).
/// </summary>
internal readonly unsafe struct DenseLayer(int inputs, int outputs, int outPad, float* wt, float* bias)
{
    public readonly int In = inputs, Out = outputs, OutPad = outPad;
    public readonly float* Wt = wt, Bias = bias;
}

/// <summary>
/// How a classifier runs its model: one object per kernel family, chosen once when the model is loaded (or a test
/// forces a kernel) from the model's shape and what the CPU supports. Every path answers every entry point: byte
/// images through its own kernels, float images and probabilities through the general sparse forward pass of its
/// width. Paths hold no per-call state: one instance serves all threads; per-call scratch comes from the caller
/// (<see cref="ScratchBytes"/> bytes, laid out from a 64-byte boundary).
/// </summary>
internal abstract unsafe class ForwardPath
{
    protected readonly DenseLayer[] Layers;
    protected readonly int MaxInputs, MaxOutPad;

    protected ForwardPath(DenseLayer[] layers)
    {
        Layers = layers;
        MaxInputs = layers.Max(l => l.In);
        MaxOutPad = layers.Max(l => l.OutPad);
    }

    /// <summary>The kernel this path reports (<see cref="MnistClassifier.Kernel"/>).</summary>
    public abstract InferenceKernel Kernel { get; }

    /// <summary>pixels (784 bytes) or x (784 floats, the other null) -> the 10 logits (16 floats in scratch).</summary>
    public abstract float* Logits(byte* pixels, float* x, byte* scratch);

    /// <summary>The first class of the largest logit of <see cref="Logits"/>'s result.</summary>
    public abstract int ArgMaxOf(float* logits);

    /// <summary>One image of 784 bytes -> its class.</summary>
    public virtual int Predict(byte* pixels, byte* scratch) => ArgMaxOf(Logits(pixels, null, scratch));

    /// <summary>Images [start, end) of a batch -> labels.</summary>
    public virtual void PredictRange(byte* images, int* labels, int start, int end, byte* scratch)
    {
        for (int i = start; i < end; i++)
        {
            PrefetchImage(images + (long)Math.Min(i + PrefetchDistance, end - 1) * MnistClassifier.PixelCount);
            labels[i] = Predict(images + (long)i * MnistClassifier.PixelCount, scratch);
        }
    }

    /// <summary>Per-call scratch the paths of a model need, alignment slack included.</summary>
    public static int ScratchBytes(int maxInputs, int maxOutPad) =>
        (maxInputs + ForwardKernels.CompactSlack) * (sizeof(int) + sizeof(float)) + maxOutPad * sizeof(float)
        + ForwardKernels.ByteScratch + SmallGroup * ForwardKernels.Lane * sizeof(float) + ScratchAlignment;

    /// <summary>Images whose layer 1 a small-model batch runs before their layer 2 (SmallModelPath).</summary>
    protected const int SmallGroup = 16;

    // The kernels store whole 64-byte vectors into scratch; from a 64-byte boundary, those at fixed offsets (the
    // entries, h) never straddle two cache lines. ScratchBytes holds the room to move up to it.
    private const int ScratchAlignment = 64;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* AlignScratch(byte* scratch) =>
        (byte*)(((nint)scratch + ScratchAlignment - 1) & ~(nint)(ScratchAlignment - 1));

    // The general pass's scratch: idx, val (MaxInputs + Slack each), z (one layer's outputs), then the byte arrays
    // of the AVX-512 compaction. The small kernels' view of the same bytes: entries (8 bytes per input), h, the
    // byte arrays, then SmallGroup hidden vectors.
    // Returned as a struct: out parameters made the single-image path 5-10% slower (address-taken locals).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected GeneralLayout GeneralScratch(byte* scratch)
    {
        int* idx = (int*)AlignScratch(scratch);
        float* val = (float*)(idx + MaxInputs + ForwardKernels.CompactSlack);
        float* z = val + MaxInputs + ForwardKernels.CompactSlack;
        return new GeneralLayout(idx, val, z, (byte*)(z + MaxOutPad));
    }

    protected readonly struct GeneralLayout(int* idx, float* val, float* z, byte* tmp)
    {
        public readonly int* Idx = idx;
        public readonly float* Val = val, Z = z;
        public readonly byte* Tmp = tmp;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected SmallLayout SmallScratch(byte* scratch)
    {
        uint* entries = (uint*)AlignScratch(scratch);
        float* h = (float*)(entries + 2 * (MaxInputs + ForwardKernels.CompactSlack));
        byte* tmp = (byte*)(h + MaxOutPad);
        return new SmallLayout(entries, h, tmp, (float*)(tmp + ForwardKernels.ByteScratch));
    }

    protected readonly struct SmallLayout(uint* entries, float* h, byte* tmp, float* group)
    {
        public readonly uint* Entries = entries;
        public readonly float* H = h, Group = group;
        public readonly byte* Tmp = tmp;
    }

    // A batch streams its images from L3 or memory at ~150 ns an image; the hardware prefetcher alone left the
    // small-model kernel waiting on them (A/B in docs/inference-benchmarks.md), so each step asks for the 13
    // lines of the image PrefetchDistance ahead.
    protected const int PrefetchDistance = 4;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected static void PrefetchImage(byte* image)
    {
        if (!Sse.IsSupported) return;
        for (int line = 0; line < MnistClassifier.PixelCount; line += 64) Sse.Prefetch0(image + line);
    }
}

/// <summary>
/// Any model, plain C# loops (<see cref="ScalarKernels"/>, the references of the vector kernels): what runs where no
/// SIMD width is available, and the oracle the vector paths are tested against.
/// </summary>
internal sealed unsafe class ScalarPath(DenseLayer[] layers) : ForwardPath(layers)
{
    public override InferenceKernel Kernel => InferenceKernel.Scalar;

    public override float* Logits(byte* pixels, float* x, byte* scratch)
    {
        GeneralLayout layout = GeneralScratch(scratch);
        int* idx = layout.Idx;
        float* val = layout.Val, z = layout.Z;
        int n = pixels != null ? ScalarKernels.CompactPixels(pixels, MnistClassifier.PixelCount, idx, val)
            : ScalarKernels.CompactNonzero(x, MnistClassifier.PixelCount, idx, val);
        for (int l = 0; ; l++)
        {
            DenseLayer layer = Layers[l];
            ScalarKernels.SparseAccumulate(z, layer.Bias, layer.Wt, layer.OutPad, idx, val, n, layer.OutPad);
            if (l == Layers.Length - 1) return z;
            ScalarKernels.Relu(z, layer.OutPad);
            n = ScalarKernels.CompactNonzero(z, layer.Out, idx, val);
        }
    }

    public override int ArgMaxOf(float* logits) => ScalarKernels.ArgMax(logits, MnistClassifier.ClassCount);
}

/// <summary>
/// Any model, one SIMD width: the sparse column form layer by layer (the nonzero pixels, then the nonzero ReLU
/// outputs of each layer, each adding its row of W^T to all outputs at once). Deep models and ONNX imports run
/// this path; the small-model paths derive from it for their float and probability entry points.
/// </summary>
internal unsafe class SparsePath<W, TV>(DenseLayer[] layers) : ForwardPath(layers)
    where W : struct, IVectorWidth<TV> where TV : unmanaged
{
    public override InferenceKernel Kernel =>
        typeof(W) == typeof(Width512) ? InferenceKernel.Avx512
        : typeof(W) == typeof(Width256) ? InferenceKernel.Avx2
        : InferenceKernel.Sse41;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override float* Logits(byte* pixels, float* x, byte* scratch)
    {
        GeneralLayout layout = GeneralScratch(scratch);
        int* idx = layout.Idx;
        float* val = layout.Val, z = layout.Z;
        int n = pixels == null ? VectorKernels<W, TV>.CompactNonzero(x, MnistClassifier.PixelCount, idx, val)
            : typeof(W) == typeof(Width512) && ForwardKernels.CanCompactBytes
                ? ForwardKernels.CompactPixelsBytes(pixels, layout.Tmp, idx, val)
            : VectorKernels<W, TV>.CompactPixels(pixels, MnistClassifier.PixelCount, idx, val);
        DenseLayer[] layers = Layers;
        for (int l = 0; ; l++)
        {
            DenseLayer layer = layers[l];
            VectorKernels<W, TV>.SparseAccumulate(z, layer.Bias, layer.Wt, layer.OutPad, idx, val, n,
                layer.OutPad);
            if (l == layers.Length - 1) return z;
            VectorKernels<W, TV>.Relu(z, layer.OutPad);
            n = VectorKernels<W, TV>.CompactNonzero(z, layer.Out, idx, val);
        }
    }

    public override int ArgMaxOf(float* logits) => VectorKernels<W, TV>.ArgMax10(logits);
}

/// <summary>The fused kernels of the seed's shape at one width (see <see cref="SmallModelPath{W, TV, K}"/>).</summary>
internal unsafe interface ISmallModelKernels
{
    static abstract bool IsSupported { get; }

    /// <summary>Layer 1 of one image: h (16 floats, 64-byte aligned) = relu(b1 + W1 x); uses entries, tmp.</summary>
    static abstract void Hidden(in DenseLayer l1, byte* pixels, uint* entries, byte* tmp, float* h);

    /// <summary>Layer 2 and the argmax from h.</summary>
    static abstract int Output(in DenseLayer l1, in DenseLayer l2, float* h);
}

/// <summary>AVX-512 with VBMI2's byte compress (ForwardKernels.CompactPixelsSmall, HiddenSmall, OutputSmall).</summary>
internal readonly unsafe struct SmallModelKernels512 : ISmallModelKernels
{
    public static bool IsSupported => Width512.IsSupported && ForwardKernels.CanCompactBytes;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Hidden(in DenseLayer l1, byte* pixels, uint* entries, byte* tmp, float* h) =>
        ForwardKernels.HiddenSmall(l1.Wt, l1.Bias, entries, ForwardKernels.CompactPixelsSmall(pixels, tmp, entries), h);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Output(in DenseLayer l1, in DenseLayer l2, float* h) =>
        ForwardKernels.OutputSmall(l2.Wt, l2.Bias, l1.Out, h);
}

/// <summary>AVX2 + FMA (ForwardKernels.Small256.cs): AVX2 machines and the x86-64-v3 C ABI.</summary>
internal readonly unsafe struct SmallModelKernels256 : ISmallModelKernels
{
    public static bool IsSupported => Width256.IsSupported && ForwardKernels.CanRunSmall256;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Hidden(in DenseLayer l1, byte* pixels, uint* entries, byte* tmp, float* h) =>
        ForwardKernels.HiddenSmall256(l1.Wt, l1.Bias, entries, ForwardKernels.CompactPixelsSmall256(pixels, entries),
            h);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Output(in DenseLayer l1, in DenseLayer l2, float* h) =>
        ForwardKernels.OutputSmall256(l2.Wt, l2.Bias, l1.Out, h);
}

/// <summary>
/// The seed's shape (784 -> H &lt;= 16 -> 10) from bytes: the fused small-model kernels K (32-bit entries, layer 1
/// into one 16-float hidden vector, layer 2 and the argmax in registers). A batch runs
/// <see cref="ForwardPath.SmallGroup"/> images at a time: layer 1 of each, then layer 2 and the argmax of the group.
/// Per image, layer 2 and the argmax are a ~60-cycle dependency chain that the next image's compaction did not
/// hide; a group's chains are independent. Float images and probabilities take the sparse path of width W.
/// </summary>
internal sealed unsafe class SmallModelPath<W, TV, K>(DenseLayer[] layers) : SparsePath<W, TV>(layers)
    where W : struct, IVectorWidth<TV> where TV : unmanaged where K : struct, ISmallModelKernels
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override int Predict(byte* pixels, byte* scratch)
    {
        SmallLayout layout = SmallScratch(scratch);
        K.Hidden(Layers[0], pixels, layout.Entries, layout.Tmp, layout.H);
        return K.Output(Layers[0], Layers[1], layout.H);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override void PredictRange(byte* images, int* labels, int start, int end, byte* scratch)
    {
        SmallLayout layout = SmallScratch(scratch);
        uint* entries = layout.Entries;
        byte* tmp = layout.Tmp;
        float* group = layout.Group;
        DenseLayer l1 = Layers[0], l2 = Layers[1];
        for (int g = start; g < end; g += SmallGroup)
        {
            int count = Math.Min(SmallGroup, end - g);
            for (int i = 0; i < count; i++)
            {
                PrefetchImage(images + (long)Math.Min(g + i + PrefetchDistance, end - 1) * MnistClassifier.PixelCount);
                K.Hidden(l1, images + (long)(g + i) * MnistClassifier.PixelCount, entries, tmp,
                    group + i * ForwardKernels.Lane);
            }
            for (int i = 0; i < count; i++) labels[g + i] = K.Output(l1, l2, group + i * ForwardKernels.Lane);
        }
    }
}

/// <summary>
/// The seed's shape with at most 10 hidden units, from bytes: layer 1 in 16-bit integers (<see
/// cref="Int16FirstLayer"/>)
/// and float layer 2 with a certificate; an image without a certain answer (near ties) goes through the small float
/// kernels of <see cref="Float"/>, which also answer float images and probabilities.
/// </summary>
internal sealed unsafe class Int16FirstLayerPath(DenseLayer[] layers, Int16FirstLayer weights, ForwardPath floatPath)
    : ForwardPath(layers)
{
    public static bool IsSupported => ForwardKernels.CanRunInt16;

    /// <summary>The small float kernels that settle the near ties.</summary>
    public ForwardPath Float { get; } = floatPath;

    public Int16FirstLayer Weights { get; } = weights;

    public override InferenceKernel Kernel => Float.Kernel;

    public override float* Logits(byte* pixels, float* x, byte* scratch) => Float.Logits(pixels, x, scratch);

    public override int ArgMaxOf(float* logits) => Float.ArgMaxOf(logits);

    // The group's hidden vectors: the part of the scratch that the small float kernels leave alone.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float* Group(byte* scratch) => SmallScratch(scratch).Group;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override int Predict(byte* pixels, byte* scratch)
    {
        int label = CertifiedLabel(pixels, Group(scratch));
        return label >= 0 ? label : Float.Predict(pixels, scratch);
    }

    /// <summary>
    /// One image through the integer pass: h (16 floats, 64-byte aligned) its hidden vector, the result its certified
    /// class or -1 (see Int16FirstLayer).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CertifiedLabel(byte* pixels, float* h)
    {
        Int16FirstLayer q = Weights;
        DenseLayer l1 = Layers[0], l2 = Layers[1];
        ForwardKernels.HiddenInt16(pixels, q.Weights, q.Scale, l1.Bias, h);
        return ForwardKernels.OutputCertified(l2.Wt, l2.Bias, l1.Out, h, q.Threshold);
    }

    // As SmallModelPath.PredictRange: layer 1 of the group's images, then layer 2 and the certificate of each.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override void PredictRange(byte* images, int* labels, int start, int end, byte* scratch)
    {
        Int16FirstLayer q = Weights;
        float* group = Group(scratch);
        DenseLayer l1 = Layers[0], l2 = Layers[1];
        for (int g = start; g < end; g += SmallGroup)
        {
            int count = Math.Min(SmallGroup, end - g);
            for (int i = 0; i < count; i++)
            {
                PrefetchImage(images + (long)Math.Min(g + i + PrefetchDistance, end - 1) * MnistClassifier.PixelCount);
                ForwardKernels.HiddenInt16(images + (long)(g + i) * MnistClassifier.PixelCount, q.Weights, q.Scale,
                    l1.Bias,
                    group + i * ForwardKernels.Lane);
            }
            for (int i = 0; i < count; i++)
            {
                int label = ForwardKernels.OutputCertified(l2.Wt, l2.Bias, l1.Out, group + i * ForwardKernels.Lane,
                    q.Threshold);
                labels[g + i] = label >= 0
                    ? label : Float.Predict(images + (long)(g + i) * MnistClassifier.PixelCount, scratch);
            }
        }
    }
}

/// <summary>
/// Any model but the seed's shape, from bytes, on AVX-512BW: layer 1 over pixel pairs in 16-bit integers
/// (<see cref="PairedFirstLayer"/>), the later layers as <see cref="SparsePath{W, TV}"/>, and a certificate on the
/// logits; an image without a certain answer (near ties), or too bright for the integer sums, is computed again by
/// the float path. Float images and probabilities take the float path.
/// Why: the float path's layer 1 reads a 64-byte line of W1t per kept pixel and 16 outputs, and on Zen 4 it waits
/// on those lines coming from L2 (W1t of a 784-384 layer is 1.2 MB, more than L2); a paired word row carries two
/// pixels in the same bytes and one vpmaddwd does their 32 multiply-adds.
/// </summary>
internal sealed unsafe class PairedFirstLayerPath(DenseLayer[] layers, PairedFirstLayer pairs)
    : SparsePath<Width512, Vector512<float>>(layers)
{
    public static bool IsSupported => Width512.IsSupported && ForwardKernels.CanRunPairs;

    public PairedFirstLayer Pairs { get; } = pairs;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override int Predict(byte* pixels, byte* scratch)
    {
        int label = CertifiedLabel(pixels, scratch);
        return label >= 0 ? label : base.Predict(pixels, scratch);
    }

    /// <summary>The pass's class if the bound certifies it, else -1 (see PairedFirstLayer).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public int CertifiedLabel(byte* pixels, byte* scratch)
    {
        GeneralLayout layout = GeneralScratch(scratch);
        int* idx = layout.Idx;
        float* val = layout.Val, z = layout.Z;
        PairedFirstLayer q = Pairs;
        int n = ForwardKernels.CompactPixelPairs(pixels, idx, (uint*)val);
        float e = ForwardKernels.BoundSums(q.ResidualMax, q.WeightMax, idx, (uint*)val, n, out float a,
            out int pixelSum);
        if (pixelSum > PairedFirstLayer.MaxPixelSum) return -1;
        float threshold = q.ThresholdFloat(e, a, n);
        DenseLayer[] layers = Layers;
        DenseLayer layer = layers[0];
        ForwardKernels.AccumulatePairs(z, q.Weights, q.Scale, layer.Bias, layer.OutPad, idx, (uint*)val, n);
        for (int l = 1; l < layers.Length; l++)
        {
            VectorKernels<Width512, Vector512<float>>.Relu(z, layer.OutPad);
            n = VectorKernels<Width512, Vector512<float>>.CompactNonzero(z, layer.Out, idx, val);
            layer = layers[l];
            VectorKernels<Width512, Vector512<float>>.SparseAccumulate(z, layer.Bias, layer.Wt, layer.OutPad, idx, val,
                n, layer.OutPad);
        }
        return ForwardKernels.CertifiedArgMax10(z, threshold);
    }
}

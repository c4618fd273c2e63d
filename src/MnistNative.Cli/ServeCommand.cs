using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using MnistNative.Serving;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command ServeCommand()
    {
        var model = new Option<FileInfo>("--model")
        {
            Description = "The model (.npz or .onnx) to serve; replacing the file swaps the new model in without " +
                "dropping requests.",
            Required = true,
            HelpName = "FILE",
        };
        var urls = new Option<string>("--urls")
        {
            Description = "Addresses to listen on, separated by ';' (port 0 picks a free port).",
            DefaultValueFactory = _ => ServeOptions.DefaultUrls,
            HelpName = "URLS",
        };
        var maxBatch = IntOption(
            "--max-batch",
            "The most images one batch request may hold.",
            ServeOptions.DefaultMaxBatch,
            1,
            100_000,
            "N"
        );
        var command = new Command(
            "serve",
            "Serve the model over HTTP (POST /v1/predict, GET /healthz, /v1/model, /metrics) "
                + "with a page at / where you draw a digit."
        )
        {
            model,
            urls,
            maxBatch,
        };
        command.SetAction(parse =>
            Guard(() =>
            {
                var options = new ServeOptions
                {
                    ModelPath = parse.GetValue(model)!.FullName,
                    Urls = parse.GetValue(urls)!,
                    MaxBatch = parse.GetValue(maxBatch),
                };
                using WebApplication app = ServeApp.Build(options);
                try
                {
                    app.Start();
                }
                catch (IOException e)
                {
                    throw new ArgumentException($"--urls {options.Urls}: cannot listen ({e.Message})", e);
                }
                catch (FormatException e)
                {
                    throw new ArgumentException($"--urls {options.Urls}: {e.Message}", e);
                }
                Err.WriteLine(
                    $"mnistnative serve: listening on {string.Join(' ', ServeApp.Addresses(app))} "
                        + $"(model {options.ModelPath}; Ctrl-C stops)"
                );
                // Ctrl-C and SIGTERM stop the host: Kestrel stops accepting, requests in flight finish (up to 10 s)
                app.WaitForShutdown();
                return ExitCodes.Ok;
            })
        );
        return command;
    }
}

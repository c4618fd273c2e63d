using System.Buffers.Binary;
using System.CommandLine;
using System.Text.Json;
using MnistNative.Data;
using MnistNative.Formats;
using MnistNative.Inference;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command PredictCommand()
    {
        var model = new Option<FileInfo>("--model")
        {
            Description = "The model: a .npz (as written by train) or an ONNX MLP.",
            Required = true,
            HelpName = "FILE",
        };
        var idx = new Option<FileInfo?>("--idx")
        {
            Description = "An IDX images file (raw or .gz), e.g. data/mnist/t10k-images-idx3-ubyte.",
            HelpName = "IMAGES",
        };
        var index = new Option<string?>("--index")
        {
            Description = "With --idx: the image index I, or a range I..J (inclusive).",
            HelpName = "I[..J]",
        };
        var png = new Option<FileInfo?>("--png")
        {
            Description = "A 28x28 grayscale PNG, white digit on black as in MNIST.",
            HelpName = "FILE",
        };
        var json = JsonOption("the predictions");
        var command = new Command("predict",
            "Classify MNIST images from an IDX file or a 28x28 PNG with the embeddable inference core.")
        {
            model, idx, index, png, json,
        };
        command.Validators.Add(r =>
        {
            bool hasIdx = r.GetResult(idx) != null, hasPng = r.GetResult(png) != null;
            if (hasIdx == hasPng) r.AddError("give either --idx IMAGES --index I[..J] or --png FILE");
            else if (hasIdx && r.GetResult(index) == null) r.AddError("--idx needs --index I or --index I..J");
            else if (hasPng && r.GetResult(index) != null) r.AddError("--index goes with --idx, not --png");
        });
        command.SetAction(parse => Guard(() =>
        {
            // the PNG is read first: a bad one is refused before the model is loaded
            FileInfo? pngFile = parse.GetValue(png);
            byte[]? pixels = pngFile == null ? null : DigitPng.Read(pngFile.FullName);
            using MnistClassifier classifier = MnistClassifier.Load(parse.GetValue(model)!.FullName);
            var results = new List<PredictionResult>();
            Span<float> probs = stackalloc float[MnistClassifier.ClassCount];
            if (pngFile != null && pixels != null)
            {
                classifier.Probabilities(pixels, probs);
                results.Add(Result(pngFile.Name, null, probs));
            }
            else
            {
                FileInfo images = parse.GetValue(idx)!;
                byte[] all = Idx.ReadImages(images.FullName, out int count);
                var (first, last) = ParseRange(parse.GetValue(index)!, count);
                for (int i = first; i <= last; i++)
                {
                    classifier.Probabilities(
                        all.AsSpan(i * MnistClassifier.PixelCount, MnistClassifier.PixelCount), probs);
                    results.Add(Result(images.Name, i, probs));
                }
            }
            if (parse.GetValue(json))
                Out.WriteLine(JsonSerializer.Serialize(results, JsonOutput.Options));
            else
                foreach (PredictionResult r in results)
                    Out.WriteLine($"{r.Source}{(r.Index is int i ? $"[{i}]" : "")}: {r.Digit} " +
                        $"(probability {r.Probability:F4})");
            return ExitCodes.Ok;
        }));
        return command;
    }

    private static PredictionResult Result(string source, int? index, ReadOnlySpan<float> probs)
    {
        int best = 0;
        for (int c = 1; c < probs.Length; c++) if (probs[c] > probs[best]) best = c;
        return new PredictionResult(source, index, best, probs[best], probs.ToArray());
    }

    /// <summary>"I" or "I..J" (inclusive), checked against the file's image count.</summary>
    internal static (int First, int Last) ParseRange(string text, int count)
    {
        string[] parts = text.Split("..");
        if (parts.Length is < 1 or > 2 || !parts.All(p => int.TryParse(p, out _)))
            throw new ArgumentException($"--index '{text}' is not an index I or a range I..J");
        int first = int.Parse(parts[0]), last = parts.Length == 2 ? int.Parse(parts[1]) : first;
        if (first < 0 || last < first || last >= count)
            throw new ArgumentException($"--index {text} is outside the file's {count} images (0..{count - 1})");
        return (first, last);
    }

    private Command ExportCommand()
    {
        var model = new Option<FileInfo>("--model")
        {
            Description = "The model to export: a .npz, or an ONNX MLP (rewritten in this exporter's form, " +
                "normalisation folded).",
            Required = true,
            HelpName = "FILE",
        };
        var onnx = new Option<string>("--onnx")
        {
            Description = "The ONNX file to write (Gemm/Relu/.../Softmax, opset 13; input 'pixels' float[N,784] " +
                "scaled to 0..1, output 'probabilities' float[N,10]).",
            Required = true,
            HelpName = "FILE",
        };
        var command = new Command("export", "Export a model to ONNX, for ONNX Runtime and other tools.")
        {
            model, onnx,
        };
        command.SetAction(parse => Guard(() =>
        {
            string output = parse.GetValue(onnx)!;
            Onnx.OnnxExporter.Export(parse.GetValue(model)!.FullName, output);
            Out.WriteLine($"Wrote {output} (ONNX opset {Onnx.OnnxExporter.Opset}, " +
                $"input '{Onnx.OnnxExporter.InputName}' [N,784] in 0..1, " +
                $"output '{Onnx.OnnxExporter.OutputName}' [N,10])");
            return ExitCodes.Ok;
        }));
        return command;
    }
}

public sealed record PredictionResult(string Source, int? Index, int Digit, float Probability, float[] Probabilities);

using System.CommandLine;
using System.Text.Json;
using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Inference;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command EvalCommand()
    {
        var model = new Option<FileInfo>("--model")
        {
            Description = "The model to evaluate: a .npz (as written by train) or an ONNX MLP.",
            Required = true,
            HelpName = "FILE",
        };
        var data = DataOption();
        var json = JsonOption("the accuracy and the confusion matrix");
        var confusionPng = new Option<string?>("--confusion")
        {
            Description = "Also draw the confusion matrix as a heat map into this PNG.",
            HelpName = "FILE.png",
        };
        var errorsPng = new Option<string?>("--errors")
        {
            Description = "Also draw a grid of misclassified test digits (true -> predicted) into this PNG.",
            HelpName = "FILE.png",
        };
        var command = new Command("eval",
            "Evaluate a model on the 10,000 MNIST test images: accuracy and confusion matrix.")
        {
            model, data, json, confusionPng, errorsPng,
        };
        command.SetAction(parse => Guard(() =>
        {
            FileInfo file = parse.GetValue(model)!;
            foreach (string? png in new[] { parse.GetValue(confusionPng), parse.GetValue(errorsPng) })
                if (png != null && !png.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
                    throw new ArgumentException($"{png}: the picture's file name must end in .png");
            using MnistClassifier classifier = MnistClassifier.Load(file.FullName);
            var (_, test) = LoadData(parse.GetValue(data), trainCount: 0);
            var predictions = new int[test.Count];
            classifier.PredictBatch(test.Pixels, predictions);
            string shape = string.Join('-', classifier.Sizes);
            double accuracy = Evaluation.Accuracy(predictions, test.Labels);
            int[,] confusion = Evaluation.ConfusionMatrix(predictions, test.Labels);
            if (parse.GetValue(confusionPng) is string cpath)
            {
                EvalPictures.Confusion(cpath, confusion);
                Err.WriteLine($"Confusion heat map drawn to {cpath}");
            }
            if (parse.GetValue(errorsPng) is string epath)
            {
                EvalPictures.Errors(epath, test.Pixels, test.Labels, predictions);
                Err.WriteLine($"Misclassified digits drawn to {epath}");
            }
            if (parse.GetValue(json))
            {
                var rows = Enumerable.Range(0, 10)
                    .Select(t => Enumerable.Range(0, 10).Select(p => confusion[t, p]).ToArray()).ToArray();
                Out.WriteLine(JsonSerializer.Serialize(
                    new EvalSummary(file.FullName, shape, test.Count, accuracy, rows), JsonOutput.Options));
                return ExitCodes.Ok;
            }
            Out.WriteLine($"Model {file.Name} ({shape}, {classifier.Kernel} kernel) on {test.Count} test images");
            Out.WriteLine($"Test accuracy = {accuracy:F4}");
            Out.WriteLine();
            Out.WriteLine("Confusion matrix (rows: true digit, columns: predicted)");
            Out.WriteLine("       " + string.Concat(Enumerable.Range(0, 10).Select(p => $"{p,6}")) + "  recall");
            for (int t = 0; t < 10; t++)
            {
                int total = Enumerable.Range(0, 10).Sum(p => confusion[t, p]);
                Out.WriteLine($"  {t,3}  " +
                    string.Concat(Enumerable.Range(0, 10).Select(p => $"{confusion[t, p],6}")) +
                    $"  {(total == 0 ? 0 : (double)confusion[t, t] / total),6:F3}");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }
}

public sealed record EvalSummary(string Model, string Shape, int TestCount, double TestAccuracy, int[][] Confusion);

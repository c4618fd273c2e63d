using MnistNative.Core;
using ScottPlot;

namespace MnistNative.Cli;

/// <summary>
/// The PNGs the CLI draws, with ScottPlot: training curves, the confusion heat map, the grid of errors.
/// </summary>
internal static class Plots
{
    public const int CurvesWidth = 900, CurvesHeight = 540;

    public static void TrainingCurves(string path, IReadOnlyList<EpochEntry> epochs,
        IReadOnlyDictionary<int, double> test)
    {
        var plot = new Plot();
        double[] x = epochs.Select(e => (double)e.Epoch).ToArray();
        var loss = plot.Add.Scatter(x, epochs.Select(e => e.TrainLoss).ToArray());
        loss.LegendText = "train loss (right axis)";
        loss.Axes.YAxis = plot.Axes.Right;
        var train = plot.Add.Scatter(x, epochs.Select(e => e.TrainAccuracy).ToArray());
        train.LegendText = "train accuracy";
        if (epochs.Any(e => !double.IsNaN(e.ValidationAccuracy)))
        {
            var v = plot.Add.Scatter(x, epochs.Select(e => e.ValidationAccuracy).ToArray());
            v.LegendText = "validation accuracy";
        }
        if (test.Count > 0)
        {
            var t = plot.Add.Scatter(test.Keys.Select(k => (double)k).ToArray(), test.Values.ToArray());
            t.LegendText = "test accuracy";
        }
        plot.Title("Training curves");
        plot.XLabel("epoch");
        plot.YLabel("accuracy");
        plot.Axes.Right.Label.Text = "loss";
        plot.ShowLegend(Alignment.LowerRight);
        Save(plot, path, CurvesWidth, CurvesHeight);
    }

    private static void Save(Plot plot, string path, int width, int height)
    {
        string full = Path.GetFullPath(path);
        Formats.AtomicFile.Write(full, stream => stream.Write(plot.GetImageBytes(width, height, ImageFormat.Png)));
    }
}

internal static class EvalPictures
{
    public const int ConfusionSize = 700;
    public const int Columns = 10, Cell = 28 * 3, LabelBand = 22;

    /// <summary>Heat map of confusion[true, predicted] with the counts written in the cells.</summary>
    public static void Confusion(string path, int[,] confusion)
    {
        var plot = new Plot();
        var values = new double[10, 10];
        for (int t = 0; t < 10; t++)
            for (int p = 0; p < 10; p++) values[t, p] = Math.Log10(1 + confusion[t, p]);
        var heat = plot.Add.Heatmap(values);
        heat.Colormap = new ScottPlot.Colormaps.Viridis();
        for (int t = 0; t < 10; t++)
            for (int p = 0; p < 10; p++)
            {
                var label = plot.Add.Text(confusion[t, p].ToString(), p, 9 - t);
                label.LabelFontColor = t == p ? Colors.Black : Colors.White;
                label.LabelAlignment = Alignment.MiddleCenter;
                label.LabelFontSize = 13;
            }
        double[] ticks = Enumerable.Range(0, 10).Select(i => (double)i).ToArray();
        plot.Axes.Bottom.SetTicks(ticks, ticks.Select(i => ((int)i).ToString()).ToArray());
        plot.Axes.Left.SetTicks(ticks, ticks.Select(i => (9 - (int)i).ToString()).ToArray());
        plot.Title("Confusion matrix (colour: log10(1 + count))");
        plot.XLabel("predicted digit");
        plot.YLabel("true digit");
        var bytes = plot.GetImageBytes(ConfusionSize, ConfusionSize, ImageFormat.Png);
        Formats.AtomicFile.Write(Path.GetFullPath(path), s => s.Write(bytes));
    }

    /// <summary>
    /// Up to <paramref name="max"/> misclassified test digits in a grid of <see cref="Columns"/> columns, each
    /// drawn 3x with "true -> predicted" above it. Returns the image's (width, height).
    /// </summary>
    public static (int Width, int Height) Errors(string path, ReadOnlySpan<byte> pixels, ReadOnlySpan<byte> labels,
        ReadOnlySpan<int> predictions, int max = 60)
    {
        var wrong = new List<int>();
        for (int i = 0; i < labels.Length && wrong.Count < max; i++) if (predictions[i] != labels[i]) wrong.Add(i);
        int rows = Math.Max(1, (wrong.Count + Columns - 1) / Columns);
        int width = Columns * Cell, height = rows * (Cell + LabelBand);
        using var bitmap = new SkiaSharp.SKBitmap(width, height);
        using (var canvas = new SkiaSharp.SKCanvas(bitmap))
        {
            canvas.Clear(SkiaSharp.SKColors.White);
            using var font = new SkiaSharp.SKFont(SkiaSharp.SKTypeface.Default, 16);
            using var ink = new SkiaSharp.SKPaint { Color = SkiaSharp.SKColors.DarkRed, IsAntialias = true };
            for (int n = 0; n < wrong.Count; n++)
            {
                int i = wrong[n], x0 = n % Columns * Cell, y0 = n / Columns * (Cell + LabelBand);
                canvas.DrawText($"{labels[i]} -> {predictions[i]}", x0 + 6, y0 + 17, SkiaSharp.SKTextAlign.Left,
                    font, ink);
                for (int r = 0; r < 28; r++)
                    for (int c = 0; c < 28; c++)
                    {
                        byte v = (byte)(255 - pixels[i * 784 + r * 28 + c]);
                        using var paint = new SkiaSharp.SKPaint { Color = new SkiaSharp.SKColor(v, v, v) };
                        canvas.DrawRect(x0 + c * 3, y0 + LabelBand + r * 3, 3, 3, paint);
                    }
            }
        }
        using var image = SkiaSharp.SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SkiaSharp.SKEncodedImageFormat.Png, 100);
        byte[] png = data.ToArray();
        Formats.AtomicFile.Write(Path.GetFullPath(path), s => s.Write(png));
        return (width, height);
    }
}

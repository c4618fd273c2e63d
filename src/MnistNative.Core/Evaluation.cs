using System.Diagnostics;

namespace MnistNative.Core;

public static class Evaluation
{
    /// <summary>Index of the largest value; the first one on ties, as numpy's argmax.</summary>
    public static int ArgMax(ReadOnlySpan<double> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>Predicted class of every image through the backend's forward-only path.</summary>
    public static int[] Predict(ITrainingBackend backend, ReadOnlySpan<byte> images, int count)
    {
        int chunk = Math.Clamp(backend.MaxBatch, 1, 2048);
        long start = Stopwatch.GetTimestamp();
        var predictions = new int[count];
        var probs = new double[Math.Min(chunk, Math.Max(count, 1)) * MlpParameters.Classes];
        for (int begin = 0; begin < count; begin += chunk)
        {
            int n = Math.Min(chunk, count - begin);
            Span<double> p = probs.AsSpan(0, n * MlpParameters.Classes);
            backend.Predict(images.Slice(begin * LabeledImages.PixelsPerImage, n * LabeledImages.PixelsPerImage), p);
            for (int i = 0; i < n; i++)
                predictions[begin + i] = ArgMax(p.Slice(i * MlpParameters.Classes, MlpParameters.Classes));
        }
        EngineMetrics.SamplesInferred.Add(count);
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        if (seconds > 0) EngineMetrics.InferenceRate(count / seconds);
        return predictions;
    }

    /// <summary>confusion[true, predicted] counts.</summary>
    public static int[,] ConfusionMatrix(ReadOnlySpan<int> predictions, ReadOnlySpan<byte> labels)
    {
        var m = new int[MlpParameters.Classes, MlpParameters.Classes];
        for (int i = 0; i < labels.Length; i++) m[labels[i], predictions[i]]++;
        return m;
    }

    public static double Accuracy(ReadOnlySpan<int> predictions, ReadOnlySpan<byte> labels)
    {
        int correct = 0;
        for (int i = 0; i < labels.Length; i++) if (predictions[i] == labels[i]) correct++;
        return labels.Length == 0 ? 0 : (double)correct / labels.Length;
    }
}

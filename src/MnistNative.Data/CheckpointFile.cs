using MnistNative.Core;
using MnistNative.Formats;

namespace MnistNative.Data;

/// <summary>
/// A training checkpoint as one .npz (written to a temp file, then renamed): the model under the model file's
/// names (w1, b1, ..., so `eval --model` reads a checkpoint too), the optimizer moments (m{k}_w{l}, m{k}_b{l}),
/// the position and partial metrics of the run ("state"), the epochs logged so far ("history") and the run's
/// settings key ("run_key", as character codes).
/// </summary>
public static class CheckpointFile
{
    public const string FileName = "checkpoint.npz";

    public static string PathIn(string directory) => Path.Combine(directory, FileName);

    public static void Save(string directory, TrainingCheckpoint c)
    {
        Directory.CreateDirectory(directory);
        var entries = new List<Npz.Entry>();
        MlpParameters w = c.Weights;
        for (int l = 0; l < w.LayerCount; l++)
        {
            entries.Add(new($"w{l + 1}", [w.Sizes[l + 1], w.Sizes[l]], w.W[l]));
            entries.Add(new($"b{l + 1}", [w.Sizes[l + 1], 1], w.B[l]));
        }
        for (int k = 0; k < c.Optimizer.Moments.Length; k++)
        {
            MlpParameters m = c.Optimizer.Moments[k];
            for (int l = 0; l < m.LayerCount; l++)
            {
                entries.Add(new($"m{k}_w{l + 1}", [m.Sizes[l + 1], m.Sizes[l]], m.W[l]));
                entries.Add(new($"m{k}_b{l + 1}", [m.Sizes[l + 1]], m.B[l]));
            }
        }
        entries.Add(new("state", [9], [c.Epoch, c.BatchInEpoch, c.Step, c.EpochLossSum, c.EpochCorrect, c.EpochCount, c.TrainSeconds, c.Optimizer.Steps, c.Optimizer.Moments.Length]));
        var history = new double[c.History.Count * 6];
        for (int i = 0; i < c.History.Count; i++)
        {
            EpochEntry e = c.History[i];
            new[] { e.Epoch, e.Step, e.TrainLoss, e.TrainAccuracy, e.ValidationAccuracy, e.TrainSeconds }.CopyTo(history, i * 6);
        }
        entries.Add(new("history", [c.History.Count, 6], history));
        entries.Add(new("run_key", [c.RunKey.Length], c.RunKey.Select(ch => (double)ch).ToArray()));
        Npz.Write(PathIn(directory), entries);
    }

    public static TrainingCheckpoint Load(string directory)
    {
        string path = PathIn(directory);
        if (!File.Exists(path)) throw new ArgumentException($"--resume: no checkpoint in {directory} (expected {FileName})");
        MlpParameters weights = ModelFile.Load(path);
        Dictionary<string, NpyArray> a = Npz.Read(path);
        NpyArray Need(string name) => a.TryGetValue(name, out NpyArray? v) ? v : throw new DataFormatException(path, $"has no array '{name}': not a checkpoint");
        double[] state = Need("state").ToDoubles();
        if (state.Length != 9) throw new DataFormatException(path, "'state' must hold 9 values");
        // Found by fuzzing (tests/fuzz/checkpoint): a negative count overflowed the array allocation, a huge one
        // allocated it before any moment was read, and a moment of another length was copied as a prefix or threw.
        if (state[8] is not (0 or 1 or 2))
            throw new DataFormatException(path, $"'state' holds {state[8]} optimizer moments; 0, 1 or 2 expected");
        int momentCount = (int)state[8];
        var moments = new MlpParameters[momentCount];
        for (int k = 0; k < momentCount; k++)
        {
            moments[k] = new MlpParameters(weights.Sizes);
            for (int l = 0; l < weights.LayerCount; l++)
            {
                CopyExactly(path, $"m{k}_w{l + 1}", Need($"m{k}_w{l + 1}").ToDoubles(), moments[k].W[l]);
                CopyExactly(path, $"m{k}_b{l + 1}", Need($"m{k}_b{l + 1}").ToDoubles(), moments[k].B[l]);
            }
        }
        double[] h = Need("history").ToDoubles();
        var history = new List<EpochEntry>();
        for (int i = 0; i + 6 <= h.Length; i += 6)
            history.Add(new EpochEntry((int)h[i], (long)h[i + 1], h[i + 2], h[i + 3], h[i + 4], h[i + 5]));
        string key = new(Need("run_key").ToDoubles().Select(d => (char)d).ToArray());
        return new TrainingCheckpoint
        {
            Weights = weights, Optimizer = new OptimizerState((long)state[7], moments), Epoch = (int)state[0], BatchInEpoch = (long)state[1],
            Step = (long)state[2], EpochLossSum = state[3], EpochCorrect = (long)state[4], EpochCount = (long)state[5], TrainSeconds = state[6],
            History = history, RunKey = key,
        };
    }

    private static void CopyExactly(string path, string name, double[] values, double[] destination)
    {
        if (values.Length != destination.Length)
        {
            throw new DataFormatException(path,
                $"'{name}' holds {values.Length} values; {destination.Length} expected");
        }
        values.CopyTo(destination, 0);
    }
}

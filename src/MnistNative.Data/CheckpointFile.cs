using MnistNative.Core;
using System.Text.RegularExpressions;
using MnistNative.Formats;

namespace MnistNative.Data;

/// <summary>
/// A training checkpoint as one .npz (written to a temp file, then renamed): the model under the model file's
/// names (w1, b1, ..., so `eval --model` reads a checkpoint too), the optimizer moments (m{k}_w{l}, m{k}_b{l}),
/// the position and partial metrics of the run ("state"), the epochs logged so far ("history") and the run's
/// settings key ("run_key", as character codes).
/// </summary>
public static partial class CheckpointFile
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
        entries.Add(new("state", [9], [c.Epoch, c.BatchInEpoch, c.Step, c.EpochLossSum, c.EpochCorrect,
            c.EpochCount, c.TrainSeconds, c.Optimizer.Steps, c.Optimizer.Moments.Length]));
        var history = new double[c.History.Count * 6];
        for (int i = 0; i < c.History.Count; i++)
        {
            EpochEntry e = c.History[i];
            new[] { e.Epoch, e.Step, e.TrainLoss, e.TrainAccuracy, e.ValidationAccuracy, e.TrainSeconds }
                .CopyTo(history, i * 6);
        }
        entries.Add(new("history", [c.History.Count, 6], history));
        entries.Add(new("run_key", [c.RunKey.Length], c.RunKey.Select(ch => (double)ch).ToArray()));
        if (double.IsFinite(c.FirstLoss)) entries.Add(new("first_loss", [1], [c.FirstLoss]));
        Npz.Write(PathIn(directory), entries);
    }

    /// <summary>Most epochs a checkpoint's history may list, and the largest position or count it may hold.</summary>
    public const int MaxEpochs = 1_000_000;
    private const double MaxCount = 1L << 53; // integers a double holds exactly

    /// <summary>Most characters of the run's settings key.</summary>
    public const int MaxRunKeyLength = 4096;

    /// <summary>
    /// Loads DIR/checkpoint.npz, checking every field before any of it is used: shapes and lengths against the
    /// model, finiteness, integer positions and counts in range, a printable run key. A problem is a
    /// <see cref="DataFormatException"/> naming the file and the field.
    /// </summary>
    public static TrainingCheckpoint Load(string directory)
    {
        string path = PathIn(directory);
        if (!File.Exists(path))
            throw new ArgumentException($"--resume: no checkpoint in {directory} (expected {FileName})");
        MlpParameters weights = ModelFile.Load(path);
        Dictionary<string, NpyArray> a = Npz.Read(path, name =>
            name is "state" or "history" or "run_key" or "first_loss" || MomentName().IsMatch(name));
        DataFormatException Bad(string field, string problem) => new(path, $"field '{field}' {problem}; not a usable " +
            $"checkpoint");
        double[] Values(string name, int[]? shape = null)
        {
            if (!a.TryGetValue(name, out NpyArray? v))
                throw new DataFormatException(path, $"has no array '{name}': not a checkpoint");
            if (!v.IsFloat) throw Bad(name, $"has dtype {v.Descr}; float64 expected");
            if (shape != null && !v.Shape.AsSpan().SequenceEqual(shape))
                throw Bad(name, $"has shape ({string.Join(", ", v.Shape)}); ({string.Join(", ", shape)}) expected");
            return v.ToDoubles();
        }
        long Count(string field, double value, double max)
        {
            if (!double.IsFinite(value) || value < 0 || value > max || value != Math.Floor(value))
                throw Bad(field, $"is {value}; a whole number in 0..{max} expected");
            return (long)value;
        }

        double[] state = Values("state", [9]);
        int epoch = (int)Count("state[0] (epoch)", state[0], MaxEpochs);
        long batchInEpoch = Count("state[1] (batch in epoch)", state[1], MaxCount);
        long step = Count("state[2] (step)", state[2], MaxCount);
        double lossSum = state[3];
        if (!double.IsFinite(lossSum) || lossSum < 0)
            throw Bad("state[3] (epoch loss sum)", $"is {lossSum}; a finite number >= 0 expected");
        long correct = Count("state[4] (epoch correct)", state[4], MaxCount);
        long count = Count("state[5] (epoch count)", state[5], MaxCount);
        if (correct > count)
            throw Bad("state[4] (epoch correct)", $"is {correct}, more than the epoch's {count} samples");
        double seconds = state[6];
        if (!double.IsFinite(seconds) || seconds < 0)
            throw Bad("state[6] (train seconds)", $"is {seconds}; a finite number >= 0 expected");
        long optimizerSteps = Count("state[7] (optimizer steps)", state[7], MaxCount);
        int momentCount = (int)Count("state[8] (optimizer moments)", state[8], 2);

        var moments = new MlpParameters[momentCount];
        for (int k = 0; k < momentCount; k++)
        {
            moments[k] = new MlpParameters(weights.Sizes);
            for (int l = 0; l < weights.LayerCount; l++)
            {
                (string wName, string bName) = ($"m{k}_w{l + 1}", $"m{k}_b{l + 1}");
                double[] mw = Values(wName, [weights.Sizes[l + 1], weights.Sizes[l]]);
                double[] mb = Values(bName, [weights.Sizes[l + 1]]);
                if (!mw.All(double.IsFinite)) throw Bad(wName, "holds NaN or infinite values");
                if (!mb.All(double.IsFinite)) throw Bad(bName, "holds NaN or infinite values");
                mw.CopyTo(moments[k].W[l], 0);
                mb.CopyTo(moments[k].B[l], 0);
            }
        }

        if (!a.TryGetValue("history", out NpyArray? historyArray))
            throw new DataFormatException(path, "has no array 'history': not a checkpoint");
        int epochs = historyArray.Shape.Length == 2 && historyArray.Shape[1] == 6 ? historyArray.Shape[0] : -1;
        if (epochs < 0 || epochs > MaxEpochs)
            throw Bad("history", $"has shape ({string.Join(", ", historyArray.Shape)}); (epochs, 6) expected");
        double[] h = Values("history");
        var history = new List<EpochEntry>(epochs);
        for (int i = 0; i < epochs; i++)
        {
            string row = $"history[{i}]";
            ReadOnlySpan<double> r = h.AsSpan(i * 6, 6);
            int entryEpoch = (int)Count(row + " (epoch)", r[0], MaxEpochs);
            long entryStep = Count(row + " (step)", r[1], MaxCount);
            if (!double.IsFinite(r[2]) || r[2] < 0)
                throw Bad(row + " (train loss)", $"is {r[2]}; a finite number >= 0 expected");
            if (!(r[3] >= 0 && r[3] <= 1)) throw Bad(row + " (train accuracy)", $"is {r[3]}; 0..1 expected");
            if (!double.IsNaN(r[4]) && !(r[4] >= 0 && r[4] <= 1))
                throw Bad(row + " (validation accuracy)", $"is {r[4]}; 0..1 (or NaN: none) expected");
            if (!double.IsFinite(r[5]) || r[5] < 0)
                throw Bad(row + " (train seconds)", $"is {r[5]}; a finite number >= 0 expected");
            history.Add(new EpochEntry(entryEpoch, entryStep, r[2], r[3], r[4], r[5]));
        }

        if (!a.TryGetValue("run_key", out NpyArray? keyArray))
            throw new DataFormatException(path, "has no array 'run_key': not a checkpoint");
        if (keyArray.Shape.Length != 1 || keyArray.Shape[0] > MaxRunKeyLength)
            throw Bad("run_key", $"has shape ({string.Join(", ", keyArray.Shape)}); at most {MaxRunKeyLength} " +
                $"character codes expected");
        double[] codes = Values("run_key");
        if (codes.Any(c => !(c >= ' ' && c <= '~') || c != Math.Floor(c)))
            throw Bad("run_key", "holds codes that are not printable ASCII characters");
        string key = new(codes.Select(d => (char)d).ToArray());

        double firstLoss = double.NaN;
        if (a.ContainsKey("first_loss"))
        {
            firstLoss = Values("first_loss", [1])[0];
            if (!double.IsFinite(firstLoss) || firstLoss < 0)
                throw Bad("first_loss", $"is {firstLoss}; a finite number >= 0 expected");
        }
        return new TrainingCheckpoint
        {
            Weights = weights, Optimizer = new OptimizerState(optimizerSteps, moments), Epoch = epoch,
            BatchInEpoch = batchInEpoch,
            Step = step, EpochLossSum = lossSum, EpochCorrect = correct, EpochCount = count, TrainSeconds = seconds,
            History = history, RunKey = key, FirstLoss = firstLoss,
        };
    }

    [GeneratedRegex(@"^m[0-9]_[wb][0-9]{1,6}$")]
    private static partial Regex MomentName();
}

using MnistNative.Formats;
using MnistNative.Core;

namespace MnistNative.Data;

/// <summary>
/// A model as .npz with the seed's names and orientation: w1 (H,784), b1 (H,1), ..., wL (10,H), bL (10,1).
/// Biases are written as columns, as the seed keeps them, so numpy's `np.dot(w1, X) + b1` broadcasts.
/// </summary>
public static class ModelFile
{
    public static MlpParameters Load(string path)
    {
        var others = new List<string>();
        Dictionary<string, NpyArray> arrays = Npz.Read(path, ModelArrays.LayerArraysOnly(others));
        int layers = ModelArrays.LayerCount(path, arrays, others);
        var sizes = new List<int> { MlpParameters.InputSize };
        for (int l = 1; l <= layers; l++)
        {
            NpyArray w = arrays[$"w{l}"];
            if (!w.IsFloat)
                throw new DataFormatException(path, $"w{l} has dtype {w.Descr}; float64 or float32 expected");
            if (w.Shape.Length != 2)
                throw new DataFormatException(path,
                    $"w{l} has shape ({string.Join(", ", w.Shape)}); a 2-D array expected");
            if (w.Shape[1] != sizes[^1])
                throw new DataFormatException(path,
                    $"w{l} has shape ({w.Shape[0]}, {w.Shape[1]}); its second dimension must be {sizes[^1]}");
            if (w.Shape[0] < 1) throw new DataFormatException(path, $"w{l} has no rows");
            sizes.Add(w.Shape[0]);
        }
        if (sizes[^1] != MlpParameters.Classes)
            throw new DataFormatException(path,
                $"w{layers} has {sizes[^1]} rows; the output layer must have {MlpParameters.Classes}");
        var p = new MlpParameters(sizes);
        for (int l = 1; l <= layers; l++)
        {
            NpyArray w = arrays[$"w{l}"], b = arrays[$"b{l}"];
            int rows = sizes[l];
            bool biasShapeOk = b.IsFloat && ((b.Shape.Length == 1 && b.Shape[0] == rows) ||
                (b.Shape.Length == 2 && b.Shape[0] == rows && b.Shape[1] == 1));
            if (!biasShapeOk)
                throw new DataFormatException(path, $"b{l} has shape ({string.Join(", ", b.Shape)}) and dtype " +
                    $"{b.Descr}; float ({rows},) or ({rows}, 1) expected");
            w.ToDoubles().CopyTo(p.W[l - 1], 0);
            b.ToDoubles().CopyTo(p.B[l - 1], 0);
            if (!p.W[l - 1].All(double.IsFinite))
                throw new DataFormatException(path, $"w{l} holds NaN or infinite values");
            if (!p.B[l - 1].All(double.IsFinite))
                throw new DataFormatException(path, $"b{l} holds NaN or infinite values");
        }
        return p;
    }

    public static void Save(string path, MlpParameters p)
    {
        var entries = new List<Npz.Entry>();
        for (int l = 0; l < p.LayerCount; l++)
        {
            entries.Add(new Npz.Entry($"w{l + 1}", [p.Sizes[l + 1], p.Sizes[l]], p.W[l]));
            entries.Add(new Npz.Entry($"b{l + 1}", [p.Sizes[l + 1], 1], p.B[l]));
        }
        Npz.Write(path, entries);
    }
}

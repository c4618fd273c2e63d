using MnistNative.Formats;
using MnistNative.Core;

namespace MnistNative.Data;

/// <summary>
/// Keras's mnist.npz (the file the seed downloads): x_train (60000,28,28), y_train, x_test, y_test, all uint8.
/// </summary>
public static class KerasMnist
{
    public static (LabeledImages Train, LabeledImages Test) Read(string path)
    {
        Dictionary<string, NpyArray> a = Npz.Read(path);
        return (Pair(path, a, "x_train", "y_train"), Pair(path, a, "x_test", "y_test"));
    }

    private static LabeledImages Pair(string path, Dictionary<string, NpyArray> a, string xName, string yName)
    {
        if (!a.TryGetValue(xName, out NpyArray? x)) throw new DataFormatException(path, $"has no array '{xName}'");
        if (!a.TryGetValue(yName, out NpyArray? y)) throw new DataFormatException(path, $"has no array '{yName}'");
        if (x.Descr != "|u1" || y.Descr != "|u1")
            throw new DataFormatException(path, $"{xName} and {yName} must be uint8, got {x.Descr} and {y.Descr}");
        if (x.Shape.Length != 3 || x.Shape[1] != 28 || x.Shape[2] != 28)
            throw new DataFormatException(path,
                $"{xName} has shape ({string.Join(", ", x.Shape)}); (n, 28, 28) expected");
        if (y.Shape.Length != 1 || y.Shape[0] != x.Shape[0])
            throw new DataFormatException(path,
                $"{yName} has shape ({string.Join(", ", y.Shape)}) but {xName} holds {x.Shape[0]} images");
        for (int i = 0; i < y.Data.Length; i++)
            if (y.Data[i] > 9) throw new DataFormatException(path, $"{yName}[{i}] = {y.Data[i]} is above 9");
        return new LabeledImages(x.Data, y.Data);
    }
}

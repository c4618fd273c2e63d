using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Formats;
using MnistNative.Inference.Onnx;

namespace MnistNative.Cli.Onnx;

/// <summary>
/// Reads the weights of a model file for the commands that need them as parameters (export, train
/// --init-weights): a .npz (zip) through <see cref="ModelFile"/>, anything else as ONNX through the inference
/// core's importer, so every --model accepts what <c>MnistClassifier.Load</c> accepts.
/// </summary>
public static class ModelInput
{
    public static MlpParameters Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) return ModelFile.Load(path); // words the missing file as every loader does
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DataFormatException(path, $"cannot be read ({e.Message})");
        }
        if (OnnxImporter.IsZip(bytes)) return ModelFile.Load(path);
        string problem = path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)
            ? "is not a valid ONNX model" : "is not a valid .npz (zip) file or ONNX model";
        MlpWeights weights = OnnxImporter.Import(bytes, path, problem);
        var p = new MlpParameters(weights.Sizes);
        for (int l = 0; l < p.LayerCount; l++)
        {
            weights.W[l].CopyTo(p.W[l], 0);
            weights.B[l].CopyTo(p.B[l], 0);
        }
        return p;
    }
}

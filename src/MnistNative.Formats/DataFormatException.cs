namespace MnistNative.Formats;

/// <summary>A data or model file that cannot be used; the message names the file and the problem in one line.</summary>
public sealed class DataFormatException(string path, string problem) : Exception($"{path}: {problem}")
{
    public string Path { get; } = path;
    public string Problem { get; } = problem;
}

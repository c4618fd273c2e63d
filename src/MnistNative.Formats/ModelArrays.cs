using System.Text.RegularExpressions;

namespace MnistNative.Formats;

/// <summary>The arrays of a model .npz: w1..wL and b1..bL (the seed's names), shared by every model reader.</summary>
public static partial class ModelArrays
{
    /// <summary>True for w&lt;digits&gt; and b&lt;digits&gt;: the names a model reader inflates.</summary>
    public static bool IsLayerArray(string name) => LayerArrayName().IsMatch(name);

    /// <summary>
    /// A filter for <see cref="Npz.Read(string, Func{string, bool}?)"/>: layer arrays only, the other names noted.
    /// </summary>
    public static Func<string, bool> LayerArraysOnly(List<string> otherNames) => name =>
    {
        if (IsLayerArray(name)) return true;
        otherNames.Add(name);
        return false;
    };

    /// <summary>
    /// L such that w1..wL and b1..bL are all present and no other w/b index is, or a message naming the first
    /// array that is missing or out of place.
    /// </summary>
    public static int LayerCount(string source, IReadOnlyDictionary<string, NpyArray> arrays,
        IReadOnlyCollection<string>? otherNames = null)
    {
        int layers = 0;
        foreach (string name in arrays.Keys)
        {
            Match m = LayerArrayName().Match(name);
            if (!m.Success) continue;
            int index = int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (index < 1) throw new DataFormatException(source, $"has an array '{name}'; layers are numbered from 1");
            layers = Math.Max(layers, index);
        }
        if (layers == 0)
        {
            string[] names = [.. arrays.Keys, .. otherNames ?? []];
            string found = names.Length == 0 ? "nothing" : string.Join(", ",
                names.Order(StringComparer.Ordinal).Select(Npz.Printable));
            throw new DataFormatException(source, $"has no array 'w1' (found: {found})");
        }
        for (int l = 1; l <= layers; l++)
        {
            bool hasW = arrays.ContainsKey($"w{l}"), hasB = arrays.ContainsKey($"b{l}");
            if (hasW && !hasB) throw new DataFormatException(source, $"has w{l} but no b{l}");
            if (!hasW)
                throw new DataFormatException(source, $"has no array 'w{l}'{(hasB ? $" (it has b{l})" : "")}; a " +
                    $"model of {layers} layers needs w1..w{layers} and b1..b{layers}");
        }
        return layers;
    }

    [GeneratedRegex(@"^([wb])([0-9]{1,6})$")]
    private static partial Regex LayerArrayName();
}

using System.Buffers;
using System.Text.Json;
using MnistNative.Inference;

namespace MnistNative.Serving;

/// <summary>
/// Reads the JSON bodies of POST /v1/predict: {"pixels": [784 numbers]} or {"images": [[784 numbers], ...]}.
/// An image's numbers are 0..255, or 0..1 when none of them exceeds 1; 0..1 values are scaled to 0..255 and
/// rounded, the resolution of MNIST itself, so both spellings of a test image classify alike. Written on
/// Utf8JsonReader rather than a deserializer so that each problem names the number at fault and a request
/// allocates no per-number objects.
/// </summary>
internal static class PredictJson
{
    private const int Pixels = MnistClassifier.PixelCount;

    /// <summary>The parsed images: <see cref="Count"/> x 784 bytes at the start of a pooled buffer.</summary>
    internal sealed class Images : IDisposable
    {
        public byte[] Buffer = ArrayPool<byte>.Shared.Rent(Pixels);
        public int Count;
        public bool IsBatch;

        public Span<byte> Next()
        {
            int need = (Count + 1) * Pixels;
            if (Buffer.Length < need)
            {
                byte[] larger = ArrayPool<byte>.Shared.Rent(Math.Max(need, 2 * Buffer.Length));
                Buffer.AsSpan(0, Count * Pixels).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(Buffer);
                Buffer = larger;
            }
            return Buffer.AsSpan(Count++ * Pixels, Pixels);
        }

        public ReadOnlySpan<byte> Image(int i) => Buffer.AsSpan(i * Pixels, Pixels);

        public void Dispose() => ArrayPool<byte>.Shared.Return(Buffer);
    }

    /// <summary>
    /// Parses <paramref name="json"/> into <paramref name="images"/>; the problem in one sentence, or null.
    /// </summary>
    public static string? Parse(ReadOnlySpan<byte> json, int maxBatch, Images images, out bool tooMany)
    {
        tooMany = false;
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 4 });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                return "the body must be a JSON object: {\"pixels\": [784 numbers]} "
                    + "or {\"images\": [[784 numbers], ...]}";
            bool seen = false;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                bool pixels = reader.ValueTextEquals("pixels"u8);
                if (!pixels && !reader.ValueTextEquals("images"u8))
                    return $"unknown property '{reader.GetString()}'; "
                        + "the body holds \"pixels\" (one image) or \"images\" (a batch)";
                if (seen)
                    return "give either \"pixels\" (one image) or \"images\" (a batch), once";
                seen = true;
                reader.Read();
                string? problem;
                if (pixels)
                {
                    problem = ReadImage(ref reader, "pixels", images.Next());
                }
                else
                {
                    images.IsBatch = true;
                    problem = ReadBatch(ref reader, maxBatch, images, out tooMany);
                }
                if (problem != null)
                    return problem;
            }
            if (!seen)
                return "the body holds neither \"pixels\" (one image) nor \"images\" (a batch)";
            if (reader.Read())
                return "the body holds more than one JSON value";
            return null;
        }
        catch (JsonException e)
        {
            return $"the body is not valid JSON ({e.Message.ReplaceLineEndings(" ")})";
        }
    }

    private static string? ReadBatch(ref Utf8JsonReader reader, int maxBatch, Images images, out bool tooMany)
    {
        tooMany = false;
        if (reader.TokenType != JsonTokenType.StartArray)
            return "\"images\" must be an array of images (arrays of 784 numbers)";
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (images.Count == maxBatch)
            {
                tooMany = true;
                return $"\"images\" holds more than {maxBatch} images, the most one request may hold (--max-batch)";
            }
            string? problem = ReadImage(ref reader, $"images[{images.Count}]", images.Next());
            if (problem != null)
                return problem;
        }
        return images.Count == 0 ? "\"images\" is empty" : null;
    }

    private static string? ReadImage(ref Utf8JsonReader reader, string name, Span<byte> image)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
            return $"{name} must be an array of {Pixels} numbers";
        Span<float> values = stackalloc float[Pixels];
        int count = 0;
        float max = 0;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number)
                return $"{name}[{count}] is {Describe(reader.TokenType)}, not a number";
            if (count == Pixels)
                return $"{name} holds more than {Pixels} numbers; an image is {Pixels} (28x28)";
            float v;
            if (SmallInteger(reader.ValueSpan) is int b and <= 255)
                v = b;
            else if (reader.TryGetDouble(out double d) && d >= 0 && d <= 255)
                v = (float)d;
            else
                return $"{name}[{count}] is {Text(ref reader)}; pixels are 0..255 (or 0..1)";
            values[count++] = v;
            max = Math.Max(max, v);
        }
        if (count != Pixels)
            return $"{name} holds {count} numbers; an image is {Pixels} (28x28)";
        float scale = max <= 1 ? 255f : 1f;
        for (int i = 0; i < Pixels; i++)
            image[i] = (byte)MathF.Round(values[i] * scale, MidpointRounding.AwayFromZero);
        return null;
    }

    // Most bodies spell bytes as "0".."255"; reading those digits directly skips the general number parser,
    // which is most of the cost of a request's 784 numbers.
    private static int? SmallInteger(ReadOnlySpan<byte> raw)
    {
        if (raw.Length is 0 or > 3)
            return null;
        int value = 0;
        foreach (byte c in raw)
        {
            if ((uint)(c - '0') > 9)
                return null;
            value = value * 10 + (c - '0');
        }
        return value;
    }

    private static string Describe(JsonTokenType token) =>
        token switch
        {
            JsonTokenType.String => "a string",
            JsonTokenType.True or JsonTokenType.False => "a boolean",
            JsonTokenType.Null => "null",
            JsonTokenType.StartArray => "an array",
            JsonTokenType.StartObject => "an object",
            _ => token.ToString(),
        };

    private static string Text(ref Utf8JsonReader reader)
    {
        ReadOnlySpan<byte> raw = reader.ValueSpan;
        return System.Text.Encoding.UTF8.GetString(raw.Length > 32 ? raw[..32] : raw);
    }
}

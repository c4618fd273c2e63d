using System.Buffers;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Net.Http.Headers;
using MnistNative.Core;
using MnistNative.Formats;
using MnistNative.Inference;

namespace MnistNative.Serving;

/// <summary>
/// POST /v1/predict. JSON (one image or a batch) or a PNG body; answers
/// {"digit": d, "probabilities": [10]} or {"predictions": [{...}, ...]}. Every refusal is problem details (RFC 9457):
/// 400 for a body that cannot be read as images, 413 for a body or batch over the limits, 415 for another type.
/// </summary>
internal sealed class PredictEndpoint(LiveModel model, ServeOptions options)
{
    public async Task<IResult> HandleAsync(HttpContext context)
    {
        HttpRequest request = context.Request;
        bool json;
        if (
            MediaTypeHeaderValue.TryParse(request.ContentType, out MediaTypeHeaderValue? type)
            && type.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)
        )
            json = true;
        else if (type != null && type.MediaType.Equals("image/png", StringComparison.OrdinalIgnoreCase))
            json = false;
        else
            return Problem(
                StatusCodes.Status415UnsupportedMediaType,
                "Unsupported content type",
                $"Content-Type '{request.ContentType ?? "(none)"}' is not accepted; send application/json or image/png"
            );

        long limit = json ? options.MaxJsonBytes : DigitPng.MaxBytes;
        if (request.ContentLength > limit)
            return TooLarge(request.ContentLength.Value, limit, announced: true);
        (byte[]? body, int length) = await ReadBodyAsync(request, limit, context.RequestAborted);
        if (body == null)
            return TooLarge(length, limit, announced: false);
        try
        {
            using var images = new PredictJson.Images();
            if (json)
            {
                string? problem = PredictJson.Parse(body.AsSpan(0, length), options.MaxBatch, images, out bool tooMany);
                if (problem != null)
                    return tooMany
                        ? Problem(StatusCodes.Status413PayloadTooLarge, "Batch too large", problem)
                        : Problem(StatusCodes.Status400BadRequest, "Bad images", problem);
            }
            else
            {
                try
                {
                    DigitPng.Decode(body.AsSpan(0, length), "the PNG body").CopyTo(images.Next());
                }
                catch (DataFormatException e)
                {
                    return Problem(StatusCodes.Status400BadRequest, "Bad PNG", e.Message);
                }
            }
            context.Response.ContentType = "application/json";
            WriteAnswer(context.Response.BodyWriter, images);
            await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
            return Results.Empty;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(body);
        }
    }

    private void WriteAnswer(IBufferWriter<byte> output, PredictJson.Images images)
    {
        Span<float> probabilities = stackalloc float[MnistClassifier.ClassCount];
        using var writer = new Utf8JsonWriter(output);
        using (ModelLease lease = model.Acquire())
        {
            if (images.IsBatch)
            {
                writer.WriteStartObject();
                writer.WriteStartArray("predictions"u8);
            }
            for (int i = 0; i < images.Count; i++)
            {
                lease.Classifier.Probabilities(images.Image(i), probabilities);
                writer.WriteStartObject();
                writer.WriteNumber("digit"u8, ArgMax(probabilities));
                writer.WriteStartArray("probabilities"u8);
                foreach (float p in probabilities)
                    writer.WriteNumberValue(p);
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
            if (images.IsBatch)
            {
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
        }
        EngineMetrics.SamplesInferred.Add(images.Count);
    }

    /// <summary>The class with the highest probability (the first on a tie), as `predict` reports it.</summary>
    internal static int ArgMax(ReadOnlySpan<float> probabilities)
    {
        int best = 0;
        for (int c = 1; c < probabilities.Length; c++)
            if (probabilities[c] > probabilities[best])
                best = c;
        return best;
    }

    /// <summary>
    /// The body in a pooled buffer, or null (and the bytes seen) once it passes <paramref name="limit"/>.
    /// </summary>
    private static async Task<(byte[]? Body, int Length)> ReadBodyAsync(
        HttpRequest request,
        long limit,
        CancellationToken cancel
    )
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(request.ContentLength ?? 16 * 1024, limit) + 1);
        int length = 0;
        while (true)
        {
            if (length == buffer.Length)
            {
                byte[] larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(2L * buffer.Length, limit + 1));
                buffer.AsSpan(0, length).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(buffer);
                buffer = larger;
            }
            int read = await request.Body.ReadAsync(buffer.AsMemory(length), cancel);
            if (read == 0)
                return (buffer, length);
            length += read;
            if (length > limit)
            {
                ArrayPool<byte>.Shared.Return(buffer);
                return (null, length);
            }
        }
    }

    // announced: the Content-Length said so; else reading stopped after `length` bytes, with more to come
    private static IResult TooLarge(long length, long limit, bool announced) =>
        Problem(
            StatusCodes.Status413PayloadTooLarge,
            "Body too large",
            $"the body is {(announced ? "" : "over ")}{length} bytes; "
                + $"at most {limit} are accepted for this content type"
        );

    internal static IResult Problem(int status, string title, string detail) =>
        Results.Problem(detail: detail, statusCode: status, title: title);
}

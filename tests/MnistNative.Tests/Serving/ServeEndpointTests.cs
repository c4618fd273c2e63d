using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using MnistNative.Inference;
using MnistNative.Serving;
using Xunit;

namespace MnistNative.Tests.Serving;

/// <summary>
/// Every endpoint of `mnistnative serve` on a test server: answers equal <see cref="MnistClassifier"/>'s on real
/// test images, and every bad request gets its 4xx problem details (RFC 9457) without a stack trace.
/// </summary>
public sealed class ServeEndpointTests : IAsyncLifetime
{
    private ServeHost _host = null!;
    private MnistClassifier _classifier = null!;

    public Task InitializeAsync()
    {
        _host = ServeHost.Start(maxBatch: 150);
        _classifier = MnistClassifier.Load(ServeHost.SeedModel);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        _classifier.Dispose();
        await _host.DisposeAsync();
    }

    private static byte[] Image(int i) => TestPaths.Test.Image(i).ToArray();

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static string PixelsJson(IEnumerable<double> pixels) =>
        "["
        + string.Join(",", pixels.Select(p => p.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))
        + "]";

    private (int Digit, float[] Probabilities) Expected(byte[] pixels)
    {
        var probabilities = new float[10];
        _classifier.Probabilities(pixels, probabilities);
        return (Array.IndexOf(probabilities, probabilities.Max()), probabilities);
    }

    private static (int Digit, float[] Probabilities) Answer(JsonElement e) =>
        (
            e.GetProperty("digit").GetInt32(),
            e.GetProperty("probabilities").EnumerateArray().Select(p => p.GetSingle()).ToArray()
        );

    private async Task<JsonElement> PostOk(HttpContent content)
    {
        HttpResponseMessage response = await _host.Client.PostAsync("/v1/predict", content);
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        return JsonDocument.Parse(body).RootElement;
    }

    [Fact]
    public async Task SingleImagesAnswerAsTheClassifierDoes_InBytesAndInZeroToOne()
    {
        for (int i = 0; i < 60; i++)
        {
            byte[] pixels = Image(i);
            var expected = Expected(pixels);
            var asBytes = Answer(await PostOk(Json($"{{\"pixels\":{PixelsJson(pixels.Select(p => (double)p))}}}")));
            var asUnit = Answer(await PostOk(Json($"{{\"pixels\":{PixelsJson(pixels.Select(p => p / 255.0))}}}")));
            Assert.Equal(expected.Digit, asBytes.Digit);
            Assert.Equal(expected.Probabilities, asBytes.Probabilities);
            Assert.Equal(expected.Probabilities, asUnit.Probabilities);
            Assert.Equal(_classifier.Predict(pixels), asBytes.Digit);
        }
    }

    [Fact]
    public async Task ABatchOf100AnswersAsTheClassifierDoes()
    {
        var images = Enumerable.Range(100, 100).Select(Image).ToArray();
        string json =
            "{\"images\":[" + string.Join(",", images.Select(p => PixelsJson(p.Select(b => (double)b)))) + "]}";
        JsonElement[] predictions = (await PostOk(Json(json))).GetProperty("predictions").EnumerateArray().ToArray();
        Assert.Equal(100, predictions.Length);
        for (int i = 0; i < images.Length; i++)
        {
            var expected = Expected(images[i]);
            var answer = Answer(predictions[i]);
            Assert.Equal(expected.Digit, answer.Digit);
            Assert.Equal(expected.Probabilities, answer.Probabilities);
        }
        // and the model is right about most of them, as on the whole test set (0.9139)
        int right = predictions
            .Select((p, i) => p.GetProperty("digit").GetInt32() == TestPaths.Test.Labels[100 + i] ? 1 : 0)
            .Sum();
        Assert.InRange(right, 85, 100);
    }

    [Fact]
    public async Task APngBodyAnswersAsTheClassifierDoes()
    {
        byte[] pixels = Image(3);
        var content = new ByteArrayContent(PngFiles.Grey(pixels));
        content.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        var answer = Answer(await PostOk(content));
        Assert.Equal(Expected(pixels).Probabilities, answer.Probabilities);
        Assert.Equal(0, answer.Digit); // test image 3 is a 0
    }

    [Fact]
    public async Task HealthzSaysReady()
    {
        HttpResponseMessage response = await _host.Client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        JsonElement health = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("ready", health.GetProperty("status").GetString());
        Assert.Equal(_host.ModelPath, health.GetProperty("model").GetString());
    }

    [Fact]
    public async Task ModelDescribesShapeSourceAndKernel()
    {
        JsonElement model = JsonDocument.Parse(await _host.Client.GetStringAsync("/v1/model")).RootElement;
        Assert.Equal([784, 10, 10], model.GetProperty("sizes").EnumerateArray().Select(s => s.GetInt32()));
        Assert.Equal(_host.ModelPath, model.GetProperty("source").GetString());
        Assert.Equal(_classifier.Kernel.ToString().ToLowerInvariant(), model.GetProperty("kernel").GetString());
        Assert.Equal(0, model.GetProperty("reloads").GetInt32());
        Assert.Equal(150, model.GetProperty("maxBatch").GetInt32());
    }

    [Fact]
    public async Task MetricsArePrometheusTextWithTheEngineAndAspNetCoreInstruments()
    {
        await PostOk(Json($"{{\"pixels\":{PixelsJson(Image(0).Select(p => (double)p))}}}"));
        HttpResponseMessage response = await _host.Client.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        string text = await response.Content.ReadAsStringAsync();
        Assert.Matches(@"(?m)^mnistnative_inference_samples_total\{[^}]*\} [1-9]", text);
        Assert.Matches(
            @"(?m)^http_server_request_duration_seconds_count\{[^}]*http_route=""/v1/predict""[^}]*\} [1-9]",
            text
        );
    }

    [Fact]
    public async Task ThePageAndItsFilesAreServedFromTheAssemblyWithNothingFromTheInternet()
    {
        foreach (
            var (path, type, marker) in new[]
            {
                ("/", "text/html", "<canvas id=\"pad\""),
                ("/app.js", "text/javascript", "function toMnist"),
                ("/style.css", "text/css", "#bars"),
            }
        )
        {
            HttpResponseMessage response = await _host.Client.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(type, response.Content.Headers.ContentType?.MediaType);
            string text = await response.Content.ReadAsStringAsync();
            Assert.Contains(marker, text);
            Assert.DoesNotContain("http://", text);
            Assert.DoesNotContain("https://", text);
        }
    }

    public static TheoryData<string, string?, string, int, string> BadRequests()
    {
        string image = PixelsJson(Enumerable.Repeat(0.0, 784));
        string nan = "[NaN" + string.Concat(Enumerable.Repeat(",0", 783)) + "]";
        string stringNan = "[\"NaN\"" + string.Concat(Enumerable.Repeat(",0", 783)) + "]";
        return new()
        {
            {
                "wrong length",
                "application/json",
                $"{{\"pixels\":{PixelsJson(Enumerable.Repeat(0.0, 783))}}}",
                400,
                "pixels holds 783 numbers; an image is 784 (28x28)"
            },
            {
                "too long",
                "application/json",
                $"{{\"pixels\":{PixelsJson(Enumerable.Repeat(0.0, 785))}}}",
                400,
                "pixels holds more than 784 numbers"
            },
            { "NaN literal", "application/json", $"{{\"pixels\":{nan}}}", 400, "the body is not valid JSON" },
            {
                "NaN string",
                "application/json",
                $"{{\"pixels\":{stringNan}}}",
                400,
                "pixels[0] is a string, not a number"
            },
            { "boolean", "application/json", "{\"pixels\":[true]}", 400, "pixels[0] is a boolean, not a number" },
            {
                "negative",
                "application/json",
                "{\"pixels\":[0,-1]}",
                400,
                "pixels[1] is -1; pixels are 0..255 (or 0..1)"
            },
            { "over 255", "application/json", "{\"pixels\":[256]}", 400, "pixels[0] is 256; pixels are 0..255" },
            { "huge exponent", "application/json", "{\"pixels\":[1e999]}", 400, "pixels[0] is 1e999" },
            { "not an object", "application/json", image, 400, "the body must be a JSON object" },
            { "unknown property", "application/json", "{\"pixel\":[]}", 400, "unknown property 'pixel'" },
            {
                "both",
                "application/json",
                $"{{\"pixels\":{image},\"images\":[{image}]}}",
                400,
                "give either \"pixels\""
            },
            { "empty batch", "application/json", "{\"images\":[]}", 400, "\"images\" is empty" },
            {
                "bad batch image",
                "application/json",
                $"{{\"images\":[{image},[1,2]]}}",
                400,
                "images[1] holds 2 numbers"
            },
            { "trailing value", "application/json", $"{{\"pixels\":{image}}} {{}}", 400, "not valid JSON" },
            { "truncated JSON", "application/json", "{\"pixels\":[0,0", 400, "not valid JSON" },
            { "text", "text/plain", "7", 415, "Content-Type 'text/plain; charset=utf-8' is not accepted" },
            { "no type", null, "7", 415, "Content-Type '(none)' is not accepted" },
        };
    }

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task BadJsonRequestsGetProblemDetails(
        string name,
        string? contentType,
        string body,
        int status,
        string detail
    )
    {
        var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType =
            contentType == null
                ? null
                : MediaTypeHeaderValue.Parse(contentType == "text/plain" ? "text/plain; charset=utf-8" : contentType);
        await AssertProblem(await _host.Client.PostAsync("/v1/predict", content), status, detail, name);
    }

    public static TheoryData<string, byte[], int, string> BadPngs() =>
        new()
        {
            { "10000x10000", PngFiles.Huge(), 400, "the PNG body: is 10000x10000; MNIST digits are 28x28" },
            { "truncated", PngFiles.Grey(new byte[784])[..50], 400, "truncated" },
            { "jpeg", PngFiles.TruncatedJpeg(), 400, "no PNG signature; it looks like a JPEG" },
            { "gif 23170x23170", PngFiles.GifHeader(), 400, "it looks like a GIF" },
            { "over 1 MiB", new byte[(1 << 20) + 1], 413, "at most 1048576 are accepted" },
        };

    [Theory]
    [MemberData(nameof(BadPngs))]
    public async Task BadPngBodiesGetProblemDetails(string name, byte[] body, int status, string detail)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("image/png");
        await AssertProblem(await _host.Client.PostAsync("/v1/predict", content), status, detail, name);
    }

    [Fact]
    public async Task ABatchOverMaxBatchIs413()
    {
        string image = PixelsJson(Enumerable.Repeat(0.0, 784));
        string json = "{\"images\":[" + string.Join(",", Enumerable.Repeat(image, 151)) + "]}";
        await AssertProblem(
            await _host.Client.PostAsync("/v1/predict", Json(json)),
            413,
            "\"images\" holds more than 150 images, the most one request may hold (--max-batch)",
            "151 images"
        );
    }

    [Fact]
    public async Task AJsonBodyOverTheLimitIs413BeforeItIsParsed()
    {
        long limit = new ServeOptions { ModelPath = "m", MaxBatch = 150 }.MaxJsonBytes;
        var body = new string(' ', (int)limit + 1);
        await AssertProblem(
            await _host.Client.PostAsync("/v1/predict", Json(body)),
            413,
            $"bytes; at most {limit} are accepted",
            "oversize"
        );
    }

    [Fact]
    public async Task AnOversizeBodyWithoutContentLengthIs413()
    {
        long limit = new ServeOptions { ModelPath = "m", MaxBatch = 150 }.MaxJsonBytes;
        var content = new StreamContent(new MemoryStream(new byte[limit + 4096]));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        content.Headers.ContentLength = null;
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/predict") { Content = content };
        request.Headers.TransferEncodingChunked = true;
        await AssertProblem(await _host.Client.SendAsync(request), 413, $"at most {limit} are accepted", "chunked");
    }

    [Fact]
    public async Task WrongMethodAndUnknownPathAreProblemsToo()
    {
        await AssertProblem(await _host.Client.GetAsync("/v1/predict"), 405, null, "GET predict");
        await AssertProblem(await _host.Client.GetAsync("/v2/nothing"), 404, null, "unknown path");
    }

    private static async Task AssertProblem(HttpResponseMessage response, int status, string? detail, string name)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"{name}: {(int)response.StatusCode} {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        JsonElement problem = JsonDocument.Parse(body).RootElement;
        Assert.Equal(status, problem.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("title").GetString()));
        if (detail != null)
            Assert.Contains(detail, problem.GetProperty("detail").GetString());
        Assert.DoesNotContain("   at ", body);
        Assert.DoesNotContain("Exception", body);
    }
}

using System.Net;
using System.Text;
using System.Text.Json;
using MnistNative.Inference;
using MnistNative.Serving;
using Xunit;

namespace MnistNative.Tests.Serving;

/// <summary>
/// Model reload: the swap is atomic, requests in flight finish on the old model, the old classifier is disposed
/// only when no request holds it, and a file that fails to load is logged while the old model keeps serving.
/// </summary>
public sealed class ModelReloadTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    [Fact]
    public void ALeaseKeepsTheOldModelAliveUntilItIsReleased()
    {
        byte[] pixels = TestPaths.Test.Image(0).ToArray();
        var first = MnistClassifier.Load(ServeHost.SeedModel);
        var live = new LiveModel(first, "first");
        ModelLease lease = live.Acquire();
        LoadedModel old = live.Current;

        live.Swap(MnistClassifier.Load(ServeHost.InitialModel), "second");
        Assert.Equal("second", live.Current.Source);
        Assert.False(old.Retired);
        Assert.Equal(7, lease.Classifier.Predict(pixels)); // the request still holding the old model finishes on it

        lease.Dispose();
        Assert.True(old.Retired);
        Assert.Throws<ObjectDisposedException>(() => first.Predict(pixels));
        using (ModelLease next = live.Acquire())
            Assert.Equal("second", next.Model.Source);
        live.Dispose();
        Assert.True(live.Current.Retired);
        Assert.Throws<ObjectDisposedException>(() => live.Acquire());
    }

    [Fact]
    public async Task ReplacingTheModelFileSwapsItInWhileRequestsKeepSucceeding()
    {
        await using ServeHost host = ServeHost.Start();
        byte[] pixels = TestPaths.Test.Image(0).ToArray();
        float[] seedAnswer = Probabilities(ServeHost.SeedModel, pixels),
            initAnswer = Probabilities(ServeHost.InitialModel, pixels);
        Assert.NotEqual(seedAnswer, initAnswer);
        string body = "{\"pixels\":[" + string.Join(",", pixels) + "]}";

        using var stop = new CancellationTokenSource();
        int answered = 0;
        var failures = new List<string>();
        async Task Load()
        {
            while (!stop.IsCancellationRequested)
            {
                HttpResponseMessage response = await host.Client.PostAsync(
                    "/v1/predict",
                    new StringContent(body, Encoding.UTF8, "application/json")
                );
                string text = await response.Content.ReadAsStringAsync();
                float[] answer = response.StatusCode == HttpStatusCode.OK ? Parse(text) : [];
                // each answer comes whole from one model or the other, never a mix or an error
                if (!answer.SequenceEqual(seedAnswer) && !answer.SequenceEqual(initAnswer))
                    lock (failures)
                        failures.Add($"{(int)response.StatusCode} {text}");
                Interlocked.Increment(ref answered);
            }
        }
        Task[] clients = Enumerable.Range(0, 4).Select(_ => Task.Run(Load)).ToArray();

        byte[] seedBytes = File.ReadAllBytes(ServeHost.SeedModel),
            initBytes = File.ReadAllBytes(ServeHost.InitialModel);
        for (int reload = 1; reload <= 4; reload++)
        {
            host.ReplaceModel(reload % 2 == 1 ? initBytes : seedBytes);
            await WaitFor(
                async () => (await Model(host)).GetProperty("reloads").GetInt32() == reload,
                $"reload {reload}"
            );
        }
        int before = Volatile.Read(ref answered);
        await WaitFor(
            () => Task.FromResult(Volatile.Read(ref answered) > before + 20),
            "requests after the last reload"
        );
        stop.Cancel();
        await Task.WhenAll(clients);

        Assert.Empty(failures);
        Assert.True(answered > 40, $"only {answered} requests ran");
        Assert.Equal(seedAnswer, Parse(await Post(host, body))); // the fourth reload put the seed's model back
        Assert.Contains(host.Logs, l => l.Contains("model reloaded from " + host.ModelPath) && l.Contains("reload 4"));
    }

    [Fact]
    public async Task AFileThatFailsToLoadIsLoggedInOneLineAndTheOldModelKeepsServing()
    {
        await using ServeHost host = ServeHost.Start();
        byte[] pixels = TestPaths.Test.Image(1).ToArray();
        string body = "{\"pixels\":[" + string.Join(",", pixels) + "]}";
        string before = await Post(host, body);

        host.ReplaceModel(Encoding.ASCII.GetBytes("not a model"));
        await WaitFor(
            () => Task.FromResult(host.Logs.Any(l => l.Contains("model reload failed"))),
            "the failure's log line"
        );

        string line = host.Logs.Single(l => l.Contains("model reload failed"));
        Assert.StartsWith(
            "Error MnistNative.Serving.ModelReloader: model reload failed: " + host.ModelPath + ": ",
            line
        );
        Assert.Contains("still serving the model loaded from " + host.ModelPath, line);
        Assert.DoesNotContain('\n', line);
        Assert.Equal(0, (await Model(host)).GetProperty("reloads").GetInt32());
        Assert.Equal(before, await Post(host, body));

        // a good file after the bad one is taken
        host.ReplaceModel(File.ReadAllBytes(ServeHost.InitialModel));
        await WaitFor(async () => (await Model(host)).GetProperty("reloads").GetInt32() == 1, "the good file");
        Assert.Equal(Probabilities(ServeHost.InitialModel, pixels), Parse(await Post(host, body)));
    }

    private static float[] Probabilities(string model, byte[] pixels)
    {
        using var classifier = MnistClassifier.Load(model);
        var probabilities = new float[10];
        classifier.Probabilities(pixels, probabilities);
        return probabilities;
    }

    private static float[] Parse(string json) =>
        JsonDocument
            .Parse(json)
            .RootElement.GetProperty("probabilities")
            .EnumerateArray()
            .Select(p => p.GetSingle())
            .ToArray();

    private static async Task<string> Post(ServeHost host, string body)
    {
        HttpResponseMessage response = await host.Client.PostAsync(
            "/v1/predict",
            new StringContent(body, Encoding.UTF8, "application/json")
        );
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadAsStringAsync();
    }

    private static async Task<JsonElement> Model(ServeHost host) =>
        JsonDocument.Parse(await host.Client.GetStringAsync("/v1/model")).RootElement;

    private static async Task WaitFor(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"waited {Patience.TotalSeconds} s for {what}");
            await Task.Delay(25);
        }
    }
}

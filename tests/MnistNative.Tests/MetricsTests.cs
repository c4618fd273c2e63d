using System.Diagnostics.Metrics;
using MnistNative.Backends.Cpu.Reference;
using MnistNative.Core;
using MnistNative.Tests.Conformance;
using Xunit;

namespace MnistNative.Tests;

/// <summary>The "MnistNative" meter that dotnet-counters and dotnet-trace read.</summary>
public sealed class MetricsTests
{
    [Fact]
    public void TrainingPublishesIterationsSamplesAndRates()
    {
        long iterations = 0, samples = 0;
        var gauges = new Dictionary<string, double>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == EngineMetrics.MeterName) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            if (instrument.Name == "mnistnative.training.iterations") Interlocked.Add(ref iterations, value);
            if (instrument.Name == "mnistnative.training.samples") Interlocked.Add(ref samples, value);
        });
        listener.SetMeasurementEventCallback<double>((instrument, value, _, _) =>
        {
            lock (gauges) gauges[instrument.Name] = value;
        });
        listener.Start();

        var (data, weights) = TrainingBackendConformance.RandomProblem([784, 5, 10], 40, seed: 7);
        using var backend = new ReferenceBackend<float>([784, 5, 10], OptimizerSettings.Gd);
        backend.Upload(data);
        backend.SetWeights(weights);
        Trainer.Run(backend, 40, TrainingOptions.FullBatch(12, 0.1, 4));
        listener.RecordObservableInstruments();

        // other tests may train at the same time: at least ours were counted
        Assert.True(Interlocked.Read(ref iterations) >= 12);
        Assert.True(Interlocked.Read(ref samples) >= 12 * 40);
        Assert.True(gauges["mnistnative.training.iterations_per_second"] > 0);
        Assert.True(gauges["mnistnative.training.gflops"] > 0);
    }
}

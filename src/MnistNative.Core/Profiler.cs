using System.Diagnostics;
using System.Text.Json;

namespace MnistNative.Core;

/// <summary>Total time of one phase over a run.</summary>
public sealed record PhaseStat(string Phase, double TotalMilliseconds, long Calls);

/// <summary>
/// Timestamps of named phases (<see cref="Phases"/>), recorded only when a profiler is attached: a backend holds
/// a <c>Profiler?</c> and a null check is all it costs when profiling is off. Each phase also goes to the
/// "MnistNative" meter's phase histogram when something listens. Events can be written in the Chrome trace event
/// format, which Perfetto and chrome://tracing open.
/// </summary>
public sealed class Profiler
{
    private readonly record struct Event(string Phase, long Start, long End, int Thread);

    private readonly object _gate = new();
    private readonly List<Event> _events = [];
    private readonly long _origin = Stopwatch.GetTimestamp();

    public static long Now() => Stopwatch.GetTimestamp();

    /// <summary>
    /// Records a phase that started at <paramref name="start"/> (from <see cref="Now"/>) and ends now.
    /// </summary>
    public void Record(string phase, long start, int thread = 0) => Record(phase, start, Now(), thread);

    public void Record(string phase, long start, long end, int thread = 0)
    {
        lock (_gate) _events.Add(new Event(phase, start, end, thread));
        PublishToMeter(phase, end - start);
    }

    private static void PublishToMeter(string phase, long ticks)
    {
        if (EngineMetrics.PhaseDuration.Enabled)
            EngineMetrics.PhaseDuration.Record(ticks * 1000.0 / Stopwatch.Frequency,
                new KeyValuePair<string, object?>("phase", phase));
    }

    private long _deviceOrigin = long.MinValue, _hostOriginForDevice;

    /// <summary>
    /// Records a phase timed by a device clock in nanoseconds (e.g. OpenCL event profiling). The first device
    /// event is pinned to the host's clock at the moment it is recorded; later ones keep their device offsets.
    /// </summary>
    public void RecordDevice(string phase, long startNanoseconds, long endNanoseconds, int thread)
    {
        lock (_gate)
        {
            if (_deviceOrigin == long.MinValue)
            {
                _deviceOrigin = startNanoseconds;
                _hostOriginForDevice = Now() - NanosecondsToTicks(endNanoseconds - startNanoseconds);
            }
            long start = _hostOriginForDevice + NanosecondsToTicks(startNanoseconds - _deviceOrigin);
            _events.Add(new Event(phase, start, start + NanosecondsToTicks(endNanoseconds - startNanoseconds), thread));
        }
        PublishToMeter(phase, NanosecondsToTicks(endNanoseconds - startNanoseconds));
    }

    private static long NanosecondsToTicks(long ns) => (long)(ns * (Stopwatch.Frequency / 1e9));

    public IReadOnlyList<PhaseStat> Summary()
    {
        lock (_gate)
        {
            return _events.GroupBy(e => e.Phase)
                .Select(g => new PhaseStat(g.Key, g.Sum(e => (e.End - e.Start) * 1000.0 / Stopwatch.Frequency),
                    g.LongCount()))
                .OrderByDescending(s => s.TotalMilliseconds)
                .ToList();
        }
    }

    /// <summary>Chrome trace event format: complete events ("ph":"X") with microsecond timestamps.</summary>
    public void WriteChromeTrace(Stream stream, string processName = "mnistnative")
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = false });
        json.WriteStartObject();
        json.WriteString("displayTimeUnit", "ms");
        json.WriteStartArray("traceEvents");
        json.WriteStartObject();
        json.WriteString("name", "process_name");
        json.WriteString("ph", "M");
        json.WriteNumber("pid", 1);
        json.WriteStartObject("args");
        json.WriteString("name", processName);
        json.WriteEndObject();
        json.WriteEndObject();
        lock (_gate)
        {
            foreach (Event e in _events)
            {
                json.WriteStartObject();
                json.WriteString("name", e.Phase);
                json.WriteString("cat", "mnistnative");
                json.WriteString("ph", "X");
                json.WriteNumber("ts", Math.Round((e.Start - _origin) * 1e6 / Stopwatch.Frequency, 3));
                json.WriteNumber("dur", Math.Round((e.End - e.Start) * 1e6 / Stopwatch.Frequency, 3));
                json.WriteNumber("pid", 1);
                json.WriteNumber("tid", e.Thread);
                json.WriteEndObject();
            }
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }
}

using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MoECluster.Cli.Load;

/// <summary>One request as <c>--records</c> writes it.</summary>
/// <param name="IntendedTicks">Stopwatch ticks from the run's zero: when it was meant to start.</param>
/// <param name="StartTicks">When it was sent (after any wait for the <c>--max-concurrency</c> cap).</param>
/// <param name="EndTicks">When its answer (or error) came.</param>
/// <param name="Status">The HTTP status (0 when there was no HTTP answer).</param>
/// <param name="Outcome">ok, or the error's kind (<see cref="RequestError.Name"/>).</param>
internal sealed record RequestRecord(
    long Sequence, LoadPhase Phase, string Model, int Tokens, long IntendedTicks, long StartTicks, long EndTicks, bool WaitedForCap, int Status, string Outcome, string? Error);

/// <summary>
/// <c>--records FILE</c>: one JSON object per line per request, written as requests end (so in order of their end).
/// Times are milliseconds from the run's zero on the monotonic clock (<c>intended_ms</c>, <c>start_ms</c>,
/// <c>end_ms</c>: differences are exact whatever the wall clock does), plus <c>start_utc</c>, the ISO-8601 UTC time of the
/// start, the wall clock read once at the run's zero plus <c>start_ms</c>. Thread-safe.
/// </summary>
internal sealed class RecordsWriter : IDisposable
{
    private readonly object _gate = new();
    private readonly StreamWriter _writer;
    private readonly DateTimeOffset _zeroUtc;
    private readonly long _frequency;

    public RecordsWriter(string path, DateTimeOffset zeroUtc, long frequency)
    {
        string full = Path.GetFullPath(path);
        if (Path.GetDirectoryName(full) is { } dir)
        {
            Directory.CreateDirectory(dir);
        }

        _writer = new StreamWriter(full, append: false, new UTF8Encoding(false)) { NewLine = "\n" };
        _zeroUtc = zeroUtc;
        _frequency = frequency;
    }

    public long Written { get; private set; }

    public void Write(RequestRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        string line = Line(record);
        lock (_gate)
        {
            _writer.WriteLine(line);
            Written++;
        }
    }

    /// <summary>The JSON line of <paramref name="r"/>.</summary>
    public string Line(RequestRecord r)
    {
        double Ms(long ticks) => Math.Round(ticks * 1000.0 / _frequency, 3);
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteNumber("seq", r.Sequence);
            json.WriteString("phase", r.Phase == LoadPhase.Measured ? "measured" : "warmup");
            json.WriteString("model", r.Model);
            json.WriteNumber("tokens", r.Tokens);
            json.WriteNumber("intended_ms", Ms(r.IntendedTicks));
            json.WriteNumber("start_ms", Ms(r.StartTicks));
            json.WriteNumber("end_ms", Ms(r.EndTicks));
            json.WriteString("start_utc", (_zeroUtc + TimeSpan.FromSeconds((double)r.StartTicks / _frequency)).UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture));
            json.WriteNumber("latency_ms", Ms(r.EndTicks - r.IntendedTicks));
            json.WriteBoolean("waited_for_cap", r.WaitedForCap);
            json.WriteNumber("status", r.Status);
            json.WriteString("outcome", r.Outcome);
            if (r.Error is null)
            {
                json.WriteNull("error");
            }
            else
            {
                json.WriteString("error", r.Error.Length > 500 ? r.Error[..500] : r.Error);
            }

            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _writer.Dispose();
        }
    }
}

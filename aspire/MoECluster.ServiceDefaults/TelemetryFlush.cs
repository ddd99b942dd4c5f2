using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace MoECluster.ServiceDefaults;

/// <summary>
/// The last OTLP flush of a stopping process, bounded by <see cref="ServiceDefaultsExtensions.TelemetryFlushOnStop"/>: once
/// every hosted service has stopped (their last logs and spans are in), the tracer, meter and logger providers shut
/// down together, each exporting what it holds within the budget. Left to themselves they shut down one after another
/// when the container is disposed, each waiting out its exporter's timeout and retries on a collector that is down or
/// hung (about 14 s in all), longer than a supervisor waits for a stop. A provider shut down here is not waited on again.
/// </summary>
internal sealed partial class TelemetryFlush(IServiceProvider services, IHostApplicationLifetime lifetime, ILogger<TelemetryFlush> logger) : IHostedService
{
    private CancellationTokenRegistration _stopped;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _stopped = lifetime.ApplicationStopped.Register(Flush);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private void Flush()
    {
        _stopped.Dispose();
        var dropped = ShutDownTogether(
            ("traces", services.GetService<TracerProvider>() is { } traces ? traces.Shutdown : null),
            ("metrics", services.GetService<MeterProvider>() is { } metrics ? metrics.Shutdown : null),
            ("logs", services.GetService<LoggerProvider>() is { } logs ? logs.Shutdown : null));
        if (dropped.Count > 0)
        {
            LogDropped(string.Join(", ", dropped), ServiceDefaultsExtensions.TelemetryFlushOnStop.TotalSeconds);
        }
    }

    /// <summary>
    /// Calls every provider's <c>Shutdown(timeoutMilliseconds)</c> at once, each on its own thread (each blocks for up to
    /// the budget, and a busy pool would queue the last behind the others), and waits at most
    /// <see cref="ServiceDefaultsExtensions.TelemetryFlushOnStop"/>; returns the signals that did not export in time.
    /// </summary>
    internal static List<string> ShutDownTogether(params (string Signal, Func<int, bool>? Shutdown)[] providers)
    {
        int budget = (int)ServiceDefaultsExtensions.TelemetryFlushOnStop.TotalMilliseconds;
        var running = providers.Where(p => p.Shutdown is not null)
            .Select(p => (p.Signal, Done: Task.Factory.StartNew(() => p.Shutdown!(budget), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)))
            .ToList();
        Task.WaitAll([.. running.Select(r => r.Done)], ServiceDefaultsExtensions.TelemetryFlushOnStop + TimeSpan.FromMilliseconds(250));
        return [.. running.Where(r => !r.Done.IsCompletedSuccessfully || !r.Done.Result).Select(r => r.Signal)];
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "stopping: the OTLP collector did not take the last {Signals} within {Seconds:F0} s; dropped")]
    private partial void LogDropped(string signals, double seconds);
}

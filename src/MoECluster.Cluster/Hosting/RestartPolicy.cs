namespace MoECluster.Cluster.Hosting;

/// <summary>
/// When a launcher restarts a silo process that exited on its own: after a delay that doubles with each exit in a
/// row (from <see cref="BaseDelay"/> up to <see cref="MaxDelay"/>; a process that ran <see cref="StableAfter"/> or
/// longer starts the series again), and not at all once it has been restarted <see cref="MaxRestarts"/> times within
/// <see cref="Window"/> (a crash loop: its log says why, and restarting it again would only hide that). Not thread-safe:
/// one instance per supervised process.
/// </summary>
public sealed class RestartPolicy(TimeSpan baseDelay, TimeSpan maxDelay, int maxRestarts, TimeSpan window, TimeSpan stableAfter)
{
    private readonly Queue<TimeSpan> _restarts = new();
    private int _inARow;

    /// <summary>0.5 s, doubling up to 10 s; at most 5 restarts within 2 minutes; 30 s of running resets the backoff.</summary>
    public static RestartPolicy Default() => new(TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(10), 5, TimeSpan.FromMinutes(2), TimeSpan.FromSeconds(30));

    public TimeSpan BaseDelay { get; } = baseDelay;

    public TimeSpan MaxDelay { get; } = maxDelay;

    public int MaxRestarts { get; } = maxRestarts;

    public TimeSpan Window { get; } = window;

    public TimeSpan StableAfter { get; } = stableAfter;

    /// <summary>Restarts so far.</summary>
    public int Restarts { get; private set; }

    /// <summary>
    /// The process exited at <paramref name="now"/> (any monotonic clock) after running for <paramref name="ranFor"/>:
    /// the delay before restarting it, or null when it has been restarted <see cref="MaxRestarts"/> times within the window.
    /// </summary>
    public TimeSpan? NextDelay(TimeSpan now, TimeSpan ranFor)
    {
        while (_restarts.Count > 0 && now - _restarts.Peek() > Window)
        {
            _restarts.Dequeue();
        }

        if (_restarts.Count >= MaxRestarts)
        {
            return null;
        }

        _inARow = ranFor >= StableAfter ? 0 : _inARow;
        double delay = BaseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(_inARow, 30));
        _inARow++;
        _restarts.Enqueue(now);
        Restarts++;
        return TimeSpan.FromMilliseconds(Math.Min(delay, MaxDelay.TotalMilliseconds));
    }

    /// <summary>"at most N within S s", for messages.</summary>
    public string Describe() => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"at most {MaxRestarts} within {Window.TotalSeconds:F0} s");
}

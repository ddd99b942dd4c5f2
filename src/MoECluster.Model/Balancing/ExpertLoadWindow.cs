namespace MoECluster.Model.Balancing;

/// <summary>
/// Tokens per expert of one layer over a sliding window of time: <see cref="Buckets"/> buckets of
/// <see cref="BucketWidth"/> each; a bucket older than the window is cleared before it is reused. What the replica
/// planner reads (recent routing, not the whole history). The caller supplies the time (a monotonic clock) and the
/// lock: not thread-safe.
/// </summary>
public sealed class ExpertLoadWindow
{
    private readonly long[][] _counts;
    private readonly long[] _bucketStart;
    private readonly long _widthTicks;

    public ExpertLoadWindow(int experts, TimeSpan window, int buckets = 30)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(buckets, 1);
        if (window <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(window), window, "the window is longer than zero");
        }

        _widthTicks = Math.Max(1, window.Ticks / buckets);
        _counts = [.. Enumerable.Range(0, buckets).Select(_ => new long[experts])];
        _bucketStart = Enumerable.Repeat(long.MinValue, buckets).ToArray();
        Experts = experts;
    }

    public int Experts { get; }

    public int Buckets => _counts.Length;

    public TimeSpan BucketWidth => TimeSpan.FromTicks(_widthTicks);

    /// <summary>The window: <see cref="Buckets"/> × <see cref="BucketWidth"/>.</summary>
    public TimeSpan Window => TimeSpan.FromTicks(_widthTicks * _counts.Length);

    /// <summary>Counts one token for each expert id in <paramref name="experts"/> (ids outside the layer are refused) at <paramref name="now"/>.</summary>
    public void Add(ReadOnlySpan<int> experts, TimeSpan now)
    {
        long[] bucket = BucketAt(now);
        foreach (int e in experts)
        {
            if ((uint)e >= (uint)Experts)
            {
                throw new ArgumentOutOfRangeException(nameof(experts), e, $"expert ids are 0..{Experts - 1}");
            }

            bucket[e]++;
        }
    }

    /// <summary>Tokens per expert in the window that ends at <paramref name="now"/>.</summary>
    public long[] Sum(TimeSpan now)
    {
        long current = Math.DivRem(now.Ticks, _widthTicks, out _);
        var total = new long[Experts];
        for (int b = 0; b < _counts.Length; b++)
        {
            if (_bucketStart[b] > current - _counts.Length && _bucketStart[b] <= current)
            {
                long[] counts = _counts[b];
                for (int e = 0; e < total.Length; e++)
                {
                    total[e] += counts[e];
                }
            }
        }

        return total;
    }

    private long[] BucketAt(TimeSpan now)
    {
        long index = Math.DivRem(now.Ticks, _widthTicks, out _);
        int slot = (int)(((index % _counts.Length) + _counts.Length) % _counts.Length);
        if (_bucketStart[slot] != index)
        {
            Array.Clear(_counts[slot]);
            _bucketStart[slot] = index;
        }

        return _counts[slot];
    }
}

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// An expert shard refused a call because its batching queue is full (MoECluster:ShardBatching:MaxQueuedRequests or
/// MaxQueuedBytes, see Grains/ShardBatcher): back-pressure, neither the client's fault nor a failure. Not retried by
/// the router (a retry loop would only add to the queue); the gateway answers 429 Too Many Requests with a Retry-After
/// of <see cref="RetryAfterSeconds"/>. Crosses the grain boundary as itself (<see cref="ShardBusySurrogate"/>).
/// </summary>
public sealed class ShardBusyException : Exception
{
    public ShardBusyException()
        : this("an expert shard is busy", 1)
    {
    }

    public ShardBusyException(string message)
        : this(message, 1)
    {
    }

    public ShardBusyException(string message, Exception innerException)
        : base(message, innerException)
    {
        RetryAfterSeconds = 1;
    }

    public ShardBusyException(string message, int retryAfterSeconds)
        : base(message)
    {
        RetryAfterSeconds = Math.Max(1, retryAfterSeconds);
    }

    /// <summary>When to try again, in whole seconds (at least 1): the shard's estimate of when its queue has room.</summary>
    public int RetryAfterSeconds { get; }
}

/// <summary>Carries a <see cref="ShardBusyException"/> across the grain boundary: its message and retry-after hint.</summary>
[GenerateSerializer]
[Alias("moecluster.shard-busy")]
public readonly struct ShardBusySurrogate
{
    [Id(0)]
    public string Message { get; init; }

    [Id(1)]
    public int RetryAfterSeconds { get; init; }
}

[RegisterConverter]
public sealed class ShardBusySurrogateConverter : IConverter<ShardBusyException, ShardBusySurrogate>
{
    public ShardBusyException ConvertFromSurrogate(in ShardBusySurrogate surrogate) => new(surrogate.Message, surrogate.RetryAfterSeconds);

    public ShardBusySurrogate ConvertToSurrogate(in ShardBusyException value) => new() { Message = value.Message, RetryAfterSeconds = value.RetryAfterSeconds };
}

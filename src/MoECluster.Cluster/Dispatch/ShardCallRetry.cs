using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using Orleans.Networking.Shared;
using Orleans.Runtime.Messaging;
using Polly;
using Polly.Retry;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// Retries an expert-shard call that failed because the silo holding the shard went away (killed, partitioned, shut
/// down). A shard call is idempotent — a pure function of the rows it carries — so it is simply sent again: once
/// membership has declared the silo dead, the shard's grain re-activates on a surviving expert silo (placement
/// skips dead silos) and reloads its experts' weights there. Backoff is exponential with jitter, capped, and the
/// whole thing is bounded by the request's deadline (the caller's cancellation token). Other failures (bad input,
/// a shard refusing a range) are not retried. An attempt that did not answer in time (<see cref="ShardCallTimeoutException"/>,
/// from <see cref="ShardCallHedging"/>) is sent again too.
/// </summary>
public sealed partial class ShardCallRetry
{
    private readonly ResiliencePipeline _pipeline;

    public ShardCallRetry(ShardRetryOptions options, ILogger logger)
    {
        _pipeline = new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(IsSiloLoss),
                MaxRetryAttempts = options.MaxAttempts - 1,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(options.BaseDelayMilliseconds),
                MaxDelay = TimeSpan.FromMilliseconds(options.MaxDelayMilliseconds),
                OnRetry = args =>
                {
                    Retrying(logger, args.AttemptNumber + 1, args.RetryDelay.TotalMilliseconds, args.Outcome.Exception?.GetType().Name ?? "?", args.Outcome.Exception?.Message ?? string.Empty);
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
    }

    public ValueTask<T> ExecuteAsync<T>(Func<CancellationToken, ValueTask<T>> call, CancellationToken cancellationToken) =>
        _pipeline.ExecuteAsync(call, cancellationToken);

    /// <summary>The failures that mean "the shard's silo is gone or unreachable", not "the request is wrong".</summary>
    public static bool IsSiloLoss(Exception e) => e is SiloUnavailableException or OrleansMessageRejectionException
        or ConnectionFailedException or SocketConnectionException or GatewayTooBusyException or ShardCallTimeoutException;

    /// <summary>
    /// What a call may throw that is neither the request's fault nor the callee's: cancellation, the deadline, the
    /// cluster's own state (Orleans' exceptions, a silo lost for good). Passed through as it is, never wrapped or logged
    /// as a bug.
    /// </summary>
    public static bool IsCancellationOrClusterState(Exception e) =>
        e is OperationCanceledException or TimeoutException or OrleansException || IsSiloLoss(e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "shard call failed, retry {Attempt} in {DelayMs:F0} ms: {Error}: {Reason}")]
    private static partial void Retrying(ILogger logger, int attempt, double delayMs, string error, string reason);
}

using Orleans.Concurrency;

namespace MoECluster.Cluster.Contracts;

/// <summary>
/// Owns the experts named by its key (<c>{model}/{layer}/s{index}/{ranges}</c>, see <see cref="Model.Dispatch.ExpertShard"/>)
/// and turns a batch of routed rows into per-row partial sums Σ w_i · E_i(z).
/// </summary>
[Alias("moecluster.expert-shard")]
public interface IExpertShardGrain : IGrainWithStringKey
{
    /// <summary>
    /// Takes an encoded ShardRequest, returns an encoded ShardResponse. Calls interleave: the shard merges the requests that
    /// queue while it computes into its next grouped pass (continuous batching, Grains/ShardBatcher).
    /// </summary>
    [Alias("compute")]
    [AlwaysInterleave]
    Task<WireBytes> Compute(WireBytes request, CancellationToken cancellationToken = default);

    /// <summary>Which silo the shard lives on and which experts it holds (loads it if not active).</summary>
    [Alias("describe")]
    Task<ShardDescription> Describe();

    /// <summary>The shard left the placement: it deactivates once idle (its queued passes finish first).</summary>
    [Alias("retire")]
    Task Retire();
}

[GenerateSerializer]
[Immutable]
[Alias("moecluster.shard-description")]
public sealed record ShardDescription(
    [property: Id(0)] string Key,
    [property: Id(1)] string Silo,
    [property: Id(2)] string SiloRole,
    [property: Id(3)] string Experts,
    [property: Id(4)] int ExpertCount,
    [property: Id(5)] long WeightBytes);

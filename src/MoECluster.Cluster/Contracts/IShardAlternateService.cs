using Orleans.Services;

namespace MoECluster.Cluster.Contracts;

/// <summary>
/// The alternates of expert shards on one silo: a grain service (an Orleans system target, one per silo, addressed by
/// the silo's address) that computes a shard's request like its <see cref="Grains.ExpertShardGrain"/> does, for the routers
/// that hedge a call the shard's own activation has not answered (<see cref="Dispatch.ShardCallHedging"/>). A grain service,
/// not a second grain, because a new grain activation must register in the grain directory, and a third of the
/// directory lives on the very silo that hangs: an alternate grain would wait for it just as the call it replaces.
/// A shard's experts are loaded on its first alternate call and dropped once no call came for
/// <see cref="Hosting.ShardHedgingOptions.AlternateIdleSeconds"/>; calls queued at a shard share one grouped pass, as in the
/// grain (<see cref="Grains.ShardBatcher"/>).
/// </summary>
[Alias("moecluster.shard-alternates")]
public interface IShardAlternateService : IGrainService
{
    /// <summary>Takes an encoded ShardRequest for the shard <paramref name="shardKey"/> names, returns an encoded ShardResponse.</summary>
    [Alias("compute")]
    Task<WireBytes> Compute(string shardKey, WireBytes request, CancellationToken cancellationToken = default);
}

/// <summary>Reaches the <see cref="IShardAlternateService"/> of a given silo.</summary>
public interface IShardAlternateClient : IGrainServiceClient<IShardAlternateService>
{
    IShardAlternateService On(SiloAddress silo);
}

namespace MoECluster.Cluster.Tests;

/// <summary>
/// The default <see cref="InProcessMoeCluster"/> with batching at the front-end off (MoECluster:FrontEndBatching:Enabled =
/// false): every router request sends its own message to each shard, so that tests of continuous batching at the shards
/// can make requests meet there (with front-end batching on, one front-end's concurrent requests for a layer reach a shard
/// as one message).
/// </summary>
public sealed class UnbatchedFrontEndCluster : InProcessMoeCluster
{
    protected override IEnumerable<KeyValuePair<string, string?>> MoreSettings() =>
        [new("MoECluster:FrontEndBatching:Enabled", "false")];
}

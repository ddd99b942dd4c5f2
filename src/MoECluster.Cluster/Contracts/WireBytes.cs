namespace MoECluster.Cluster.Contracts;

/// <summary>
/// An encoded MessagePack message (a <c>ShardRequest</c> or <c>ShardResponse</c>) as one byte block.
/// Marked immutable so Orleans neither deep-copies it on local calls nor re-encodes it: on the socket it is a
/// length-prefixed blob inside Orleans's own message envelope.
/// </summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.wire-bytes")]
public sealed class WireBytes(byte[] bytes)
{
    [Id(0)]
    public byte[] Bytes { get; } = bytes;
}

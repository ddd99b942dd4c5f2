using MoECluster.Cluster.Contracts;
namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// An expert shard refused or broke a call that the router built (a refusal, an undecodable reply, non-finite partial
/// sums for finite rows): the cluster's fault, never the client's. The gateway answers 502.
/// </summary>
[GenerateSerializer]
[Alias("moecluster.shard-failure")]
public sealed class ShardFailureException : Exception
{
    public ShardFailureException()
        : base("an expert shard failed")
    {
    }

    public ShardFailureException(string message)
        : base(message)
    {
    }

    public ShardFailureException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

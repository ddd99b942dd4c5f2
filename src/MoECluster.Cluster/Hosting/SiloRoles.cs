namespace MoECluster.Cluster.Hosting;

/// <summary>Silo metadata (Orleans:Metadata) that marks what a silo is for.</summary>
public static class SiloRoles
{
    /// <summary>The metadata key; its value is <see cref="Expert"/> or <see cref="Frontend"/>.</summary>
    public const string MetadataKey = "moecluster-role";

    /// <summary>Holds the compute device for experts: expert shards are placed only here.</summary>
    public const string Expert = "expert";

    /// <summary>Runs routers and the gateway; never holds expert shards.</summary>
    public const string Frontend = "frontend";
}

using Orleans.Placement;

namespace MoECluster.Cluster.Placement;

/// <summary>Places a grain only on silos whose metadata marks them as expert silos, honouring pins.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.expert-shard-placement")]
public sealed class ExpertShardPlacement : PlacementStrategy
{
    public static ExpertShardPlacement Instance { get; } = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ExpertShardPlacementAttribute() : PlacementAttribute(ExpertShardPlacement.Instance);

/// <summary>Places a grain on the silo whose address (SiloAddress.ToParsableString) is the grain's key.</summary>
[GenerateSerializer]
[Immutable]
[Alias("moecluster.silo-pinned-placement")]
public sealed class SiloPinnedPlacement : PlacementStrategy
{
    public static SiloPinnedPlacement Instance { get; } = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class SiloPinnedPlacementAttribute() : PlacementAttribute(SiloPinnedPlacement.Instance);

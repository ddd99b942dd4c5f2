namespace MoECluster.Cluster.Placement;

/// <summary>
/// A shard's periodic "am I where placement puts me now?" (<see cref="Grains.ExpertShardGrain"/> runs it every
/// <see cref="Grains.ExpertShardGrain.PlacementCheckPeriod"/>). It asks the injected <see cref="IShardPlacementPolicy"/>,
/// the same one the placement director asks, so a shard never moves toward any other rule. A move is decided only when
/// the policy names the same other silo on two checks in a row, so a membership change in flight does not move a shard
/// back and forth; a policy that names no silo (none active, or a pinned silo absent) leaves the shard where it is.
/// </summary>
public sealed class ShardRebalanceCheck(IShardPlacementPolicy policy, ShardIdentity shard)
{
    private SiloAddress? _pending;

    /// <summary>The silo to migrate to now, or null to stay.</summary>
    public SiloAddress? Check(SiloAddress current, IReadOnlyList<ExpertSilo> activeExpertSilos, IReadOnlyDictionary<string, string> pins)
    {
        var target = policy.Choose(shard, activeExpertSilos, pins);
        if (target is null || target.Equals(current))
        {
            _pending = null;
            return null;
        }

        if (target.Equals(_pending))
        {
            return target;
        }

        _pending = target;
        return null;
    }
}

using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Dispatch;
using MoECluster.Model.Dispatch;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MoECluster.Cluster.Placement;

/// <summary>What placement places: a shard (its key carries its index) or the shard's alternate (<see cref="ShardKeys"/>).</summary>
public sealed record ShardIdentity(ExpertShard Shard, bool Alternate = false)
{
    /// <summary>The grain key of the shard, or the key its alternate is known by.</summary>
    public string Key => Alternate ? ShardKeys.Alternate(Shard.Key) : Shard.Key;

    /// <summary>The identity a shard or alternate key names; <see cref="FormatException"/> for any other key.</summary>
    public static ShardIdentity Parse(string key)
    {
        var shard = ShardKeys.Parse(key, out bool alternate);
        return new ShardIdentity(shard, alternate);
    }
}

/// <summary>An active expert silo: its address and its name (Orleans:Name, which pins refer to).</summary>
public sealed record ExpertSilo(SiloAddress Address, string Name);

/// <summary>
/// Where expert shards and their alternates go: one pure function of the shard, the active expert silos and the pins
/// (MoECluster:Pins, shard key → silo name), with no Orleans service inside and the same answer for the same inputs.
/// The one registered in DI is asked by the placement director (where a shard activates), by each shard's periodic
/// rebalance check (<see cref="ShardRebalanceCheck"/>: where it should sit now) and by routers (where a shard's
/// alternate is), so replacing it replaces all three and no older rule moves shards back.
/// </summary>
public interface IShardPlacementPolicy
{
    /// <summary>The silo for <paramref name="shard"/>, or null when none of <paramref name="activeExpertSilos"/> may hold it.</summary>
    SiloAddress? Choose(ShardIdentity shard, IReadOnlyList<ExpertSilo> activeExpertSilos, IReadOnlyDictionary<string, string> pins);
}

/// <summary>
/// The default policy: each layer's shards spread evenly over the expert silos by shard index — shard i of layer l on
/// silo (i + l) mod n, silos in the order of their addresses — so 4 shards on 3 silos leave none empty, and a layer's
/// shards start on a different silo than the previous layer's. A pinned shard goes to the silo its pin names, and
/// nowhere (null) while that silo is not an active expert silo. An alternate goes to the silo after its shard's, which
/// is another silo whenever there are two.
/// </summary>
public sealed class SpreadByIndexPlacementPolicy : IShardPlacementPolicy
{
    public SiloAddress? Choose(ShardIdentity shard, IReadOnlyList<ExpertSilo> activeExpertSilos, IReadOnlyDictionary<string, string> pins)
    {
        if (activeExpertSilos.Count == 0)
        {
            return null;
        }

        ExpertSilo[] silos = [.. activeExpertSilos.OrderBy(s => s.Address.ToParsableString(), StringComparer.Ordinal)];
        int home;
        if (pins.TryGetValue(shard.Shard.Key, out string? pinned))
        {
            home = Array.FindIndex(silos, s => string.Equals(s.Name, pinned, StringComparison.Ordinal));
            if (home < 0)
            {
                return null;
            }
        }
        else
        {
            home = (int)(((long)shard.Shard.Index + shard.Shard.Layer) % silos.Length);
        }

        return silos[(home + (shard.Alternate ? 1 : 0)) % silos.Length].Address;
    }
}

/// <summary>The active expert silos of a membership view: status Active and silo metadata role <see cref="SiloRoles.Expert"/>.</summary>
public static class ExpertSilos
{
    public static bool IsExpert(ISiloMetadataCache metadata, SiloAddress silo) =>
        metadata.GetSiloMetadata(silo).Metadata.TryGetValue(SiloRoles.MetadataKey, out string? role) && role == SiloRoles.Expert;

    public static IReadOnlyList<ExpertSilo> Active(ClusterMembershipSnapshot snapshot, ISiloMetadataCache metadata) =>
        [.. snapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active && IsExpert(metadata, m.SiloAddress))
            .Select(m => new ExpertSilo(m.SiloAddress, m.Name))
            .OrderBy(s => s.Address.ToParsableString(), StringComparer.Ordinal)];
}

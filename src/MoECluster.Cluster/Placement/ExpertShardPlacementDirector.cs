using System.Globalization;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace MoECluster.Cluster.Placement;

/// <summary>
/// Puts an expert shard on an expert silo (metadata <c>moecluster-role = expert</c>), never on a front-end silo.
/// A shard pinned in <c>MoECluster:Pins</c> goes to the silo of that name; otherwise shard i of a layer goes to
/// expert silo (i + layer) mod count in a stable order of silo addresses, which spreads each layer's shards
/// evenly (4 shards on 2 silos: 2 each) without any shared state.
/// </summary>
internal sealed class ExpertShardPlacementDirector(
    ISiloMetadataCache metadata,
    IClusterMembershipService membership,
    IOptions<MoeClusterOptions> options) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        string key = target.GrainIdentity.Key.ToString() ?? string.Empty;
        SiloAddress[] experts = [.. context.GetCompatibleSilos(target)
            .Where(IsExpertSilo)
            .OrderBy(s => s.ToParsableString(), StringComparer.Ordinal)];

        if (options.Value.Pins.TryGetValue(key, out string? pinned))
        {
            var member = membership.CurrentSnapshot.Members.Values
                .FirstOrDefault(m => m.Status == SiloStatus.Active && string.Equals(m.Name, pinned, StringComparison.Ordinal));
            if (member is null || !experts.Contains(member.SiloAddress))
            {
                throw new OrleansException($"shard {key} is pinned to silo '{pinned}', which is not an active expert silo (expert silos: {Describe(experts)})");
            }

            return Task.FromResult(member.SiloAddress);
        }

        if (experts.Length == 0)
        {
            throw new OrleansException($"cannot place shard {key}: no active expert silo in the cluster (start a silo with --role expert)");
        }

        return Task.FromResult(Target(key, experts));
    }

    /// <summary>
    /// Where an unpinned shard belongs among the active expert silos, <paramref name="experts"/> sorted by address:
    /// shard i of layer l on expert silo (i + l) mod count, and its alternate (<see cref="ShardKeys"/>) on the next one,
    /// so that the two sit on different silos whenever there are two. Shards use it too, to move when silos join.
    /// </summary>
    public static SiloAddress Target(string key, IReadOnlyList<SiloAddress> experts)
    {
        int index;
        try
        {
            var shard = ShardKeys.Parse(key, out bool alternate);
            index = (shard.FirstExpert / shard.ExpertCount) + shard.Layer + (alternate ? 1 : 0);
        }
        catch (FormatException)
        {
            index = (int)(StableHash(key) % (uint)experts.Count);
        }

        return experts[index % experts.Count];
    }

    /// <summary>The active expert silos of <paramref name="snapshot"/>, in the order <see cref="Target"/> expects.</summary>
    public static SiloAddress[] ActiveExperts(ClusterMembershipSnapshot snapshot, ISiloMetadataCache metadata) =>
        [.. snapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active
                && metadata.GetSiloMetadata(m.SiloAddress).Metadata.TryGetValue(SiloRoles.MetadataKey, out string? role) && role == SiloRoles.Expert)
            .Select(m => m.SiloAddress)
            .OrderBy(s => s.ToParsableString(), StringComparer.Ordinal)];

    private bool IsExpertSilo(SiloAddress silo) =>
        metadata.GetSiloMetadata(silo).Metadata.TryGetValue(SiloRoles.MetadataKey, out string? role) && role == SiloRoles.Expert;

    private string Describe(SiloAddress[] silos) =>
        silos.Length == 0 ? "none" : string.Join(", ", silos.Select(s => membership.CurrentSnapshot.Members.TryGetValue(s, out var m) ? m.Name : s.ToString()));

    private static uint StableHash(string s)
    {
        uint h = 2166136261;
        foreach (char c in s)
        {
            h = (h ^ c) * 16777619;
        }

        return h;
    }
}

/// <summary>Places a <see cref="SiloPinnedPlacement"/> grain on the silo its key names.</summary>
internal sealed class SiloPinnedPlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        string key = target.GrainIdentity.Key.ToString() ?? string.Empty;
        SiloAddress silo = SiloAddress.FromParsableString(key);
        if (!context.GetCompatibleSilos(target).Contains(silo))
        {
            throw new OrleansException(string.Create(CultureInfo.InvariantCulture, $"silo {key} is not an active member of the cluster"));
        }

        return Task.FromResult(silo);
    }
}

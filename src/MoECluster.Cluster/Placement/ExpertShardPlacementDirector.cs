using System.Globalization;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace MoECluster.Cluster.Placement;

/// <summary>
/// Puts an expert shard where the injected <see cref="IShardPlacementPolicy"/> says, among the silos Orleans found
/// compatible — which the <see cref="ExpertSilosPlacementFilter"/> has already narrowed to expert silos (and, for a
/// pinned shard, to its pinned silo). The policy is the same one each shard's rebalance check asks.
/// </summary>
internal sealed class ExpertShardPlacementDirector(
    ISiloMetadataCache metadata,
    IClusterMembershipService membership,
    IShardPlacementPolicy policy,
    IOptions<MoeClusterOptions> options) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        string key = target.GrainIdentity.Key.ToString() ?? string.Empty;
        var shard = ShardIdentity.Parse(key);
        var compatible = context.GetCompatibleSilos(target).ToHashSet();
        var experts = ExpertSilos.Active(membership.CurrentSnapshot, metadata).Where(s => compatible.Contains(s.Address)).ToList();
        var pins = options.Value.Pins;
        var silo = policy.Choose(shard, experts, pins);
        if (silo is not null && experts.Any(s => s.Address.Equals(silo)))
        {
            return Task.FromResult(silo);
        }

        if (pins.TryGetValue(shard.Shard.Key, out string? pinned))
        {
            throw new OrleansException($"shard {key} is pinned to silo '{pinned}', which is not an active expert silo (expert silos: {Describe(experts)})");
        }

        throw new OrleansException(experts.Count == 0
            ? $"cannot place shard {key}: no active expert silo in the cluster (start a silo with --role expert)"
            : $"cannot place shard {key}: the placement policy ({policy.GetType().Name}) chose {silo?.ToString() ?? "no silo"} among the active expert silos {Describe(experts)}");
    }

    private static string Describe(List<ExpertSilo> silos) =>
        silos.Count == 0 ? "none" : string.Join(", ", silos.Select(s => s.Name));
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

using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using Orleans.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace MoECluster.Cluster.Placement;

/// <summary>
/// An Orleans placement filter: "expert silos only, pins honoured". Of the silos compatible with a grain, it keeps the
/// expert silos (metadata <c>moecluster-role = expert</c>), and of those, for a grain whose key is pinned
/// (MoECluster:Pins), only the silo the pin names. A pin whose silo is not an active expert silo narrows nothing: the
/// placement director then refuses the shard with a message that names the pin (an empty list would make Orleans
/// refuse it with a message that does not).
/// </summary>
public sealed class ExpertSilosPlacementFilter() : PlacementFilterStrategy(order: 0);

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ExpertSilosPlacementFilterAttribute() : PlacementFilterAttribute(new ExpertSilosPlacementFilter());

internal sealed class ExpertSilosPlacementFilterDirector(
    ISiloMetadataCache metadata,
    IClusterMembershipService membership,
    IOptions<MoeClusterOptions> options) : IPlacementFilterDirector
{
    public IEnumerable<SiloAddress> Filter(PlacementFilterStrategy filterStrategy, PlacementTarget target, IEnumerable<SiloAddress> silos)
    {
        SiloAddress[] experts = [.. silos.Where(s => ExpertSilos.IsExpert(metadata, s))];
        string key = target.GrainIdentity.Key.ToString() ?? string.Empty;
        if (options.Value.Pins.TryGetValue(key, out string? pinned))
        {
            var members = membership.CurrentSnapshot.Members;
            SiloAddress[] named = [.. experts.Where(s => members.TryGetValue(s, out var m) && string.Equals(m.Name, pinned, StringComparison.Ordinal))];
            if (named.Length > 0)
            {
                return named;
            }
        }

        return experts;
    }
}

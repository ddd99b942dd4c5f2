using System.Collections.Immutable;
using System.Net;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.Runtime.Placement;

namespace MoECluster.Cluster.Tests.Placement;

/// <summary>In-process stand-ins for what placement reads from Orleans: silos, their roles and names, the membership view.</summary>
internal static class PlacementFakes
{
    public static SiloAddress Silo(int i) => SiloAddress.New(new IPEndPoint(IPAddress.Loopback, 11111 + i), 1);

    public static ExpertSilo Expert(int i) => new(Silo(i), $"expert-{i}");

    public static ExpertSilo[] Experts(params int[] ids) => [.. ids.Select(Expert)];

    public static readonly IReadOnlyDictionary<string, string> NoPins = new Dictionary<string, string>();
}

/// <summary>A cluster view: members (active unless told), each with a name and a role in its silo metadata.</summary>
internal sealed class FakeCluster : IClusterMembershipService, ISiloMetadataCache
{
    private readonly Dictionary<SiloAddress, string> _roles = [];
    private ImmutableDictionary<SiloAddress, ClusterMember> _members = ImmutableDictionary<SiloAddress, ClusterMember>.Empty;

    public FakeCluster Add(int i, string role, SiloStatus status = SiloStatus.Active)
    {
        var silo = PlacementFakes.Silo(i);
        _members = _members.SetItem(silo, new ClusterMember(silo, status, role == SiloRoles.Expert ? $"expert-{i}" : $"{role}-{i}"));
        _roles[silo] = role;
        return this;
    }

    public ClusterMembershipSnapshot CurrentSnapshot => new(_members, new MembershipVersion(1));

    public IAsyncEnumerable<ClusterMembershipSnapshot> MembershipUpdates => throw new NotSupportedException();

    public ValueTask Refresh(MembershipVersion minimumVersion = default, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

    public Task<bool> TryKill(SiloAddress siloAddress) => Task.FromResult(false);

    public SiloMetadata GetSiloMetadata(SiloAddress siloAddress) =>
        _roles.TryGetValue(siloAddress, out string? role) ? Metadata(role) : SiloMetadata.Empty;

    // Orleans 10.4.2 fills SiloMetadata from configuration only (no public constructor or setter takes values).
    private static SiloMetadata Metadata(string role)
    {
        var metadata = new SiloMetadata();
        typeof(SiloMetadata).GetProperty(nameof(SiloMetadata.Metadata))!.SetValue(metadata, ImmutableDictionary<string, string>.Empty.Add(SiloRoles.MetadataKey, role));
        return metadata;
    }

    /// <summary>A placement context in which every active member is compatible (Orleans's filters applied by the caller).</summary>
    public IPlacementContext Context(Func<IEnumerable<SiloAddress>, IEnumerable<SiloAddress>>? filter = null) => new Placement(this, filter ?? (s => s));

    private sealed class Placement(FakeCluster cluster, Func<IEnumerable<SiloAddress>, IEnumerable<SiloAddress>> filter) : IPlacementContext
    {
        public SiloAddress LocalSilo => PlacementFakes.Silo(0);

        public SiloStatus LocalSiloStatus => SiloStatus.Active;

        public SiloAddress[] GetCompatibleSilos(PlacementTarget target) =>
            [.. filter(cluster._members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress))];

        public IReadOnlyDictionary<ushort, SiloAddress[]> GetCompatibleSilosWithVersions(PlacementTarget target) =>
            new Dictionary<ushort, SiloAddress[]> { [0] = GetCompatibleSilos(target) };
    }
}

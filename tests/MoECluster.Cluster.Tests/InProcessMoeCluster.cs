using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Testing;
using Orleans.Runtime.MembershipService.SiloMetadata;
using Orleans.TestingHost;

namespace MoECluster.Cluster.Tests;

/// <summary>What an <see cref="InProcessMoeCluster"/> starts: how many expert silos, shards per layer, and any further settings (pins).</summary>
public sealed record InProcessMoeClusterSetup
{
    /// <summary>Expert silos besides the front-end (silo 0).</summary>
    public int ExpertSilos { get; init; } = 2;

    /// <summary>MoECluster:ShardsPerLayer.</summary>
    public int ShardsPerLayer { get; init; } = 4;

    /// <summary>Routed experts of each synthetic model.</summary>
    public int Experts { get; init; } = 16;

    /// <summary>Further configuration every silo gets (keys with ':'), e.g. MoECluster:Pins:lat/1/0-4 = Silo_2.</summary>
    public IReadOnlyDictionary<string, string?> Settings { get; init; } = new Dictionary<string, string?>();
}

/// <summary>
/// A MoECluster in this process on Orleans's in-process test cluster (in-memory transport, in-process membership): silo 0
/// is the front-end (<c>moecluster-role = frontend</c>, the only Orleans gateway, where routers run), silos 1..n are expert
/// silos, each configured as <c>moecluster silo</c> configures one (<see cref="MoeClusterSiloExtensions.AddMoeCluster"/>,
/// TLS off: the in-memory transport has no sockets to protect). It serves a tiny LatentMoE model (<see cref="Latent"/>)
/// and its standard twin (<see cref="Standard"/>), 16 experts in 4 shards per layer, two MoE layers each, written to a
/// temporary directory, on the reference compute backend so that the in-process model (<see cref="Reference"/>) computes
/// the same function. Share one per test class (<c>IClassFixture</c>) or per collection (<see cref="InProcessMoeClusterGroup"/>);
/// derive from it for another setup (<see cref="InProcessMoeClusterSetup"/>, <c>MoreSettings</c>).
/// </summary>
public class InProcessMoeCluster : IAsyncLifetime
{
    public const string Latent = "lat";
    public const string Standard = "std";

    /// <summary>The silo name of the front-end (pins and <see cref="SiloIdentity.Name"/> use these names).</summary>
    public const string FrontendName = "Silo_0";

    private readonly InProcessMoeClusterSetup _setup;
    private readonly Dictionary<string, MoeModel> _references = [];
    private InProcessTestCluster? _cluster;

    public InProcessMoeCluster()
        : this(new InProcessMoeClusterSetup())
    {
    }

    protected InProcessMoeCluster(InProcessMoeClusterSetup setup) => _setup = setup;

    public InProcessMoeClusterSetup Setup => _setup;

    public TempDirectory Dir { get; } = new("moecluster-grains-");

    /// <summary>The directory holding both models (<see cref="ModelPath"/> of each).</summary>
    public string ModelDirectory => Dir.Path;

    public string LatentPath => Dir.File(Latent);

    public string StandardPath => Dir.File(Standard);

    public InProcessTestCluster Cluster => _cluster ?? throw new InvalidOperationException("the cluster is not started");

    /// <summary>An Orleans client connected to the front-end's gateway.</summary>
    public IClusterClient Client => Cluster.Client;

    public InProcessSiloHandle Frontend => Cluster.Silos.Single(s => s.Name == FrontendName);

    /// <summary>The expert silos still running.</summary>
    public IReadOnlyList<InProcessSiloHandle> Experts => [.. Cluster.GetActiveSilos().Where(s => s.Name != FrontendName)];

    /// <summary>The front-end silo's grain factory: routers called through it activate on the front-end, as the gateway's do.</summary>
    public IGrainFactory Grains => Frontend.SiloHost.Services.GetRequiredService<IGrainFactory>();

    /// <summary>The front-end's traffic ledger (routers record there).</summary>
    public TrafficLedger FrontendLedger => Service<TrafficLedger>(Frontend);

    /// <summary>The silo name (Orleans:Name, what pins name) of the silo at <paramref name="address"/> ("Silo_1"), as <see cref="ShardDescription.Silo"/> gives it.</summary>
    public string NameOf(string address) =>
        Cluster.Silos.Single(s => s.SiloAddress.ToString() == address).Name;

    /// <summary>The directory of model <paramref name="model"/> (<see cref="Latent"/> or <see cref="Standard"/>).</summary>
    public string ModelPath(string model) => model switch
    {
        Latent => LatentPath,
        Standard => StandardPath,
        _ => throw new ArgumentException($"the cluster serves {Latent} and {Standard}, not {model}", nameof(model)),
    };

    /// <summary>The keys of a layer's expert shards as routers address them (the routing table of MoECluster:ShardsPerLayer).</summary>
    public IReadOnlyList<string> ShardKeys(string model, int layer)
    {
        int experts = Reference(model).Config.NRoutedExperts;
        return [.. new ExpertRoutingTable(model, layer, experts, Math.Min(_setup.ShardsPerLayer, experts)).Shards.Select(s => s.Key)];
    }

    public T Service<T>(InProcessSiloHandle silo)
        where T : notnull => silo.SiloHost.Services.GetRequiredService<T>();

    /// <summary>The model opened in this process (reference backend), for the expected output of a forward.</summary>
    public MoeModel Reference(string model)
    {
        lock (_references)
        {
            if (!_references.TryGetValue(model, out MoeModel? opened))
            {
                _references[model] = opened = MoeModel.Open(ModelPath(model));
            }

            return opened;
        }
    }

    /// <summary>Stops an expert silo gracefully (it leaves the membership and deactivates its grains).</summary>
    public Task StopSiloAsync(InProcessSiloHandle silo) => Cluster.StopSiloAsync(silo);

    /// <summary>Kills an expert silo: it stops without leaving; the others declare it dead by missed probes.</summary>
    public Task KillSiloAsync(InProcessSiloHandle silo) => Cluster.KillSiloAsync(silo);

    /// <summary>Starts one more expert silo and waits until every silo sees it with its role.</summary>
    public async Task<InProcessSiloHandle> StartExpertSiloAsync()
    {
        var silo = await Cluster.StartAdditionalSiloAsync();
        await WaitForMembershipAsync(TimeSpan.FromSeconds(30));
        return silo;
    }

    public async Task InitializeAsync()
    {
        SyntheticCheckpoint.Write(LatentPath, ModelPresets.Get("tiny").Build(experts: _setup.Experts), 21, skew: LatentGateSkew);
        SyntheticCheckpoint.Write(StandardPath, ModelPresets.Get("tiny-standard").Build(experts: _setup.Experts), 22);
        var builder = new InProcessTestClusterBuilder(checked((short)(1 + _setup.ExpertSilos)));
        builder.Options.GatewayPerSilo = false;
        builder.Options.ConfigureFileLogging = false;
        builder.ConfigureSiloHost((silo, host) => host.Configuration.AddInMemoryCollection(SiloSettings(silo.SiloName)));
        builder.ConfigureSilo((_, silo) => silo.AddMoeCluster(silo.Configuration));
        _cluster = builder.Build();
        await _cluster.DeployAsync();
        await WaitForMembershipAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>
    /// Waits until every running silo sees every running silo active with its role metadata: placement (on the
    /// front-end) and the shards' placement check (on the experts) read both.
    /// </summary>
    public async Task WaitForMembershipAsync(TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var running = Cluster.GetActiveSilos().ToList();
            bool settled = running.All(s =>
            {
                var snapshot = Service<IClusterMembershipService>(s).CurrentSnapshot;
                var metadata = Service<ISiloMetadataCache>(s);
                var active = snapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress).ToHashSet();
                return active.SetEquals(running.Select(r => r.SiloAddress))
                    && running.All(r => metadata.GetSiloMetadata(r.SiloAddress).Metadata.ContainsKey(SiloRoles.MetadataKey));
            });
            if (settled)
            {
                return;
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"the in-process cluster's membership did not settle in {timeout.TotalSeconds:F0} s");
            }

            await Task.Delay(50);
        }
    }

    private Dictionary<string, string?> SiloSettings(string siloName)
    {
        var settings = new Dictionary<string, string?>
        {
            [ConfigurationKeys.SiloName] = siloName,
            [ConfigurationKeys.Role] = siloName == FrontendName ? SiloRoles.Frontend : SiloRoles.Expert,
            [ConfigurationKeys.ModelPath(Latent)] = LatentPath,
            [ConfigurationKeys.ModelPath(Standard)] = StandardPath,
            [$"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.ShardsPerLayer)}"] = _setup.ShardsPerLayer.ToString(CultureInfo.InvariantCulture),
            [$"{MoeClusterOptions.Section}:Compute:Backend"] = "reference",
            [$"{MoeClusterOptions.Section}:Tls:Enabled"] = "false",
        };
        foreach (var (key, value) in _setup.Settings.Concat(MoreSettings()))
        {
            settings[key] = value;
        }

        return settings;
    }

    /// <summary>Settings a derived fixture computes once the models are written (every silo gets them).</summary>
    protected virtual IEnumerable<KeyValuePair<string, string?>> MoreSettings() => [];

    /// <summary>Skewed routing for the latent model (null: the synthetic gate's own, near uniform).</summary>
    protected virtual GateSkew? LatentGateSkew => null;

    public async Task DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.StopAllSilosAsync();
            await _cluster.DisposeAsync();
        }

        lock (_references)
        {
            foreach (var model in _references.Values)
            {
                model.Dispose();
            }
        }

        Dir.Dispose();
    }
}

/// <summary>
/// One default <see cref="InProcessMoeCluster"/> shared by the test classes of this collection (run one after another), so
/// the tier starts as few clusters as it needs. A class whose tests change the cluster (stop a silo) takes its own fixture.
/// </summary>
[CollectionDefinition(Name)]
public sealed class InProcessMoeClusterGroup : ICollectionFixture<InProcessMoeCluster>
{
    public const string Name = "in-process MoE cluster";
}

using System.Globalization;
using MoECluster.Gateway;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// A real cluster of three processes on TCP loopback: a front-end silo with the gateway and two expert silos
/// (<c>moecluster silo</c>), serving a tiny LatentMoE model ("lat") and its standard twin ("std"), 16 experts
/// in 4 shards per layer, two MoE layers each.
/// </summary>
public sealed class ProcessClusterFixture : IAsyncLifetime
{
    private readonly List<BackgroundProcess> _silos = [];

    public TempDirectory Dir { get; } = new("moecluster-cluster-");

    public string LatentPath => Dir.File("lat");

    public string StandardPath => Dir.File("std");

    public string Url { get; private set; } = string.Empty;

    public int GatewayPort { get; private set; }

    public HttpClient Http { get; private set; } = null!;

    public GatewayClient Client { get; private set; } = null!;

    public IReadOnlyList<BackgroundProcess> Silos => _silos;

    public async Task InitializeAsync()
    {
        SyntheticCheckpoint.Write(LatentPath, ModelPresets.Get("tiny").Build(experts: 16), 21);
        SyntheticCheckpoint.Write(StandardPath, ModelPresets.Get("tiny-standard").Build(experts: 16), 22);
        int[] ports = FreePorts.Take(5);
        Url = $"http://127.0.0.1:{ports[4]}";
        GatewayPort = ports[3];
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        string[] models = ["--model", $"lat={LatentPath}", "--model", $"std={StandardPath}", "--shards", "4"];
        _silos.Add(BackgroundProcess.Moecluster([
            "silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", P(GatewayPort), "--urls", Url, .. models]));
        Http = new HttpClient { BaseAddress = new Uri(Url), Timeout = TimeSpan.FromMinutes(2) };
        Client = new GatewayClient(Http);
        await ProcessWait.UntilAsync("front-end silo", async () => (await Http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), _silos);
        for (int i = 1; i <= 2; i++)
        {
            _silos.Add(BackgroundProcess.Moecluster([
                "silo", "--role", "expert", "--name", $"expert-{i}", "--silo-port", P(ports[i]), "--gateway-port", "0",
                "--primary", $"127.0.0.1:{P(ports[0])}", .. models]));
        }

        await ProcessWait.UntilAsync("two expert silos", async () => (await Client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 2, TimeSpan.FromSeconds(90), _silos);
    }

    public Task DisposeAsync()
    {
        Http?.Dispose();
        foreach (var silo in _silos.AsEnumerable().Reverse())
        {
            silo.Stop(TimeSpan.FromSeconds(10));
            silo.Dispose();
        }

        Dir.Dispose();
        return Task.CompletedTask;
    }
}

[CollectionDefinition(Name)]
public sealed class ProcessClusterGroup : ICollectionFixture<ProcessClusterFixture>
{
    public const string Name = "process cluster";
}

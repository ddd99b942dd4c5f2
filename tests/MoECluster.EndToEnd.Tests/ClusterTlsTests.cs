using System.Globalization;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Security;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;
using MoECluster.Testing;
using MoECluster.Wire;
using Orleans.Configuration;
using Orleans.Connections.Security;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// A cluster of its own for the intruders (one front-end silo, one expert silo, mutual TLS with the test run's
/// certificates): intruders that join would change its answers, so they must not share the common cluster.
/// </summary>
public sealed class TlsClusterFixture : IAsyncLifetime
{
    private readonly List<BackgroundProcess> _silos = [];

    public TempDirectory Dir { get; } = new("moecluster-tls-cluster-");

    public string ModelPath => Dir.File("lat");

    /// <summary>The same shape with other weights: what an intruder would serve.</summary>
    public string OtherWeightsPath => Dir.File("lat-other");

    public int[] Ports { get; } = FreePorts.Take(3);

    public int SiloPort => Ports[0];

    public int GatewayPort => Ports[1];

    public string Url => $"http://127.0.0.1:{Ports[2].ToString(CultureInfo.InvariantCulture)}";

    public GatewayClient Client { get; private set; } = null!;

    public BackgroundProcess Frontend => _silos[0];

    /// <summary>How long the legitimate expert silo took to join (from its start until /health counted it).</summary>
    public TimeSpan ExpertJoinTime { get; private set; }

    public static readonly string[] Common = ["--shards", "2", "--wire", "fp32", "--backend", "managed"];

    public async Task InitializeAsync()
    {
        SyntheticCheckpoint.Write(ModelPath, ModelPresets.Get("tiny").Build(experts: 8), 41);
        SyntheticCheckpoint.Write(OtherWeightsPath, ModelPresets.Get("tiny").Build(experts: 8), 42);
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        _silos.Add(BackgroundProcess.Moecluster([
            "silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(SiloPort), "--gateway-port", P(GatewayPort), "--urls", Url,
            "--model", $"lat={ModelPath}", .. Common]));
        var http = new HttpClient { BaseAddress = new Uri(Url), Timeout = TimeSpan.FromSeconds(60) };
        Client = new GatewayClient(http);
        await ProcessWait.UntilAsync("front-end silo", async () => (await http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), _silos);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        _silos.Add(Expert("expert-1", FreePorts.Take(1)[0], ModelPath));
        await ProcessWait.UntilAsync("the expert silo", async () => await ExpertSilosAsync() == 1, TimeSpan.FromSeconds(90), _silos);
        ExpertJoinTime = clock.Elapsed;
    }

    public BackgroundProcess Expert(string name, int siloPort, string model, IReadOnlyDictionary<string, string>? environment = null, string? urls = null)
    {
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        string[] args = ["silo", "--role", "expert", "--name", name, "--silo-port", P(siloPort), "--gateway-port", "0",
            "--primary", $"127.0.0.1:{P(SiloPort)}", "--model", $"lat={model}", .. Common, .. urls is null ? Array.Empty<string>() : ["--urls", urls]];
        return environment is null ? BackgroundProcess.Moecluster(args) : BackgroundProcess.Moecluster(environment, args);
    }

    public async Task<int?> ExpertSilosAsync() => (await Client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>();

    public async Task<int?> ActiveSilosAsync() => (await Client.HealthAsync()).Body?["active_silos"]?.GetValue<int>();

    public Task DisposeAsync()
    {
        foreach (var silo in _silos.AsEnumerable().Reverse())
        {
            silo.Stop(TimeSpan.FromSeconds(10));
            silo.Dispose();
        }

        Dir.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>
/// Mutual TLS on every Orleans connection: a silo or an Orleans client without the cluster's certificate can neither
/// join nor call a grain, and the cluster's answers stay those of the in-process forward.
/// </summary>
public sealed class ClusterTlsTests(TlsClusterFixture cluster) : IClassFixture<TlsClusterFixture>
{
    /// <summary>
    /// Longer than a legitimate join takes here: 20 s (a join took about 5 s on a quiet machine, 6.3 s in the issue's
    /// report), or 1.5 times what the fixture's own expert took when the machine is busy (up to 60 s).
    /// </summary>
    private TimeSpan JoinWindow => TimeSpan.FromSeconds(Math.Clamp(1.5 * cluster.ExpertJoinTime.TotalSeconds, 20, 60));

    private async Task<(float[] X, float[] Expected, int D, int Layer)> SampleAsync()
    {
        using var reference = MoeModel.Open(cluster.ModelPath, MoECluster.Cluster.Hosting.ComputeBackends.Create("managed", out _));
        var served = (await cluster.Client.ModelsAsync()).Single();
        int d = served.HiddenSize, layer = served.MoeLayers[0];
        var rng = DeterministicRandom.For(3, "tls-intruder");
        float[] x = [.. Enumerable.Range(0, 32 * d).Select(_ => (float)rng.NextGaussian())];
        return (x, reference.ForwardLayer(layer, x, 32), d, layer);
    }

    private async Task<float[]> ForwardAsync(float[] x, int d, int layer) =>
        (await cluster.Client.ForwardAsync("lat", layer, x, 32, d, "fp32")).HiddenStates.Decode();

    /// <summary>Watches the cluster for <see cref="JoinWindow"/>: fails as soon as a third silo shows up in the membership.</summary>
    private async Task AssertNoSiloJoinsAsync(BackgroundProcess intruder, string what)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < JoinWindow)
        {
            int? active = await cluster.ActiveSilosAsync();
            int? experts = await cluster.ExpertSilosAsync();
            Assert.True(active == 2 && experts == 1,
                $"{what} joined after {clock.Elapsed.TotalSeconds:F1} s: {active} active silos, {experts} expert silos (a legitimate expert joined in {cluster.ExpertJoinTime.TotalSeconds:F1} s)\n{intruder.Output}");
            await Task.Delay(500);
        }

        var stats = await cluster.Client.StatsAsync();
        Assert.Equal(["expert-1", "frontend"], stats["silos"]!.AsArray().Select(s => s!["name"]!.GetValue<string>()).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task A_silo_with_a_certificate_from_another_CA_cannot_join_and_the_answers_stay_the_same()
    {
        var (x, expected, d, layer) = await SampleAsync();
        float[] before = await ForwardAsync(x, d, layer);
        Assert.True(RelativeError.Of(before, expected) <= 1e-5, $"before: relative error {RelativeError.Of(before, expected):E2}");

        using var other = new TempDirectory("moecluster-tls-other-");
        var foreign = TestTls.CreateIn(other.Path);
        using var intruder = cluster.Expert("intruder", FreePorts.Take(1)[0], cluster.OtherWeightsPath, foreign.Environment);
        await AssertNoSiloJoinsAsync(intruder, "a silo with another CA's certificate");

        float[] after = await ForwardAsync(x, d, layer);
        Assert.True(RelativeError.Of(after, expected) <= 1e-5, $"after: relative error {RelativeError.Of(after, expected):E2} to the in-process forward");
        Assert.True(RelativeError.Of(after, before) <= 1e-6, $"the answer changed: {RelativeError.Of(after, before):E2}");

        // The front-end refused it, naming the CA and why; the intruder refused the front-end's certificate too.
        using var foreignCa = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(other.Path, ClusterTlsOptions.CaFileName)));
        Assert.Contains($"(issuer {foreignCa.Subject}): it is not issued by the cluster's CA", cluster.Frontend.Output, StringComparison.Ordinal);
        Assert.Contains("TLS: refused the silo connected to", intruder.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_silo_with_TLS_turned_off_cannot_join_and_says_TLS_is_off()
    {
        var (x, expected, d, layer) = await SampleAsync();
        using var intruder = cluster.Expert("plain", FreePorts.Take(1)[0], cluster.OtherWeightsPath, new Dictionary<string, string> { ["MoECluster__Tls__Enabled"] = "false" });
        await AssertNoSiloJoinsAsync(intruder, "a silo with TLS off");
        Assert.Contains("TLS is OFF (MoECluster:Tls:Enabled=false)", intruder.Output, StringComparison.Ordinal);
        float[] after = await ForwardAsync(x, d, layer);
        Assert.True(RelativeError.Of(after, expected) <= 1e-5, $"relative error {RelativeError.Of(after, expected):E2} to the in-process forward");
    }

    [Fact]
    public async Task An_Orleans_client_without_TLS_cannot_call_a_grain()
    {
        string? failure = await CallRouterAsync(_ => { });
        Assert.NotNull(failure);
    }

    [Fact]
    public async Task An_Orleans_client_with_TLS_but_no_certificate_cannot_call_a_grain()
    {
        using var tls = TestTls.Cluster.Load();
        string? failure = await CallRouterAsync(c => c.Configure<ClientConnectionOptions>(o => o.ConfigureConnection(b => b.UseClientTls(new TlsOptions
        {
            ClientCertificateMode = RemoteCertificateMode.NoCertificate,
            RemoteCertificateValidation = (certificate, _, _) => tls.IsTrusted(certificate, ClusterTls.ServerAuthOid, out _),
        }))));
        Assert.NotNull(failure);
    }

    [Fact]
    public async Task An_Orleans_client_with_a_certificate_from_another_CA_cannot_call_a_grain()
    {
        using var other = new TempDirectory("moecluster-tls-client-");
        var foreign = TestTls.CreateIn(other.Path);
        using var mine = foreign.Load();
        using var clusterTls = TestTls.Cluster.Load();

        // It trusts the cluster's CA (so it is the silo that refuses it) and presents its own certificate.
        string? failure = await CallRouterAsync(c => c.Configure<ClientConnectionOptions>(o => o.ConfigureConnection(b => b.UseClientTls(new TlsOptions
        {
            LocalCertificate = mine.Certificate,
            ClientCertificateMode = RemoteCertificateMode.RequireCertificate,
            RemoteCertificateValidation = (certificate, _, _) => clusterTls.IsTrusted(certificate, ClusterTls.ServerAuthOid, out _),
        }))));
        Assert.NotNull(failure);
        Assert.Contains($"(issuer {mine.Authorities[0].Subject}): it is not issued by the cluster's CA", cluster.Frontend.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_Orleans_client_with_the_clusters_certificate_calls_the_router()
    {
        using var tls = TestTls.Cluster.Load();
        string? failure = await CallRouterAsync(c => c.UseClusterTls(tls));
        Assert.Null(failure);
    }

    /// <summary>Starts an Orleans client on the gateway port and sends one forward through the router; null on success, else what failed.</summary>
    private async Task<string?> CallRouterAsync(Action<IClientBuilder> configure)
    {
        var (x, expected, _, layer) = await SampleAsync();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(c =>
        {
            c.UseLocalhostClustering(cluster.GatewayPort, serviceId: "moecluster", clusterId: "moecluster");
            configure(c);
        });
        using var host = builder.Build();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await host.StartAsync(timeout.Token);
            var reply = await host.Services.GetRequiredService<IClusterClient>().GetGrain<IMoeRouterGrain>("lat")
                .Forward(new ForwardCall(layer, x, 32, WireDType.F32)).WaitAsync(TimeSpan.FromSeconds(60));
            double err = RelativeError.Of(reply.Hidden, expected);
            Assert.True(err <= 1e-5, $"relative error {err:E2}");
            return null;
        }
        catch (Exception e) when (e is not Xunit.Sdk.XunitException)
        {
            return $"{e.GetType().Name}: {e.Message}";
        }
        finally
        {
            try
            {
                using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await host.StopAsync(stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or OrleansException or ObjectDisposedException)
            {
            }
        }
    }
}

using System.Globalization;
using MoECluster.Gateway;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// A front-end silo as a launcher starts it (watching a parent process, here the test process, with
/// <c>--parent-pid</c>) under an open-file limit of <see cref="OpenFileLimit"/> (<c>prlimit</c>; 4096 unless
/// MOECLUSTER_FRONTEND_NOFILE says otherwise), with the gateway's default limits, and one expert silo; the tiny
/// LatentMoE model ("lat") and its standard twin ("std"), 16 experts in 4 shards per layer.
/// </summary>
public sealed class BoundedFrontendFixture : IAsyncLifetime
{
    private readonly List<BackgroundProcess> _silos = [];

    public TempDirectory Dir { get; } = new("moecluster-bounded-");

    public static int OpenFileLimit { get; } = int.TryParse(Environment.GetEnvironmentVariable("MOECLUSTER_FRONTEND_NOFILE"), NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : 4096;

    public string Url { get; private set; } = string.Empty;

    public int Port { get; private set; }

    public HttpClient Http { get; private set; } = null!;

    public GatewayClient Client { get; private set; } = null!;

    public BackgroundProcess Frontend => _silos[0];

    public IReadOnlyList<BackgroundProcess> Silos => _silos;

    public async Task InitializeAsync()
    {
        string lat = Dir.File("lat"), std = Dir.File("std");
        SyntheticCheckpoint.Write(lat, ModelPresets.Get("tiny").Build(experts: 16), 21);
        SyntheticCheckpoint.Write(std, ModelPresets.Get("tiny-standard").Build(experts: 16), 22);
        int[] ports = FreePorts.Take(4);
        Port = ports[3];
        Url = $"http://127.0.0.1:{Port}";
        string P(int p) => p.ToString(CultureInfo.InvariantCulture);
        string[] models = ["--model", $"lat={lat}", "--model", $"std={std}", "--shards", "4"];
        string limit = $"--nofile={OpenFileLimit}:{OpenFileLimit}";
        _silos.Add(BackgroundProcess.Start("prlimit", [limit, "dotnet", ChildProcess.CliDll,
            "silo", "--role", "frontend", "--name", "frontend", "--silo-port", P(ports[0]), "--gateway-port", P(ports[1]), "--urls", Url,
            "--parent-pid", P(Environment.ProcessId), .. models]));
        Http = new HttpClient { BaseAddress = new Uri(Url), Timeout = TimeSpan.FromMinutes(2) };
        Client = new GatewayClient(Http);
        await ProcessWait.UntilAsync("front-end silo", async () => (await Http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), _silos);
        _silos.Add(BackgroundProcess.Moecluster([
            "silo", "--role", "expert", "--name", "expert-1", "--silo-port", P(ports[2]), "--gateway-port", "0",
            "--primary", $"127.0.0.1:{P(ports[0])}", .. models]));
        await ProcessWait.UntilAsync("one expert silo", async () => (await Client.HealthAsync()).Body?["expert_silos"]?.GetValue<int>() == 1, TimeSpan.FromSeconds(90), _silos);
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

    /// <summary>A field of the front-end's /proc/PID/status, in KiB (VmRSS, VmHWM).</summary>
    public long StatusKiB(string field) => Frontend.StatusKiB(field);

    /// <summary>Resets the front-end's peak resident size (VmHWM) to its current one (Linux: "5" into clear_refs).</summary>
    public void ResetPeakMemory() => File.WriteAllText($"/proc/{Frontend.Id.ToString(CultureInfo.InvariantCulture)}/clear_refs", "5");
}

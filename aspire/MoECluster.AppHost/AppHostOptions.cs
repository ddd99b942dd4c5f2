using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Configuration;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Presets;

namespace MoECluster.AppHost;

/// <summary>
/// What the AppHost starts, bound from the configuration section <c>AppHost</c>: appsettings.json beside the AppHost,
/// then environment variables (<c>AppHost__Replicas=3</c>), then the command line (<c>--replicas 3</c>).
/// </summary>
public sealed class AppHostOptions
{
    public const string Section = "AppHost";

    /// <summary>Model pair to generate (if missing) and serve: tiny, super or paper16b.</summary>
    public string Preset { get; set; } = "super";

    /// <summary>Routed experts per layer (null: the preset's).</summary>
    public int? Experts { get; set; }

    public int Layers { get; set; } = 1;

    /// <summary>Expert silo processes.</summary>
    public int Replicas { get; set; } = 2;

    /// <summary>The gateway's HTTP port.</summary>
    public int Port { get; set; } = 8080;

    /// <summary>The front-end silo's Orleans port; expert silo i uses this + i.</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>The front-end silo's Orleans client gateway port.</summary>
    public int GatewayPort { get; set; } = 30000;

    public string ModelsDir { get; set; } = "models";

    public string Backend { get; set; } = "auto";

    public int Shards { get; set; } = 4;

    /// <summary>The silos' default wire type, both directions (<c>silo --wire</c>); null: theirs (bf16).</summary>
    public string? Wire { get; set; }

    /// <summary>The silos' default wire type of the dispatch direction, over <see cref="Wire"/> (<c>silo --wire-dispatch</c>).</summary>
    public string? WireDispatch { get; set; }

    /// <summary>The silos' default wire type of the combine direction, over <see cref="Wire"/> (<c>silo --wire-combine</c>).</summary>
    public string? WireCombine { get; set; }

    /// <summary>Run a redis-server and use Orleans' Redis clustering.</summary>
    public bool Redis { get; set; }

    /// <summary>The Aspire dashboard's HTTP port; its OTLP endpoint (where every silo sends logs, traces, metrics) is the next one.</summary>
    public int DashboardPort { get; set; } = 18888;

    /// <summary>How long the warm-up waits for the expert silos to join.</summary>
    public double StartupTimeoutSeconds { get; set; } = 120;

    /// <summary>
    /// Parses the command line into configuration overrides, binds the <c>AppHost</c> section and checks it. Prints
    /// --help, and bad input as one line on stderr (exit code 2); <see cref="ParsedOptions.Options"/> is null then.
    /// </summary>
    public static ParsedOptions Parse(IDistributedApplicationBuilder builder, string[] args, TextWriter output, TextWriter error)
    {
        var preset = new Option<string?>("--preset") { Description = "Model pair to generate (if missing) and serve: tiny, super (Nemotron-3 Super widths; the default) or paper16b." };
        preset.AcceptOnlyFromAmong([.. ModelPairs.Names]);
        var experts = new Option<int?>("--experts") { Description = "Routed experts per layer of the pair (default: the preset's; 64 for super)." };
        var layers = new Option<int?>("--layers") { Description = "MoE layers of the pair (default 1)." };
        var replicas = new Option<int?>("--replicas", "--expert-silos") { Description = "Expert silo processes, expert-1 .. expert-n (default 2)." };
        var port = new Option<int?>("--port") { Description = "HTTP port of the gateway on the front-end silo (default 8080)." };
        var siloPort = new Option<int?>("--silo-port") { Description = "Orleans port of the front-end silo; expert silo i uses this + i (default 11111)." };
        var gatewayPort = new Option<int?>("--gateway-port") { Description = "Orleans client gateway port of the front-end silo (default 30000)." };
        var modelsDir = new Option<string?>("--models-dir") { Description = "Where the models are generated and reused (default: models/ of the current directory)." };
        var backend = new Option<string?>("--backend") { Description = $"Compute on the expert silos: {ComputeBackends.Description}; default auto." };
        backend.AcceptOnlyFromAmong([.. ComputeBackends.Names]);
        var shards = new Option<int?>("--shards") { Description = "Expert shards per MoE layer (default 4)." };
        var wire = new Option<string?>("--wire") { Description = $"The silos' default payload element type between router and shards, both directions: {MoECluster.Wire.WireCodecs.NameList} (default {MoECluster.Wire.WireCodecs.Default.Name})." };
        var wireDispatch = new Option<string?>("--wire-dispatch") { Description = $"The silos' default element type of the routed rows (router -> shards), over --wire: {MoECluster.Wire.WireCodecs.NameList}." };
        var wireCombine = new Option<string?>("--wire-combine") { Description = $"The silos' default element type of the partial sums (shards -> router), over --wire: {MoECluster.Wire.WireCodecs.NameList}." };
        foreach (var option in new[] { wire, wireDispatch, wireCombine })
        {
            option.AcceptOnlyFromAmong([.. MoECluster.Wire.WireCodecs.Names]);
        }

        var redis = new Option<bool>("--redis") { Description = "Start a redis-server and use Orleans' Redis clustering instead of localhost clustering." };
        var dashboardPort = new Option<int?>("--dashboard-port") { Description = "HTTP port of the Aspire dashboard; its OTLP endpoint is the next port (default 18888)." };
        var startupTimeout = new Option<double?>("--startup-timeout") { Description = "Seconds the warm-up waits for the expert silos to join (default 120)." };
        var root = new RootCommand(
            "The .NET Aspire AppHost of MoECluster: the model pair (generated if missing), the front-end silo with the HTTP gateway, "
            + "expert silos expert-1..n, optionally Redis, the warm-up and an on-demand load run, orchestrated by Aspire (DCP) with the Aspire dashboard; Ctrl+C stops every process.")
        {
            preset, experts, layers, replicas, port, siloPort, gatewayPort, modelsDir, backend, shards, wire, wireDispatch, wireCombine, redis, dashboardPort, startupTimeout,
        };

        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            string message = string.Join(' ', parsed.Errors[0].Message.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            error.WriteLine($"moecluster-apphost: error: {message} (see --help)");
            return new ParsedOptions(null, 2);
        }

        bool run = false;
        root.SetAction(_ =>
        {
            run = true;
            return 0;
        });
        int code = parsed.Invoke(new InvocationConfiguration { Output = output, Error = error, ProcessTerminationTimeout = null });
        if (!run)
        {
            return new ParsedOptions(null, code);
        }

        static string? Text<T>(T? value) => value switch
        {
            null => null,
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => value.ToString(),
        };

        var flags = new Dictionary<string, string?>
        {
            [$"{Section}:Preset"] = parsed.GetValue(preset),
            [$"{Section}:Experts"] = Text(parsed.GetValue(experts)),
            [$"{Section}:Layers"] = Text(parsed.GetValue(layers)),
            [$"{Section}:Replicas"] = Text(parsed.GetValue(replicas)),
            [$"{Section}:Port"] = Text(parsed.GetValue(port)),
            [$"{Section}:SiloPort"] = Text(parsed.GetValue(siloPort)),
            [$"{Section}:GatewayPort"] = Text(parsed.GetValue(gatewayPort)),
            [$"{Section}:ModelsDir"] = parsed.GetValue(modelsDir),
            [$"{Section}:Backend"] = parsed.GetValue(backend),
            [$"{Section}:Shards"] = Text(parsed.GetValue(shards)),
            [$"{Section}:Wire"] = parsed.GetValue(wire),
            [$"{Section}:WireDispatch"] = parsed.GetValue(wireDispatch),
            [$"{Section}:WireCombine"] = parsed.GetValue(wireCombine),
            [$"{Section}:Redis"] = parsed.GetResult(redis) is { Implicit: false } ? Text(parsed.GetValue(redis)) : null,
            [$"{Section}:DashboardPort"] = Text(parsed.GetValue(dashboardPort)),
            [$"{Section}:StartupTimeoutSeconds"] = Text(parsed.GetValue(startupTimeout)),
        };
        builder.Configuration.AddInMemoryCollection(flags.Where(kv => kv.Value is not null));

        AppHostOptions options;
        try
        {
            options = builder.Configuration.GetSection(Section).Get<AppHostOptions>() ?? new AppHostOptions();
            options.Validate();
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or FormatException)
        {
            error.WriteLine($"moecluster-apphost: error: {e.Message.ReplaceLineEndings(" ")}");
            return new ParsedOptions(null, 2);
        }

        return new ParsedOptions(options, 0);
    }

    /// <summary>The standard + latent models served, under <see cref="ModelsDir"/>.</summary>
    public IReadOnlyList<PairMember> ServedModels() => ModelPairs.Plan(Preset, Experts, Layers, ModelsDir);

    public void Validate()
    {
        static void Range(string name, double value, double min, double max)
        {
            if (value < min || value > max)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{name} = {value} is out of range: must be {min}..{max}"));
            }
        }

        if (!ModelPairs.Names.Contains(Preset))
        {
            throw new ArgumentException($"preset '{Preset}' is not one of {string.Join(", ", ModelPairs.Names)}");
        }

        if (!ComputeBackends.Names.Contains(Backend))
        {
            throw new ArgumentException($"backend '{Backend}' is not one of {string.Join(", ", ComputeBackends.Names)}");
        }

        // Names from configuration (AppHost__Wire …) are checked as the command line's are, by the codec registry.
        if (!MoECluster.Wire.WirePair.TryResolve(Wire, WireDispatch, WireCombine, MoECluster.Wire.WirePair.Default, out _, out string? wireError, "wire dispatch", "wire combine"))
        {
            throw new ArgumentException(wireError);
        }

        Range("replicas", Replicas, 1, 32);
        Range("layers", Layers, 1, 200);
        Range("shards", Shards, 1, 4096);
        Range("port", Port, 1, 65535);
        Range("silo port", SiloPort, 1024, 65535 - Replicas);
        Range("gateway port", GatewayPort, 1024, 65535);
        Range("dashboard port", DashboardPort, 1024, 65534);
        Range("startup timeout", StartupTimeoutSeconds, 1, 24 * 3600);
        int[] ports = [Port, GatewayPort, DashboardPort, DashboardPort + 1, .. Enumerable.Range(SiloPort, Replicas + 1)];
        if (ports.Distinct().Count() != ports.Length)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"ports overlap: gateway HTTP {Port}, Orleans gateway {GatewayPort}, dashboard {DashboardPort} and OTLP {DashboardPort + 1}, silos {SiloPort}..{SiloPort + Replicas}"));
        }

        if (Experts is int n)
        {
            Range("experts", n, 1, 65536);
        }

        if (string.IsNullOrWhiteSpace(ModelsDir))
        {
            throw new ArgumentException("the models directory is empty");
        }

        try
        {
            ServedModels();
        }
        catch (MoECluster.Model.Configuration.ModelConfigException e)
        {
            throw new ArgumentException(e.Message, e);
        }
    }
}

/// <summary>Bound options, or the exit code to return at once (after --help, or bad input).</summary>
public sealed record ParsedOptions(AppHostOptions? Options, int ExitCode);

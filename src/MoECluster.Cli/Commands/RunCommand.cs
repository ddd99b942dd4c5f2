using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoECluster.Cli.LocalCluster;
using MoECluster.Model.Presets;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster run</c>: a local cluster as separate processes (one front-end silo with the gateway, N expert
/// silos), the preset pair of models (or --model DIR), sample traffic through each model with measured and
/// predicted routed bytes, and a check against the in-process forward. Serves until Ctrl+C, or stops after the
/// sample traffic with --once.
/// </summary>
internal static class RunCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var preset = new Option<string>("--preset") { Description = "Model pair to generate and serve: tiny, super (Nemotron-3 Super widths) or paper16b.", DefaultValueFactory = _ => "super" };
        preset.AcceptOnlyFromAmong([.. ModelPairs.Names]);
        var experts = new Option<int?>("--experts") { Description = "Routed experts per layer of the generated pair (default: the preset's; 64 for super)." };
        var layers = new Option<int>("--layers") { Description = "MoE layers of the generated pair.", DefaultValueFactory = _ => 1 };
        var model = new Option<string?>("--model") { Description = "Serve this model directory instead of a generated pair." };
        var modelsDir = new Option<string>("--models-dir") { Description = "Where generated models are written (and reused).", DefaultValueFactory = _ => "models" };
        var expertSilos = new Option<int>("--expert-silos") { Description = "Expert silo processes.", DefaultValueFactory = _ => 2 };
        var shards = new Option<int>("--shards") { Description = "Expert shards per MoE layer.", DefaultValueFactory = _ => 4 };
        var wire = WireOption.Create("Payload element type between router and shards.");
        var tokens = new Option<int>("--tokens") { Description = "Tokens in the sample batch.", DefaultValueFactory = _ => 128 };
        var urls = new Option<string>("--urls") { Description = "Where the gateway listens.", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var siloPort = new Option<int>("--silo-port") { Description = "First silo port (silo i uses port + i).", DefaultValueFactory = _ => 11111 };
        var gatewayPort = new Option<int>("--gateway-port") { Description = "Orleans client gateway port of the front-end silo.", DefaultValueFactory = _ => 30000 };
        var once = new Option<bool>("--once") { Description = "Send the sample traffic, report, stop everything." };
        var report = new Option<string?>("--report") { Description = "Write the sample traffic report as JSON to this file." };
        var stack = new Option<bool>("--stack") { Description = "Also send the sample batch through the whole MoE stack." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the generated models and of the sample batch.", DefaultValueFactory = _ => 1UL };
        var backend = new Option<string>("--backend") { Description = $"Compute on the silos: {MoECluster.Cluster.Hosting.ComputeBackends.Description}.", DefaultValueFactory = _ => "auto" };
        backend.AcceptOnlyFromAmong([.. MoECluster.Cluster.Hosting.ComputeBackends.Names]);
        var sweep = new Option<string?>("--wire-sweep")
        {
            Description = $"Send the sample traffic once per dispatch/combine pair of this comma-separated list (of {MoECluster.Wire.WireCodecs.NameList}) and print the bytes and errors of each; the silos' default stays --wire.",
        };
        var inputs = new Option<string>("--inputs")
        {
            Description = $"Sample inputs, comma-separated: {RunSettings.GaussianInput} (N(0, 1)) and/or {RunSettings.OutlierInput} (one column in 512 is 50 times larger).",
            DefaultValueFactory = _ => RunSettings.GaussianInput,
        };
        var skew = new Option<string?>("--gate-skew") { Description = "Generate the pair with skewed routing (zipf:S, as init-model --gate-skew), in directories of its own." };
        var dump = new Option<string?>("--dump") { Description = "Write each sample input and layer output as safetensors (hidden_states, F32) into this folder." };
        var verbose = new Option<bool>("--verbose") { Description = "Stream every line the silos log." };
        var redundant = new Option<int?>("--redundant-experts") { Description = "Replicas beyond one per expert a re-plan (POST /v1/admin/rebalance) may add per MoE layer (default: an eighth of the layer's experts)." };
        var rebalanceEvery = new Option<double?>("--rebalance-every") { Description = "Re-plan expert placement from measured routing every this many seconds (default: only on POST /v1/admin/rebalance)." };
        var replicaBytes = new Option<string?>("--replica-bytes-per-silo") { Description = "The replica budget as bytes each expert silo may hold (e.g. 512MiB), instead of --redundant-experts." };
        var pin = new Option<bool>("--pin-expert-cores") { Description = "Run expert silo i on core (i - 1) mod cores only (taskset -c); the front-end floats. Silos that share cores hide imbalance." };
        var apiKey = ApiKeyOption.Create();
        apiKey.Description = $"API key the sample traffic sends, for when the silos' environment turns gateway keys on (MoECluster__Gateway__ApiKeys__0 or ApiKeysFile); default: ${ApiKeyOption.EnvironmentVariable}.";
        var command = new Command("run", "Start a local cluster (front-end silo + gateway, expert silos), send sample traffic, show routed bytes standard vs latent.")
        {
            preset, experts, layers, model, modelsDir, expertSilos, shards, wire.Wire, wire.Dispatch, wire.Combine, tokens, urls, siloPort, gatewayPort, once, report, stack, seed, verbose, backend, apiKey, sweep, inputs, dump, skew, pin, redundant, rebalanceEvery, replicaBytes,
        };
        command.SetAction((parse, cancel) => VerbRunner.GuardAsync("run", error, async () =>
        {
            var settings = new RunSettings(
                parse.GetValue(preset)!, parse.GetValue(experts), parse.GetValue(layers), parse.GetValue(model), parse.GetValue(modelsDir)!,
                parse.GetValue(expertSilos), parse.GetValue(shards), wire.Pair(parse), parse.GetValue(tokens), parse.GetValue(urls)!,
                parse.GetValue(siloPort), parse.GetValue(gatewayPort), parse.GetValue(once), parse.GetValue(report), parse.GetValue(stack),
                parse.GetValue(seed), parse.GetValue(verbose), parse.GetValue(backend)!, ApiKeyOption.Resolve(parse.GetValue(apiKey)))
            {
                WireSweep = RunSettings.ParseSweep(parse.GetValue(sweep)),
                SampleInputs = RunSettings.ParseInputs(parse.GetValue(inputs)!),
                Dump = parse.GetValue(dump),
                GateSkew = parse.GetValue(skew) is string text ? InitModelCommand.ParseSkew(text) : null,
                PinExpertCores = parse.GetValue(pin),
                RedundantExperts = parse.GetValue(redundant),
                RebalanceEverySeconds = parse.GetValue(rebalanceEvery),
                ReplicaBytesPerSilo = parse.GetValue(replicaBytes) is string size ? ByteSizes.Parse(size, "--replica-bytes-per-silo") : null,
            };
            settings.Validate();
            return await new LocalClusterRun(settings, output, error).RunAsync(cancel);
        }));
        return command;
    }
}

internal sealed record RunSettings(
    string Preset, int? Experts, int Layers, string? Model, string ModelsDir, int ExpertSilos, int Shards, MoECluster.Wire.WirePair Wire, int Tokens,
    string Urls, int SiloPort, int GatewayPort, bool Once, string? Report, bool Stack, ulong Seed, bool Verbose, string Backend, string? ApiKey = null)
{
    public const string GaussianInput = "gaussian";
    public const string OutlierInput = "outliers";

    /// <summary>Pairs the sample traffic is sent in, one after the other (empty: <see cref="Wire"/> alone).</summary>
    public IReadOnlyList<MoECluster.Wire.WirePair> WireSweep { get; init; } = [];

    /// <summary>Kinds of sample input (<see cref="GaussianInput"/>, <see cref="OutlierInput"/>).</summary>
    public IReadOnlyList<string> SampleInputs { get; init; } = [GaussianInput];

    /// <summary>Where sample inputs and layer outputs are written, or null.</summary>
    public string? Dump { get; init; }

    /// <summary>Skewed routing for the generated pair, or null.</summary>
    public GateSkew? GateSkew { get; init; }

    /// <summary>Expert silo i runs on core (i - 1) mod cores only (taskset -c).</summary>
    public bool PinExpertCores { get; init; }

    /// <summary>--redundant-experts, or null.</summary>
    public int? RedundantExperts { get; init; }

    /// <summary>--rebalance-every in seconds, or null.</summary>
    public double? RebalanceEverySeconds { get; init; }

    /// <summary>--replica-bytes-per-silo, or null.</summary>
    public long? ReplicaBytesPerSilo { get; init; }

    public static IReadOnlyList<MoECluster.Wire.WirePair> ParseSweep(string? text)
    {
        if (text is null)
        {
            return [];
        }

        var pairs = new List<MoECluster.Wire.WirePair>();
        foreach (string item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            pairs.Add(MoECluster.Wire.WirePair.TryParse(item, out var pair, out string? problem)
                ? pair
                : throw new UsageException($"--wire-sweep: {problem}"));
        }

        return pairs.Count > 0 ? pairs.DistinctBy(p => p.Text).ToList() : throw new UsageException("--wire-sweep names no pair");
    }

    public static IReadOnlyList<string> ParseInputs(string text)
    {
        string[] kinds = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (string kind in kinds)
        {
            if (kind is not (GaussianInput or OutlierInput))
            {
                throw new UsageException($"--inputs: '{kind}' is not {GaussianInput} or {OutlierInput}");
            }
        }

        return kinds.Length > 0 ? kinds.Distinct().ToList() : throw new UsageException("--inputs names no input");
    }

    public void Validate()
    {
        static void Range(string name, int value, int min, int max)
        {
            if (value < min || value > max)
            {
                throw new UsageException($"{name} = {value} is out of range: must be {min}..{max}");
            }
        }

        Range("--expert-silos", ExpertSilos, 1, 32);
        Range("--shards", Shards, 1, 4096);
        Range("--tokens", Tokens, 1, 65536);
        Range("--layers", Layers, 1, 200);
        Range("--silo-port", SiloPort, 1024, 65000);
        Range("--gateway-port", GatewayPort, 1024, 65535);
        if (!Uri.TryCreate(Urls, UriKind.Absolute, out _))
        {
            throw new UsageException($"--urls {Urls} is not a URL");
        }

        if (RedundantExperts is < 0)
        {
            throw new UsageException($"--redundant-experts = {RedundantExperts} is out of range: must be 0 or more");
        }

        if (ReplicaBytesPerSilo is long bytes && RedundantExperts is not null)
        {
            throw new UsageException($"--replica-bytes-per-silo {bytes} and --redundant-experts {RedundantExperts}: give the budget one way, not both");
        }

        if (RebalanceEverySeconds is double every && every is not (>= 1 and <= 86_400))
        {
            throw new UsageException($"--rebalance-every = {every.ToString(CultureInfo.InvariantCulture)} is out of range: must be 1..86400 seconds");
        }

        if (PinExpertCores && !OperatingSystem.IsLinux())
        {
            throw new UsageException("--pin-expert-cores runs the expert silos under taskset, which only Linux has");
        }
    }

    public IReadOnlyList<PairMember> GeneratedModels() => Model is null ? ModelPairs.Plan(Preset, Experts, Layers, ModelsDir, GateSkew) : [];

    public static string Number(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
}

/// <summary>The JSON report of a sample-traffic run.</summary>
internal static class RunReport
{
    public static void Write(string path, JsonObject report)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllText(full, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}

using System.CommandLine;
using MoECluster.Cli.Load;
using MoECluster.ServiceDefaults;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster load</c>: load-tests a running cluster's gateway (open loop: gamma/Poisson arrivals at a rate or along
/// a ramp, optionally capped; or closed loop with C workers), latency histograms per model and overall, bytes per token of the standard and latent models. Exit 3
/// when the measured p99 exceeds <c>--slo-p99</c>. <c>--sweep</c> runs one step per load level and reports the
/// throughput–latency curve and the goodput (exit 3 when no step meets the SLO).
/// </summary>
internal static class LoadCommand
{
    public const int ExitSloMissed = 3;

    public static Command Create(TextWriter output, TextWriter error)
    {
        var url = new Option<string>("--url") { Description = "The gateway.", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var mode = new Option<string>("--mode") { Description = "open: Poisson (or --burstiness) arrivals at --rate (or a --ramp-up-strategy), latency from each intended start; closed: --concurrency workers back to back.", DefaultValueFactory = _ => LoadSettings.Closed };
        mode.AcceptOnlyFromAmong(LoadSettings.Open, LoadSettings.Closed);
        var rate = new Option<double>("--rate") { Description = "Open loop: requests per second.", DefaultValueFactory = _ => 10 };
        var concurrency = new Option<int>("--concurrency") { Description = "Closed loop: concurrent workers.", DefaultValueFactory = _ => 4 };
        var duration = new Option<double>("--duration") { Description = "Measured seconds.", DefaultValueFactory = _ => 30 };
        var warmup = new Option<double>("--warmup") { Description = "Seconds of warm-up before, not recorded.", DefaultValueFactory = _ => 3 };
        var tokens = new Option<string>("--tokens") { Description = "Tokens per request, or a list (1,8,64) drawn uniformly.", DefaultValueFactory = _ => "8" };
        var models = new Option<string?>("--models") { Description = "Model ids, comma-separated; requests alternate between them (default: every served model)." };
        var wire = WireOption.CreateOptional("Payload element type between router and shards (default: the cluster's).");
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file." };
        var html = new Option<string?>("--html") { Description = "Write a self-contained HTML report (inline SVG charts, works offline) to this file." };
        var slo = new Option<double?>("--slo-p99") { Description = "Exit code 3 when the measured p99 latency exceeds this many milliseconds (with --sweep: when no step meets it; the highest step that does gives the goodput)." };
        var sweep = new Option<string?>("--sweep") { Description = "Run one step per load level, one after another, each --warmup then --duration: worker counts (closed loop, e.g. 1,2,4,8,16) or rates per second (open loop), strictly rising; replaces --concurrency / --rate." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the inputs, arrivals and token counts.", DefaultValueFactory = _ => 1UL };
        var timeout = new Option<double>("--timeout") { Description = "Seconds before a request counts as failed.", DefaultValueFactory = _ => 30 };
        var apiKey = ApiKeyOption.Create();
        var header = new Option<string[]>("--header") { Description = "NAME=VALUE: an HTTP header sent with every request (repeatable); values are not written to the report.", Arity = ArgumentArity.ZeroOrMore };
        var maxConcurrency = new Option<int?>("--max-concurrency") { Description = "Open loop: at most this many requests in flight; the others wait (their latency still counts from the intended start)." };
        var burstiness = new Option<double>("--burstiness") { Description = "Open loop: gamma shape of the inter-arrival times, mean 1/rate (1: Poisson; < 1 burstier; > 1 more regular).", DefaultValueFactory = _ => 1 };
        var rampStrategy = new Option<string?>("--ramp-up-strategy") { Description = "Open loop: the rate rises over the measured window from --ramp-up-start-rps to --ramp-up-end-rps (the warm-up at the start rate); replaces --rate." };
        rampStrategy.AcceptOnlyFromAmong(RampUp.Linear, RampUp.Exponential);
        var rampStart = new Option<double?>("--ramp-up-start-rps") { Description = "Open loop: the ramp's first rate, requests per second." };
        var rampEnd = new Option<double?>("--ramp-up-end-rps") { Description = "Open loop: the ramp's last rate, requests per second." };
        var records = new Option<string?>("--records") { Description = "Write one JSON line per request to this file: intended, actual start and end (ms on the run's monotonic clock, start also in UTC), model, tokens, HTTP status, error." };
        var label = new Option<string?>("--label") { Description = "Free text recorded in the result's metadata." };
        var late = new Option<double>("--late-threshold") { Description = "Open loop: milliseconds after its intended start past which a request counts as started late.", DefaultValueFactory = _ => LoadSettings.DefaultLateThresholdMs };
        var command = new Command("load", "Load-test a running cluster's gateway: throughput, latency percentiles, bytes per token standard vs latent.")
        {
            url, mode, rate, concurrency, duration, warmup, tokens, models, wire.Wire, wire.Dispatch, wire.Combine, json, html, slo, sweep, seed, timeout, apiKey,
            header, maxConcurrency, burstiness, rampStrategy, rampStart, rampEnd, records, label, late,
        };
        command.SetAction((parse, cancel) => VerbRunner.GuardAsync("load", error, async () =>
        {
            var settings = new LoadSettings(
                parse.GetValue(url)!, parse.GetValue(mode)!, parse.GetValue(rate), parse.GetValue(concurrency), parse.GetValue(duration),
                parse.GetValue(warmup), LoadSettings.ParseTokens(parse.GetValue(tokens)!), LoadSettings.ParseModels(parse.GetValue(models)),
                wire.Choice(parse), parse.GetValue(json), parse.GetValue(html), parse.GetValue(slo), parse.GetValue(seed), parse.GetValue(timeout),
                "moecluster " + string.Join(' ', Redacted(parse.Tokens.Select(t => t.Value)).Select(Quoted)), ApiKeyOption.Resolve(parse.GetValue(apiKey)),
                LoadSettings.ParseSweep(parse.GetValue(sweep), parse.GetValue(mode)!))
            {
                Headers = LoadSettings.ParseHeaders(parse.GetValue(header), apiKey: ApiKeyOption.Resolve(parse.GetValue(apiKey)) is not null),
                MaxConcurrency = parse.GetValue(maxConcurrency),
                Burstiness = parse.GetValue(burstiness),
                RampUp = RampUp.Parse(parse.GetValue(rampStrategy), parse.GetValue(rampStart), parse.GetValue(rampEnd)),
                RecordsPath = parse.GetValue(records),
                Label = parse.GetValue(label),
                LateThresholdMs = parse.GetValue(late),
            };
            settings.Validate();

            // With OTEL_EXPORTER_OTLP_ENDPOINT set, every request is a client span whose trace continues in the cluster.
            using var telemetry = ServiceDefaultsExtensions.StartClientTelemetry("moecluster-load");
            return await new LoadRunner(settings, output, error).RunAsync(cancel);
        }));
        return command;
    }

    /// <summary>
    /// The command line as the report records it: the value of --api-key replaced, and the value of every --header
    /// (NAME=*** : a header may carry a credential), so no key reaches a file.
    /// </summary>
    internal static IEnumerable<string> Redacted(IEnumerable<string> tokens)
    {
        string? pending = null;
        foreach (string token in tokens)
        {
            if (pending is not null)
            {
                yield return pending == "--api-key" ? "***" : HeaderName(token) + "=***";
                pending = null;
            }
            else if (token is "--api-key" or "--header")
            {
                pending = token;
                yield return token;
            }
            else if (token.StartsWith("--api-key=", StringComparison.Ordinal))
            {
                yield return "--api-key=***";
            }
            else if (token.StartsWith("--header=", StringComparison.Ordinal))
            {
                yield return "--header=" + HeaderName(token["--header=".Length..]) + "=***";
            }
            else
            {
                yield return token;
            }
        }
    }

    /// <summary>A token with a space or a quote in single quotes (as a POSIX shell would take it back), others as they are.</summary>
    internal static string Quoted(string token) =>
        token.Length > 0 && !token.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"' or '\\' or '$' or '`') ? token : "'" + token.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static string HeaderName(string header) => header.IndexOf('=', StringComparison.Ordinal) is int eq and >= 0 ? header[..eq] : header;
}

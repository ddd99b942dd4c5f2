using System.CommandLine;
using MoECluster.Cli.Chaos;
using MoECluster.Cli.Load;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster chaos</c>: load on a running local cluster while its silo processes are killed, hung and stopped one at
/// a time (the kinds in turn, the victims at random; the first kill is the front-end's); every answer checked against the in-process forward. Exit 0 when no request
/// failed, no answer was wrong and the cluster was whole again after every fault; 1 otherwise. bench/chaos.sh runs it
/// against the main command's cluster.
/// </summary>
internal static class ChaosCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var url = new Option<string>("--url") { Description = "The gateway.", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var models = new Option<string[]>("--model") { Description = "A served model as ID=DIR (repeatable): requests go to it and its answers are checked against the in-process forward of DIR.", Required = true };
        var launcher = new Option<int?>("--launcher-pid") { Description = "Fault only the silo processes under this launcher (the AppHost, moecluster run); default: every moecluster silo process of this user." };
        var duration = new Option<double>("--duration") { Description = "Seconds of load under faults.", DefaultValueFactory = _ => 600 };
        var warmup = new Option<double>("--warmup") { Description = "Seconds of load before the first fault, not counted.", DefaultValueFactory = _ => 5 };
        var concurrency = new Option<int>("--concurrency") { Description = "Closed-loop workers.", DefaultValueFactory = _ => 4 };
        var tokens = new Option<string>("--tokens") { Description = "Tokens per request, or a list (1,8) drawn uniformly.", DefaultValueFactory = _ => "1,8" };
        var wire = WireOption.Create($"Payload element type between router and shards; the pair's tolerance (the larger of its directions') sets the check's ({ChaosSettings.ToleranceList}).");
        var faults = new Option<string>("--faults") { Description = "Fault kinds, taken in turn: kill (SIGKILL), hang (SIGSTOP, then SIGCONT), term (SIGTERM).", DefaultValueFactory = _ => "kill,hang,term" };
        var interval = new Option<double>("--fault-interval") { Description = "Mean seconds between one fault's recovery and the next fault.", DefaultValueFactory = _ => 30 };
        var hang = new Option<string>("--hang") { Description = "Seconds a hung silo stays stopped: MIN,MAX.", DefaultValueFactory = _ => "5,30" };
        var deadline = new Option<double>("--request-deadline") { Description = "Seconds a request may take, retries included, before it counts as failed.", DefaultValueFactory = _ => 90 };
        var recovery = new Option<double>("--recovery-timeout") { Description = "Seconds the cluster may take to be whole again after a fault.", DefaultValueFactory = _ => 120 };
        var backend = new Option<string>("--backend") { Description = "Compute backend of the in-process references (use the silos' own: a near-tie in the gate may route differently on another).", DefaultValueFactory = _ => "managed" };
        backend.AcceptOnlyFromAmong([.. MoECluster.Cluster.Hosting.ComputeBackends.Names]);
        var inputs = new Option<int>("--inputs") { Description = "Distinct inputs per (model, endpoint, token count), references computed before the run.", DefaultValueFactory = _ => 8 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the inputs, the faults and their victims.", DefaultValueFactory = _ => 1UL };
        var json = new Option<string?>("--json") { Description = "Write the report as JSON to this file." };
        var markdown = new Option<string?>("--markdown") { Description = "Write the report as Markdown to this file." };
        var apiKey = ApiKeyOption.Create();
        var command = new Command("chaos", "Load a running local cluster while killing, hanging and stopping its silos; check every answer against the in-process forward.")
        {
            url, models, launcher, duration, warmup, concurrency, tokens, wire.Wire, wire.Dispatch, wire.Combine, faults, interval, hang, deadline, recovery, backend, inputs, seed, json, markdown, apiKey,
        };
        command.SetAction((parse, cancel) => VerbRunner.GuardAsync("chaos", error, async () =>
        {
            var (hangMin, hangMax) = ChaosSettings.ParseRange("--hang", parse.GetValue(hang)!);
            var settings = new ChaosSettings(
                parse.GetValue(url)!, ChaosSettings.ParseModels(parse.GetValue(models) ?? []), parse.GetValue(duration), parse.GetValue(warmup),
                parse.GetValue(concurrency), LoadSettings.ParseTokens(parse.GetValue(tokens)!), wire.Pair(parse), parse.GetValue(seed),
                parse.GetValue(launcher), parse.GetValue(interval), hangMin, hangMax, ChaosSettings.ParseFaults(parse.GetValue(faults)!),
                parse.GetValue(deadline), parse.GetValue(recovery), parse.GetValue(backend)!, parse.GetValue(inputs), parse.GetValue(json),
                parse.GetValue(markdown), ApiKeyOption.Resolve(parse.GetValue(apiKey)),
                "moecluster " + string.Join(' ', LoadCommand.Redacted(parse.Tokens.Select(t => t.Value))));
            settings.Validate();
            return await new ChaosRunner(settings, output, error).RunAsync(cancel);
        }));
        return command;
    }
}

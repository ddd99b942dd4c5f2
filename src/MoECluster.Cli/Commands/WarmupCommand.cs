using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using MoECluster.Gateway;

namespace MoECluster.Cli.Commands;

/// <summary>
/// <c>moecluster warmup --url URL --expert-silos N</c>: waits until the gateway's <c>/health</c> counts N expert silos, then
/// sends one small batch (16 tokens) through every MoE layer of each served model, so that the expert shards are placed
/// and have loaded their weights before the first real request. The AppHost runs it as its <c>warmup</c> resource, once
/// the silos are up; exit 0 when every model answered.
/// </summary>
internal static class WarmupCommand
{
    private const int Tokens = 16;

    public static Command Create(TextWriter output, TextWriter error)
    {
        var url = new Option<string>("--url") { Description = "The gateway's base URL (http://127.0.0.1:8080).", Required = true };
        var expertSilos = new Option<int>("--expert-silos") { Description = "Expert silos /health must count before the forwards.", Required = true };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the expert silos (default 300).", DefaultValueFactory = _ => 300 };
        var apiKey = ApiKeyOption.Create();
        var command = new Command("warmup", "Wait until the cluster counts its expert silos, then send one small forward through every MoE layer of each served model.")
        {
            url, expertSilos, timeout, apiKey,
        };
        command.SetAction((parse, cancel) => VerbRunner.GuardAsync("warmup", error, () =>
            RunAsync(output, parse.GetValue(url)!, parse.GetValue(expertSilos), parse.GetValue(timeout), ApiKeyOption.Resolve(parse.GetValue(apiKey)), cancel)));
        return command;
    }

    private static async Task<int> RunAsync(TextWriter output, string url, int expected, double timeoutSeconds, string? apiKey, CancellationToken cancel)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out Uri? gateway) || gateway.Scheme is not ("http" or "https"))
        {
            throw new UsageException($"--url {url}: expected an http(s) URL");
        }

        if (expected < 0 || timeoutSeconds <= 0 || double.IsNaN(timeoutSeconds))
        {
            throw new UsageException("--expert-silos must be >= 0 and --timeout > 0");
        }

        using var http = new HttpClient { BaseAddress = gateway, Timeout = TimeSpan.FromMinutes(15) }.WithApiKey(apiKey);
        var client = new GatewayClient(http);
        output.WriteLine($"waiting for {gateway}health to count {expected.ToString(CultureInfo.InvariantCulture)} expert silos");
        try
        {
            await client.WaitForExpertSilosAsync(expected, TimeSpan.FromSeconds(timeoutSeconds), cancellationToken: cancel);
        }
        catch (TimeoutException e)
        {
            throw new IOException(e.Message, e);
        }

        var parts = new List<string>();
        foreach (var model in await client.ModelsAsync(cancel))
        {
            var random = new Random(model.HiddenSize);
            float[] x = [.. Enumerable.Range(0, Tokens * model.HiddenSize).Select(_ => (float)((random.NextDouble() * 2) - 1))];
            output.WriteLine($"{Tokens} tokens through every MoE layer of {model.Id} ({model.Mode}, {model.Experts} experts, {model.MoeLayers.Count} MoE layer(s))");
            var clock = Stopwatch.StartNew();
            try
            {
                await client.ForwardAsync(model.Id, layer: null, x, Tokens, model.HiddenSize, wire: null, cancel);
            }
            catch (GatewayException e)
            {
                throw new IOException(
                    $"the forward through {model.Id} got HTTP {e.StatusCode}{(string.IsNullOrWhiteSpace(e.Message) ? "" : $": {e.Message}")} (the front-end's log says more)", e);
            }

            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{model.Id} {clock.Elapsed.TotalSeconds:F1} s"));
        }

        output.WriteLine($"warm: {expected.ToString(CultureInfo.InvariantCulture)} expert silos in the cluster; one forward per model ({string.Join(", ", parts)})");
        return CliApp.ExitOk;
    }
}

using System.Collections.Concurrent;
using System.Diagnostics;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;

namespace MoECluster.EndToEnd.Tests;

/// <summary>One request of a fault test's load: when it started and ended (seconds on the test's clock), and whether its answer was right.</summary>
internal sealed record Outcome(double StartS, double EndS, bool Ok, string? Error);

/// <summary>
/// The load of the fault tests: four closed-loop clients sending 1- or 8-token requests of fresh Gaussian rows (fp32
/// wire) to one model's layer, each answer checked against the in-process forward within 1e-5; every request, right or
/// wrong or failed, recorded as an <see cref="Outcome"/>.
/// </summary>
internal static class CheckedLoad
{
    public static Task[] Start(GatewayClient client, MoeModel reference, string model, int layer, string stream, Stopwatch clock, ConcurrentBag<Outcome> outcomes, CancellationToken stop)
    {
        int d = reference.Config.HiddenSize;
        return [.. Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            var rng = DeterministicRandom.For((ulong)w, stream);
            while (!stop.IsCancellationRequested)
            {
                int tokens = rng.NextSingle() < 0.5f ? 1 : 8;
                var x = new float[tokens * d];
                for (int i = 0; i < x.Length; i++)
                {
                    x[i] = (float)rng.NextGaussian();
                }

                double start = clock.Elapsed.TotalSeconds;
                try
                {
                    var y = (await client.ForwardAsync(model, layer, x, tokens, d, "fp32")).HiddenStates.Decode();
                    double err = RelativeError.Of(y, reference.ForwardLayer(layer, x, tokens));
                    outcomes.Add(new Outcome(start, clock.Elapsed.TotalSeconds, err <= 1e-5, err <= 1e-5 ? null : $"relative error {err:E2}"));
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException or InvalidOperationException or GatewayException)
                {
                    outcomes.Add(new Outcome(start, clock.Elapsed.TotalSeconds, false, e.Message));
                }
            }
        }))];
    }

    /// <summary>The shard keys /stats places on the silo named <paramref name="silo"/> (every silo when null); none while /stats does not answer.</summary>
    public static async Task<HashSet<string>> ShardsOfAsync(GatewayClient client, string? silo)
    {
        try
        {
            var stats = await client.StatsAsync();
            return [.. stats["silos"]!.AsArray()
                .Where(s => silo is null || s!["name"]!.GetValue<string>() == silo)
                .SelectMany(s => s!["shards"]!.AsArray().Select(k => k!.GetValue<string>()))];
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or GatewayException)
        {
            return [];
        }
    }
}

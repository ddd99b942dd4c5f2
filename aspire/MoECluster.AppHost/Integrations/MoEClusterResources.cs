using System.Diagnostics;
using System.Globalization;
using MoECluster.AppHost.Model;
using MoECluster.Gateway;
using MoECluster.Model.Presets;

namespace MoECluster.AppHost.Integrations;

/// <summary>The MoECluster pieces of the app model: served models, silo settings, the one-shot model generation, the warm-up.</summary>
public static class MoEClusterResources
{
    /// <summary><c>moecluster prepare-models</c>: writes the served pair unless it is already there (a one-shot resource).</summary>
    public static IResourceBuilder<ProjectResource> WithModelGeneration(this IResourceBuilder<ProjectResource> builder, AppHostOptions options)
    {
        var args = new List<string> { "prepare-models", "--preset", options.Preset, "--layers", options.Layers.Invariant(), "--models-dir", Path.GetFullPath(options.ModelsDir) };
        if (options.Experts is int experts)
        {
            args.AddRange(["--experts", experts.Invariant()]);
        }

        return builder.WithArgs([.. args]);
    }

    /// <summary>
    /// What a silo serves and how: <c>MoECluster__Models__&lt;id&gt;__Path</c> per model, <c>MoECluster__ShardsPerLayer</c>,
    /// <c>MoECluster__Compute__Backend</c>.
    /// </summary>
    public static IResourceBuilder<ProjectResource> WithServedModels(this IResourceBuilder<ProjectResource> builder, IReadOnlyList<PairMember> models, AppHostOptions options)
    {
        foreach (var model in models)
        {
            builder.WithEnvironment($"MoECluster__Models__{model.Id}__Path", model.Directory);
        }

        return builder
            .WithEnvironment("MoECluster__ShardsPerLayer", options.Shards.Invariant())
            .WithEnvironment("MoECluster__Compute__Backend", options.Backend);
    }

    /// <summary>
    /// A one-shot step: waits until the front-end's <c>/health</c> counts <paramref name="expertSilos"/> expert silos,
    /// then sends one small batch (16 tokens) through every MoE layer of each served model, so the expert shards are
    /// placed and have loaded their weights before the first real request.
    /// </summary>
    public static IResourceBuilder<TaskResource> AddWarmup(this DistributedApplicationBuilder builder, string name, IResourceBuilder<ProjectResource> frontend, int expertSilos)
    {
        const int Tokens = 16;
        return builder.AddTask(name, async (context, cancel) =>
        {
            var gateway = context.Model.InstancesOf(frontend.Resource)[0].Endpoint("http");
            using var http = new HttpClient { BaseAddress = new Uri(gateway.Address), Timeout = TimeSpan.FromMinutes(15) };
            var client = new GatewayClient(http);
            context.Log($"waiting for {gateway.Address}/health to count {expertSilos} expert silos");
            await WaitForExpertSilosAsync(client, expertSilos, context.StartupTimeout, cancel);
            var parts = new List<string>();
            foreach (var model in await client.ModelsAsync(cancel))
            {
                var random = new Random(model.HiddenSize);
                float[] x = [.. Enumerable.Range(0, Tokens * model.HiddenSize).Select(_ => (float)(random.NextDouble() * 2 - 1))];
                context.Log($"{Tokens} tokens through every MoE layer of {model.Id} ({model.Mode}, {model.Experts} experts, {model.MoeLayers.Count} MoE layer(s))");
                var clock = Stopwatch.StartNew();
                try
                {
                    await client.ForwardAsync(model.Id, layer: null, x, Tokens, model.HiddenSize, wire: null, cancel);
                }
                catch (GatewayException e)
                {
                    throw new InvalidOperationException(
                        $"the forward through {model.Id} got HTTP {e.StatusCode}{(string.IsNullOrWhiteSpace(e.Message) ? "" : $": {e.Message}")} (the front-end's log above says more)", e);
                }

                parts.Add(string.Create(CultureInfo.InvariantCulture, $"{model.Id} {clock.Elapsed.TotalSeconds:F1} s"));
            }

            return $"{expertSilos} expert silos in the cluster; one forward per model ({string.Join(", ", parts)})";
        });
    }

    private static async Task WaitForExpertSilosAsync(GatewayClient client, int expected, TimeSpan timeout, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        string last = "no answer";
        while (true)
        {
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                attempt.CancelAfter(TimeSpan.FromSeconds(5));
                var (_, body) = await client.HealthAsync(attempt.Token);
                int? seen = body?["expert_silos"]?.GetValue<int>();
                if (seen == expected)
                {
                    return;
                }

                last = $"{seen?.ToString(CultureInfo.InvariantCulture) ?? "no"} expert silos";
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
            {
                last = "no answer within 5 s";
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException(string.Create(CultureInfo.InvariantCulture,
                    $"the front-end's /health did not count {expected} expert silos within {timeout.TotalSeconds:F0} s (last: {last})"));
            }

            await Task.Delay(250, cancel);
        }
    }
}

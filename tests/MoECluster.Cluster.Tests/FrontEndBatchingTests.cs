using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Telemetry;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// Batching at the front-end through the router grain: concurrent callers' requests for the same layer (or the stack) and
/// wire merged into one forward still get each its own answer — within tolerance of the in-process forward of its own
/// input, and bit for bit what the cluster answers the same request alone — and the front-end's ledger and /stats show
/// forwards of more than one request, with every token counted once.
/// </summary>
[Collection(InProcessMoeClusterGroup.Name)]
public sealed class FrontEndBatchingTests(InProcessMoeCluster cluster)
{
    private const int Callers = 8;
    private const int RequestsPerCaller = 3;
    private const int LongRequestTokens = 4096;
    private const int MaxSmallRequests = 200;

    public static TheoryData<string, double> Wires() => new()
    {
        { WireCodecs.Get(WireDType.F32).Name, 1e-6 },
        { WireCodecs.Get(WireDType.BF16).Name, WireCodecs.Get(WireDType.BF16).ParityTolerance },
    };

    [Theory]
    [MemberData(nameof(Wires))]
    public async Task Requests_merged_at_the_front_end_get_each_its_own_answer(string wire, double tolerance)
    {
        var codec = WireCodecs.Parse(wire);
        const string model = InProcessMoeCluster.Latent;
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int?[] targets = [.. reference.Config.MoeLayers.Select(l => (int?)l), null];
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        var ledger = cluster.FrontendLedger;
        string frontend = cluster.Frontend.SiloAddress.ToString();
        long mergedBefore = Merged();
        var tokensBefore = LayerTokens();
        var tokensSent = new System.Collections.Concurrent.ConcurrentDictionary<int, long>();
        var merged = new List<(ForwardCall Call, ForwardReply Reply)>();

        float[] Expected(int? target, float[] x, int tokens) =>
            target is int layer ? reference.ForwardLayer(layer, x, tokens) : reference.ForwardStack(x, tokens);

        async Task SendAsync(ForwardCall call, string what)
        {
            var reply = await router.Forward(call);
            tokensSent.AddOrUpdate(call.Layer ?? -1, call.Tokens, (_, n) => n + call.Tokens);
            // The stack on a 16-bit wire compounds two layers' rounding beyond the codec's per-layer tolerance (no parity test
            // holds it to one): its answers are held to their own unbatched answers, bit for bit, below.
            double error = call.Layer is null && codec.Id != WireDType.F32 ? 0 : Metrics.RelativeError(reply.Hidden, Expected(call.Layer, call.Hidden, call.Tokens));
            Assert.True(error <= tolerance, $"wire {wire} {what} ({call.Tokens} tokens, {(call.Layer is int l ? $"layer {l}" : "stack")}): relative error {error:E2} > {tolerance:E0}");
            Assert.All(reply.Layers, t => Assert.Equal(call.Tokens, t.Tokens));
            if (reply.Layers[0].BatchRequests > 1)
            {
                Assert.All(reply.Layers, t => Assert.True(t.BatchTokens > t.Tokens, $"a layer of a forward of {t.BatchRequests} requests has {t.BatchTokens} tokens"));
                lock (merged)
                {
                    merged.Add((call, reply));
                }
            }
        }

        // Rounds: one long request per target (its forward takes milliseconds) holds its key, and the callers, which
        // interleave requests of different token counts and targets, keep sending while it runs, so that theirs queue behind
        // it and share the next forward. The rounds go on (at most 5) until the front-end has merged a forward.
        for (int round = 0; round < 5; round++)
        {
            int seed = TestInputs.NewSeed();
            var longRequests = targets.Select(target => Task.Run(() =>
                SendAsync(new ForwardCall(target, TestInputs.Gaussian(LongRequestTokens * d, seed ^ (target ?? 99)), LongRequestTokens, codec.Id), $"seed {seed} long request"))).ToList();
            var longDone = Task.WhenAll(longRequests);
            var requests = longRequests.Concat(Enumerable.Range(0, Callers).Select(caller => Task.Run(async () =>
            {
                var rng = new Random(seed + caller);
                for (int i = 0; i < MaxSmallRequests && (i < RequestsPerCaller || !longDone.IsCompleted); i++)
                {
                    int tokens = 1 + rng.Next(24);
                    var target = targets[rng.Next(targets.Length)];
                    await SendAsync(new ForwardCall(target, TestInputs.Gaussian(tokens * d, rng.Next()), tokens, codec.Id), $"seed {seed} caller {caller} request {i}");
                }
            })));
            await Task.WhenAll(requests);
            if (Merged() > mergedBefore)
            {
                break;
            }
        }

        var batches = ledger.Snapshot(frontend).FrontEndBatches.Where(b => b.Model == model && b.WireDispatch == wire && b.WireCombine == wire && b.Wire == $"{wire}/{wire}").ToList();
        Assert.True(Merged() > mergedBefore, $"no forward merged two requests: {string.Join("; ", batches.Select(b => $"{b.Target}: {b.Batches} forwards, {b.Requests} requests"))}");
        Assert.Contains(batches, b => b.MaxRequests > 1 && b.MaxTokens > 24);
        Assert.All(batches, b => Assert.True(b.Requests >= b.Batches && b.Tokens >= b.Requests, $"{b.Target}: {b.Requests} requests, {b.Tokens} tokens in {b.Batches} forwards"));

        // Every token counted once in the ledger, whatever forward it shared: a layer served the tokens sent to it and to the stack.
        foreach (int layer in reference.Config.MoeLayers)
        {
            long counted = LayerTokens().GetValueOrDefault(layer) - tokensBefore.GetValueOrDefault(layer);
            Assert.Equal(tokensSent.GetValueOrDefault(layer) + tokensSent.GetValueOrDefault(-1), counted);
        }

        // Batched answers equal unbatched ones: each merged request sent again alone (one at a time) gets the same bits.
        Assert.NotEmpty(merged);
        foreach (var (call, reply) in merged.Where(m => m.Call.Layer is null).Take(30).Concat(merged.Where(m => m.Call.Layer is not null).Take(30)))
        {
            var alone = await router.Forward(call);
            Assert.Equal(1, alone.Layers[0].BatchRequests);
            Assert.True(alone.Hidden.AsSpan().SequenceEqual(reply.Hidden), $"wire {wire}: a request of {call.Tokens} tokens answered differently in a forward of {reply.Layers[0].BatchRequests} requests than alone");
        }

        // The same figures reach /stats (the cluster-wide report the gateway serves), the front-end silo by name.
        var report = await new ClusterStatistics(cluster.Grains).ReportAsync();
        Assert.Contains(report.FrontEndBatches, b => b.Model == model && b.WireDispatch == wire && b.WireCombine == wire && b.Wire == $"{wire}/{wire}" && b.MergedBatches > 0 && b.MeanRequests > 1 && b.Silo == InProcessMoeCluster.FrontendName);

        long Merged() => ledger.Snapshot(frontend).FrontEndBatches.Where(b => b.Model == model && b.WireDispatch == wire && b.WireCombine == wire && b.Wire == $"{wire}/{wire}").Sum(b => b.MergedBatches);

        Dictionary<int, long> LayerTokens() => ledger.Snapshot(frontend).Layers.Where(l => l.Model == model).ToDictionary(l => l.Layer, l => l.Tokens);
    }
}

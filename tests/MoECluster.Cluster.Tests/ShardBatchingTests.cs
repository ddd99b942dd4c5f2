using System.Diagnostics;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Telemetry;
using MoECluster.Model.Dispatch;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>
/// Continuous batching at the expert shards through the router: concurrent callers' requests merged into shared passes
/// still get each its own answer — the in-process forward of its own input. Front-end batching is off in this cluster: it
/// would merge one front-end's concurrent requests for a layer into one message per shard before they reach the shards.
/// </summary>
public sealed class ShardBatchingTests(UnbatchedFrontEndCluster cluster) : IClassFixture<UnbatchedFrontEndCluster>
{
    private const int Callers = 8;
    private const int RequestsPerCaller = 3;
    private const int LongRequestTokens = 4096;
    private const int MaxSmallRequests = 200;

    // A shard's rows are ℓ = 16 wide in the tiny model: 65,536 of them are a 4 MiB message that takes a few milliseconds.
    // The alternate test times such a call first and scales it up to at least LongAlternateTarget (at most 2^20 rows).
    private const int LongAlternateRows = 65536;
    private const int MaxLongAlternateRows = 1 << 20;
    private static readonly TimeSpan LongAlternateTarget = TimeSpan.FromMilliseconds(150);

    public static TheoryData<string, double> Wires() => new()
    {
        { WireCodecs.Get(WireDType.F32).Name, 1e-6 },
        { WireCodecs.Get(WireDType.BF16).Name, WireCodecs.Get(WireDType.BF16).ParityTolerance },
    };

    [Theory]
    [MemberData(nameof(Wires))]
    public async Task Batched_answers_equal_unbatched_ones(string wire, double tolerance)
    {
        var codec = WireCodecs.Parse(wire);
        const string model = InProcessMoeCluster.Latent;
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        var layers = reference.Config.MoeLayers.ToArray();
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);
        long mergedBefore = MergedPasses();

        // Rounds of callers that interleave requests of different token counts; a round's requests race each other to the
        // shards. On a quiet machine a tiny model's pass ends in microseconds, before the next request arrives, so each round
        // also sends one long request per layer (its passes take milliseconds), and the small callers keep sending while it
        // runs, so some queue behind it. Every answer is checked, the long ones too; the rounds go on (at most 5) until the
        // shards have merged at least one pass.
        for (int round = 0; round < 5; round++)
        {
            int seed = TestInputs.NewSeed();
            var longRequests = layers.Select(layer => Task.Run(async () =>
            {
                const int tokens = LongRequestTokens;
                float[] x = TestInputs.Gaussian(tokens * d, seed ^ layer);
                var reply = await router.Forward(new ForwardCall(layer, x, tokens, codec.Id));
                double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, tokens));
                Assert.True(error <= tolerance, $"wire {wire} seed {seed} long request ({tokens} tokens, layer {layer}): relative error {error:E2} > {tolerance:E0}");
            })).ToList();
            var longDone = Task.WhenAll(longRequests);

            // The small callers go on while the long requests run (at least RequestsPerCaller each, at most MaxSmallRequests).
            var requests = longRequests.Concat(Enumerable.Range(0, Callers).Select(caller => Task.Run(async () =>
            {
                var rng = new Random(seed + caller);
                for (int i = 0; i < MaxSmallRequests && (i < RequestsPerCaller || !longDone.IsCompleted); i++)
                {
                    int tokens = 1 + rng.Next(24);
                    int layer = layers[rng.Next(layers.Length)];
                    float[] x = TestInputs.Gaussian(tokens * d, rng.Next());
                    var reply = await router.Forward(new ForwardCall(layer, x, tokens, codec.Id));
                    double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, tokens));
                    Assert.True(error <= tolerance, $"wire {wire} seed {seed} caller {caller} request {i} ({tokens} tokens, layer {layer}): relative error {error:E2} > {tolerance:E0}");
                }
            })));
            await Task.WhenAll(requests);

            if (MergedPasses() > mergedBefore)
            {
                break;
            }
        }

        var shards = ShardBatches();
        Assert.True(MergedPasses() > mergedBefore, $"no shard merged two requests into one pass: {string.Join("; ", shards.Select(b => $"{b.Shard}: {b.Batches} passes, {b.Requests} requests"))}");
        Assert.Contains(shards, b => b.MaxRequests > 1);
        Assert.All(shards, b => Assert.True(b.Requests >= b.Batches && b.MaxRows >= 1, $"{b.Shard}: {b.Requests} requests in {b.Batches} passes"));

        // The same figures reach /stats (the cluster-wide report the gateway serves).
        var report = await new ClusterStatistics(cluster.Grains).ReportAsync();
        Assert.Contains(report.ShardBatches, b => b.MergedBatches > 0 && b.MeanRequests > 1 && !b.Silo.Contains(':', StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_alternate_batches_concurrent_calls_and_answers_each_with_its_own_partials()
    {
        // The alternates' grain service uses the same batcher instead of its old one-at-a-time gate.
        const string model = InProcessMoeCluster.Latent;
        const int calls = 12;
        var reference = cluster.Reference(model);
        int layer = reference.Config.MoeLayers[0];
        string key = cluster.ShardKeys(model, layer)[0];
        var shard = ExpertShard.ParseKey(key);
        var experts = reference.ShardExperts(layer, shard.Experts);
        var silo = cluster.Experts[0];
        var alternates = cluster.Service<IShardAlternateClient>(cluster.Frontend).On(silo.SiloAddress);
        int seed = TestInputs.NewSeed();

        // A call built in full first (rows, pairs, encoded request), so that sending it is all that is left.
        (Func<Task<WireBytes>> Send, Func<WireBytes, ShardResponse> Check) Build(int i, int rows)
        {
            var rng = new Random(seed + i);
            var offsets = new int[rows + 1];
            var ids = new List<int>();
            for (int r = 0; r < rows; r++)
            {
                ids.AddRange(shard.Experts.OrderBy(_ => rng.Next()).Take(1 + rng.Next(Math.Min(3, shard.ExpertCount))));
                offsets[r + 1] = ids.Count;
            }

            var pairs = new RoutedPairs(offsets, [.. ids], [.. ids.Select(_ => (float)rng.NextDouble())]);
            float[] z = TestInputs.Gaussian(rows * experts.Width, rng.Next());
            var request = new WireBytes(WireFormat.Serialize(
                WireFormat.BuildRequest(model, layer, shard.Experts, z, experts.Width, WireDType.F32, pairs, WireDType.F32, 1000 + i)));
            return (() => alternates.Compute(key, request), reply =>
            {
                var response = WireFormat.DecodeResponse(reply.Bytes, new WireLimits(), rows, experts.Width);
                Assert.Equal(1000 + i, response.RequestId);
                double error = Metrics.RelativeError(response.Partials.Decode(), experts.ComputePartials(z, pairs));
                Assert.True(error <= 1e-6, $"seed {seed} call {i} ({rows} rows): relative error {error:E2}");
                return response;
            });
        }

        ShardBatchTotals Totals() =>
            Assert.Single(cluster.Service<TrafficLedger>(silo).Snapshot(silo.SiloAddress.ToString()).ShardBatches, b => b.Shard == ShardKeys.Alternate(key));

        // The first call loads the alternate's experts. A lone long call is timed (round trip, and the shard's compute from
        // its reply); the long call of each round is scaled from it to compute for at least LongAlternateTarget (with faster
        // kernels a fixed 65,536 rows ended before the small calls arrived: CI saw 61 requests in 61 passes). The small
        // calls, built beforehand, are sent when the long one should be computing: after its request's way to the shard,
        // (round trip − compute) / 2, plus a quarter of its compute, then earlier and later in later rounds. They queue
        // and share the next pass. Every answer is checked; the rounds go on (at most 5) until a pass has merged calls.
        var warm = Build(0, 1);
        warm.Check(await warm.Send());
        var roundTrip = TimeSpan.Zero;
        var compute = TimeSpan.Zero;
        for (int i = 1; i <= 2; i++)
        {
            // The second timing counts: the first long pass also pays for first-time work (buffers, code paths).
            var timed = Build(i, LongAlternateRows);
            var clock = Stopwatch.StartNew();
            var timedReply = await timed.Send();
            roundTrip = clock.Elapsed;
            compute = TimeSpan.FromMicroseconds(timed.Check(timedReply).ComputeMicroseconds);
        }

        double scale = Math.Ceiling(LongAlternateTarget / TimeSpan.FromTicks(Math.Max(compute.Ticks, 1)));
        int longRows = (int)Math.Min(MaxLongAlternateRows, LongAlternateRows * Math.Max(1.0, scale));
        double factor = (double)longRows / LongAlternateRows;
        var headStart = ((roundTrip - compute) / 2 * factor) + (compute * factor / 4);
        double[] headStarts = [1.0, 0.5, 0.25, 1.5, 0.1];
        for (int round = 0; round < headStarts.Length && Totals().Batches == Totals().Requests; round++)
        {
            int first = 3 + (round * calls);
            var built = Enumerable.Range(first, calls).Select(i => Build(i, i == first ? longRows : 1 + (i % 16))).ToList();
            var sent = new List<Task<WireBytes>> { built[0].Send() };
            await Task.Delay(headStart * headStarts[round]);
            sent.AddRange(built.Skip(1).Select(b => b.Send()));
            var replies = await Task.WhenAll(sent);
            for (int i = 0; i < built.Count; i++)
            {
                built[i].Check(replies[i]);
            }
        }

        var totals = Totals();
        Assert.True(totals.Requests >= calls && totals.Batches < totals.Requests, $"{totals.Requests} requests in {totals.Batches} passes: the alternate merged none (long call {longRows} rows, head start {headStart.TotalMilliseconds:F1} ms; {LongAlternateRows} rows: round trip {roundTrip.TotalMilliseconds:F1} ms, compute {compute.TotalMilliseconds:F1} ms)");
    }

    private List<ShardBatchTotals> ShardBatches() =>
        [.. cluster.Experts.SelectMany(s => cluster.Service<TrafficLedger>(s).Snapshot(s.SiloAddress.ToString()).ShardBatches)];

    private long MergedPasses() => ShardBatches().Sum(b => b.MergedBatches);
}

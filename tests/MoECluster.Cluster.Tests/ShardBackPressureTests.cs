using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>One expert silo whose shards queue at most one request each (MoECluster:ShardBatching:MaxQueuedRequests = 1).</summary>
public sealed class TinyQueueMoeCluster() : InProcessMoeCluster(new InProcessMoeClusterSetup
{
    ExpertSilos = 1,
    ShardsPerLayer = 2,
    Settings = new Dictionary<string, string?>
    {
        ["MoECluster:ShardBatching:MaxQueuedRequests"] = "1",

        // One front-end merges its concurrent requests for a layer into one message per shard; off, every request
        // reaches the shards on its own and the flood meets their queues.
        ["MoECluster:FrontEndBatching:Enabled"] = "false",
    },
});

/// <summary>
/// Back-pressure through the router: a flood against shards with a tiny queue gets busy refusals (ShardBusyException
/// with a retry-after hint, crossing the grain boundary as itself, never wrapped as a shard failure or retried), every
/// answered request is right, and normal service resumes at once after the flood.
/// </summary>
public sealed class ShardBackPressureTests(TinyQueueMoeCluster cluster) : IClassFixture<TinyQueueMoeCluster>
{
    private const int Flood = 24;
    private const int Tokens = 1024;

    [Fact]
    public async Task A_flood_against_a_tiny_queue_gets_busy_refusals_and_then_normal_service()
    {
        const string model = InProcessMoeCluster.Latent;
        var reference = cluster.Reference(model);
        int d = reference.Config.HiddenSize;
        int layer = reference.Config.MoeLayers[0];
        var router = cluster.Grains.GetGrain<IMoeRouterGrain>(model);

        async Task<Exception?> OneAsync(int seed, int tokens)
        {
            float[] x = TestInputs.Gaussian(tokens * d, seed);
            try
            {
                var reply = await router.Forward(new ForwardCall(layer, x, tokens, WireDType.F32));
                double error = Metrics.RelativeError(reply.Hidden, reference.ForwardLayer(layer, x, tokens));
                Assert.True(error <= 1e-6, $"seed {seed}: relative error {error:E2}");
                return null;
            }
            catch (ShardBusyException e)
            {
                return e;
            }
        }

        // Loads the shards' weights; not part of the flood.
        Assert.Null(await OneAsync(TestInputs.NewSeed(), 1));

        // Rounds of concurrent requests (at most 5) until the shards have refused some: on a quiet machine a round can
        // drain as fast as it arrives. Anything but a busy refusal or a right answer fails the test.
        var busy = new List<ShardBusyException>();
        for (int round = 0; round < 5 && busy.Count == 0; round++)
        {
            int seed = TestInputs.NewSeed();
            var outcomes = await Task.WhenAll(Enumerable.Range(0, Flood).Select(i => Task.Run(() => OneAsync(seed + i, Tokens))));
            busy.AddRange(outcomes.OfType<ShardBusyException>());
        }

        // A request is answered only if none of its shards refused it: a whole round may be refused (each request's rows
        // queued at one shard and refused at the other), so only the refusals are required; the answers were checked.
        Assert.NotEmpty(busy);
        Assert.All(busy, e =>
        {
            Assert.InRange(e.RetryAfterSeconds, 1, 60);
            Assert.Contains("MaxQueuedRequests", e.Message, StringComparison.Ordinal);
        });

        // Right after: one request at a time, every one answered.
        for (int i = 0; i < 5; i++)
        {
            Assert.Null(await OneAsync(TestInputs.NewSeed(), 1 + i));
        }
    }
}

using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Presets;
using MoECluster.Model.Routing;
using MoECluster.Testing;

namespace MoECluster.Model.Tests.Dispatch;

public sealed class ShardDispatchPlanTests
{
    [Theory]
    [InlineData(64, 4)]
    [InlineData(10, 4)]
    [InlineData(7, 7)]
    [InlineData(5, 1)]
    public void Shards_are_contiguous_near_equal_ranges_covering_every_expert(int experts, int shards)
    {
        var map = new ExpertRoutingTable("m", 3, experts, shards);
        Assert.Equal(shards, map.Shards.Count);
        Assert.All(map.Shards, s => Assert.True(s.Experts.IsContiguous));
        Assert.Equal(0, map.Shards[0].Experts.First);
        Assert.Equal(experts, map.Shards[^1].Experts.End);
        Assert.All(map.Shards.Zip(map.Shards.Skip(1)), p => Assert.Equal(p.First.Experts.End, p.Second.Experts.First));
        Assert.InRange(map.Shards.Max(s => s.ExpertCount) - map.Shards.Min(s => s.ExpertCount), 0, 1);
        for (int e = 0; e < experts; e++)
        {
            Assert.True(map.Shards[map.ShardOf(e)].Holds(e));
        }
    }

    [Fact]
    public void More_shards_than_experts_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ExpertRoutingTable("m", 1, 4, 5));
    }

    [Fact]
    public void Shard_keys_name_model_layer_index_and_expert_range_and_parse_back()
    {
        var shard = new ExpertRoutingTable("latent", 7, 64, 4).Shards[2];
        Assert.Equal("latent/7/s2/32-48", shard.Key);
        Assert.Equal(shard, ExpertShard.ParseKey(shard.Key));
    }

    [Theory]
    [InlineData(10, 4)]
    [InlineData(24, 5)]
    [InlineData(7, 7)]
    public void Every_shard_of_an_uneven_split_round_trips_its_index_through_its_key(int experts, int shards)
    {
        var map = new ExpertRoutingTable("m", 3, experts, shards);
        Assert.Equal(Enumerable.Range(0, shards), map.Shards.Select(s => ExpertShard.ParseKey(s.Key).Index));
        Assert.Equal(map.Shards, map.Shards.Select(s => ExpertShard.ParseKey(s.Key)));
        Assert.All(map.Shards, s => Assert.DoesNotContain(':', s.Key));
    }

    [Theory]
    [InlineData("latent/7")]
    [InlineData("latent/x/s0/0-4")]
    [InlineData("latent/1/s0/4-4")]
    [InlineData("latent/1/s0/-1-4")]
    [InlineData("/1/s0/0-4")]
    [InlineData("latent/1/0/0-4")]
    [InlineData("latent/1/s/0-4")]
    [InlineData("latent/1/s-1/0-4")]
    [InlineData("latent/1/s0/0-4/alt")]
    [InlineData("a:b/1/s0/0-4")]
    public void Malformed_shard_keys_are_refused_with_the_expected_form(string key)
    {
        var e = Assert.Throws<FormatException>(() => ExpertShard.ParseKey(key));
        Assert.Contains($"'{key}'", e.Message, StringComparison.Ordinal);
        Assert.Contains("{model}/{layer}/s{index}/{ranges}", e.Message, StringComparison.Ordinal);
        Assert.False(ExpertShard.TryParseKey(key, out _, out string? error));
        Assert.Equal(e.Message, error);
    }

    [Theory]
    [InlineData("latent/1/0-16")]
    [InlineData("latent/7/32-48")]
    public void A_key_in_the_old_form_without_the_shard_index_is_refused(string key)
    {
        var e = Assert.Throws<FormatException>(() => ExpertShard.ParseKey(key));
        Assert.Contains("latent/1/s0/0-16", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Each_token_travels_once_per_shard_with_all_its_pairs_for_that_shard()
    {
        var rng = new Random();
        var plan = new RoutingPlan(tokens: 40, topK: 5);
        for (int t = 0; t < 40; t++)
        {
            int[] picks = [.. Enumerable.Range(0, 24).OrderBy(_ => rng.Next()).Take(5)];
            picks.CopyTo(plan.Experts, t * 5);
            for (int k = 0; k < 5; k++)
            {
                plan.Weights[(t * 5) + k] = (float)rng.NextDouble();
            }
        }

        var map = new ExpertRoutingTable("m", 1, 24, 4);
        var dispatches = ShardDispatchPlan.Build(plan, map);
        int expectedRows = Enumerable.Range(0, 40).Sum(t => plan.ExpertsOf(t).ToArray().Select(map.ShardOf).Distinct().Count());
        Assert.Equal(expectedRows, dispatches.Sum(d => d.Rows));
        Assert.Equal(200, dispatches.Sum(d => d.Pairs.Count));
        foreach (var d in dispatches)
        {
            Assert.Equal(d.Tokens.Distinct().Order(), d.Tokens);
            for (int r = 0; r < d.Rows; r++)
            {
                int t = d.Tokens[r];
                var expected = plan.ExpertsOf(t).ToArray().Select((e, k) => (e, w: plan.WeightsOf(t)[k])).Where(p => d.Shard.Holds(p.e)).ToArray();
                var actual = Enumerable.Range(d.Pairs.Offsets[r], d.Pairs.CountOf(r)).Select(i => (d.Pairs.Experts[i], d.Pairs.Weights[i])).ToArray();
                Assert.Equal(expected, actual);
            }
        }
    }

    [Fact]
    public void Expected_rows_per_token_match_the_extremes()
    {
        Assert.Equal(1.0, ShardDispatchPlan.ExpectedRowsPerToken(new ExpertRoutingTable("m", 1, 64, 1), 22), 12);
        Assert.Equal(22.0, ShardDispatchPlan.ExpectedRowsPerToken(new ExpertRoutingTable("m", 1, 64, 64), 22), 9);
        Assert.InRange(ShardDispatchPlan.ExpectedRowsPerToken(new ExpertRoutingTable("m", 1, 64, 4), 22), 3.99, 4.0);
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("tiny-standard")]
    public void The_sharded_path_computes_what_the_in_process_mixer_computes(string preset)
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get(preset).Build(experts: 12);
        SyntheticCheckpoint.Write(dir.Path, config, (ulong)Random.Shared.Next());
        using var model = MoeModel.Open(dir.Path);
        int layer = config.MoeLayers[0];
        int d = config.HiddenSize, w = config.RoutedWidth, tokens = 31;
        var rng = new Random();
        float[] x = [.. Enumerable.Range(0, tokens * d).Select(_ => (float)((rng.NextDouble() * 2) - 1))];

        // Router half, dispatch by shard, each shard's partial sums on only its experts, sum, router half again.
        var router = model.RouterMixer(layer);
        var (plan, z) = router.Prepare(x, tokens);
        var map = new ExpertRoutingTable("m", layer, config.NRoutedExperts, 5);
        var u = new float[tokens * w];
        foreach (var dispatch in ShardDispatchPlan.Build(plan, map))
        {
            var experts = model.ShardExperts(layer, dispatch.Shard.Experts);
            float[] rows = ShardDispatchPlan.GatherRows(z, dispatch.Tokens, w);
            float[] partials = experts.ComputePartials(rows, dispatch.Pairs);
            for (int r = 0; r < dispatch.Rows; r++)
            {
                for (int j = 0; j < w; j++)
                {
                    u[(dispatch.Tokens[r] * w) + j] += partials[(r * w) + j];
                }
            }
        }

        var y = new float[tokens * d];
        router.Finish(u, x, tokens, y);
        float[] expected = model.ForwardLayer(layer, x, tokens);
        double num = 0, den = 0;
        for (int i = 0; i < y.Length; i++)
        {
            num += (y[i] - (double)expected[i]) * (y[i] - (double)expected[i]);
            den += (double)expected[i] * expected[i];
        }

        Assert.True(Math.Sqrt(num / den) <= 1e-6, $"relative error {Math.Sqrt(num / den):E2}");
    }

    [Fact]
    public void A_shard_refuses_experts_it_does_not_hold()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build();
        SyntheticCheckpoint.Write(dir.Path, config, 3);
        using var model = MoeModel.Open(dir.Path);
        var experts = model.ShardExperts(1, 0, 4);
        var e = Assert.Throws<InvalidOperationException>(() => experts.ComputePartials(new float[16], new RoutedPairs([0, 1], [6], [1f])));
        Assert.Contains("expert 6", e.Message, StringComparison.Ordinal);
    }
}

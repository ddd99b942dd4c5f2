using MoECluster.Model.Balancing;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;

namespace MoECluster.Model.Tests.Presets;

/// <summary>
/// Skewed routing for synthetic checkpoints: Zipf shares capped at every token and summing to K, and a correction bias
/// that makes the router follow them on inputs it was not fitted on.
/// </summary>
public sealed class GateSkewTests
{
    [Fact]
    public void Target_shares_follow_zipf_capped_at_one_and_sum_to_K()
    {
        double[] shares = new GateSkew(1.2).TargetShares(64, 22);
        Assert.Equal(22, shares.Sum(), 6);
        Assert.All(shares, s => Assert.InRange(s, 0, 1));
        Assert.Equal(1, shares[0]); // the hottest experts are chosen by every token
        for (int e = 1; e < 64; e++)
        {
            Assert.True(shares[e] <= shares[e - 1]);
        }

        // Below the cap the ratio of two experts is the Zipf ratio.
        Assert.Equal(Math.Pow(64.0 / 63, 1.2), shares[62] / shares[63], 9);
    }

    [Theory]
    [InlineData("zipf:1.2", 1.2)]
    [InlineData("ZIPF:0.5", 0.5)]
    public void Parses_zipf(string text, double s) => Assert.Equal(s, GateSkew.Parse(text).Zipf);

    [Theory]
    [InlineData("zipf:0")]
    [InlineData("zipf:9")]
    [InlineData("uniform")]
    [InlineData("zipf:x")]
    public void Refuses_anything_else(string text) =>
        Assert.Contains("is not zipf:S", Assert.Throws<FormatException>(() => GateSkew.Parse(text)).Message, StringComparison.Ordinal);

    [Fact]
    public void A_fitted_bias_skews_a_super_shaped_gate_on_fresh_inputs_and_unbalances_todays_placement()
    {
        var config = ModelPresets.Get("super-shape").Build(experts: 64, moeLayers: 1);
        int n = config.NRoutedExperts, d = config.HiddenSize;
        int seed = Random.Shared.Next();
        var rng = DeterministicRandom.For((ulong)seed, "test-gate");
        float limit = MathF.Sqrt(3f / d);
        float[] gate = [.. Enumerable.Range(0, n * d).Select(_ => rng.NextSymmetric(limit))];
        var skew = new GateSkew(1.2);
        float[] bias = skew.FitBias(config, gate, (ulong)seed);

        // Fresh inputs: another seed than the fit's.
        float[] logits = GateSkew.Logits(gate, n, d, (ulong)seed + 1);
        double[] shares = GateSkew.Shares(config, logits, bias);
        double[] target = skew.TargetShares(n, config.NumExpertsPerTok);
        double worst = Enumerable.Range(0, n).Max(e => Math.Abs(shares[e] - target[e]));
        Assert.True(worst <= 0.05, $"seed {seed}: the largest share error is {worst:F3}");

        // Without the bias the same gate routes about evenly; with it, 4 contiguous shards on 2 silos are unbalanced.
        double[] plain = GateSkew.Shares(config, logits, new float[n]);
        var today = ExpertAssignment.FromContiguousShards(n, 4, 2);
        Assert.True(today.Imbalance(plain) < 1.15, $"seed {seed}: unskewed imbalance {today.Imbalance(plain):F3}");
        Assert.True(today.Imbalance(shares) >= 1.2, $"seed {seed}: skewed imbalance {today.Imbalance(shares):F3}");
    }
}

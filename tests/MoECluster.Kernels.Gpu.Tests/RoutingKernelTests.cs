using MoECluster.Model.Configuration;
using MoECluster.Model.Routing;

namespace MoECluster.Kernels.Gpu.Tests;

[Collection(CpuAcceleratorGroup.Name)]
public sealed class RoutingKernelTests(CpuAcceleratorFixture fixture)
{
    private static MoeModelConfig Config(int n, int k, bool norm = true, double rsf = 2.5, int groups = 1, int keep = 1,
        ScoringFunction scoring = ScoringFunction.Sigmoid) => new()
        {
            HiddenSize = 8,
            NRoutedExperts = n,
            NumExpertsPerTok = k,
            MoeIntermediateSize = 4,
            MoeSharedExpertIntermediateSize = 4,
            NGroup = groups,
            TopkGroup = keep,
            NormTopkProb = norm,
            RoutedScalingFactor = rsf,
            ScoringFunc = scoring,
            NumHiddenLayers = 1,
            HybridOverridePattern = "E",
        };

    [Theory]
    [InlineData(64, 22, true)]
    [InlineData(64, 22, false)]
    [InlineData(40, 6, true)]
    [InlineData(16, 16, true)]
    [InlineData(5, 1, false)]
    [InlineData(100, 8, true)]
    public void Device_router_plans_are_bit_identical_to_TopKRouter_on_random_logits(int n, int k, bool norm)
    {
        int seed = Fp64.NewSeed();
        var rng = new Random(seed);
        MoeModelConfig config = Config(n, k, norm, 1 + (rng.NextDouble() * 4));
        float[] bias = Fp64.RandomVector(rng, n, 0.1);
        const int tokens = 3;
        float[] logits = Fp64.RandomVector(rng, tokens * n, 4);

        AssertSamePlan(config, bias, logits, tokens, seed);
    }

    [Fact]
    public void Device_router_breaks_ties_to_the_lower_index_and_ranks_NaN_last_like_TopKRouter()
    {
        const int n = 48, k = 10, tokens = 4;
        var rng = new Random(7);
        // Few distinct values, so most selections are decided by index; NaN and infinities mixed in.
        float[] palette = [-1f, 0f, 0.5f, 0.5f, 2f, float.NaN, float.PositiveInfinity, float.NegativeInfinity];
        float[] logits = [.. Enumerable.Range(0, tokens * n).Select(_ => palette[rng.Next(palette.Length)])];
        logits.AsSpan(0, n).Fill(0.25f); // token 0: all tied
        logits.AsSpan(n, n).Fill(float.NaN); // token 1: all NaN
        MoeModelConfig config = Config(n, k);

        RoutingPlan plan = AssertSamePlan(config, new float[n], logits, tokens, seed: 7);

        Assert.Equal(Enumerable.Range(0, k), plan.ExpertsOf(0).ToArray());
        Assert.Equal(Enumerable.Range(0, k), plan.ExpertsOf(1).ToArray());
    }

    [Fact]
    public void Device_router_accepts_groups_that_are_all_kept_and_rejects_group_limits_and_softmax()
    {
        using var allKept = new IlgpuRouter(fixture.Device.Accelerator, Config(32, 4, groups: 4, keep: 4), []);
        Assert.Equal(4, allKept.TopK);

        var limited = Assert.Throws<NotSupportedException>(() => new IlgpuRouter(fixture.Device.Accelerator, Config(32, 4, groups: 4, keep: 2), []));
        Assert.Contains("group-limited", limited.Message, StringComparison.Ordinal);
        var softmax = Assert.Throws<NotSupportedException>(() =>
            new IlgpuRouter(fixture.Device.Accelerator, Config(32, 4, scoring: ScoringFunction.Softmax), []));
        Assert.Contains("sigmoid", softmax.Message, StringComparison.Ordinal);
    }

    private RoutingPlan AssertSamePlan(MoeModelConfig config, float[] bias, float[] logits, int tokens, int seed)
    {
        RoutingPlan expected = new TopKRouter(config, bias).Route(logits, tokens);
        using var router = new IlgpuRouter(fixture.Device.Accelerator, config, bias);

        RoutingPlan actual = router.Route(logits, tokens);

        Assert.True(expected.Experts.SequenceEqual(actual.Experts), $"experts differ (seed {seed})");
        Assert.True(
            expected.Weights.Select(BitConverter.SingleToUInt32Bits).SequenceEqual(actual.Weights.Select(BitConverter.SingleToUInt32Bits)),
            $"weights differ (seed {seed})");
        return actual;
    }
}

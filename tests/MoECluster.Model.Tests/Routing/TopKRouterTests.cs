using MoECluster.Model.Configuration;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Tests.Routing;

public sealed class TopKRouterTests
{
    private static MoeModelConfig Config(int n, int k, int groups = 1, int keep = 1, bool norm = true, double rsf = 2.5,
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

    /// <summary>Float64 routing straight from the definition, with sorting instead of insertion.</summary>
    private static (int[] Experts, double[] Weights, double Gap) Reference(MoeModelConfig c, float[] logits, float[] bias)
    {
        int n = c.NRoutedExperts;
        double[] s = c.ScoringFunc == ScoringFunction.Sigmoid
            ? [.. logits.Select(v => 1 / (1 + Math.Exp(-(double)v)))]
            : Softmax(logits);
        double[] choice = [.. s.Select((v, i) => v + bias[i])];
        var eligible = Enumerable.Range(0, n);
        if (c.NGroup > 1)
        {
            int size = n / c.NGroup;
            var kept = Enumerable.Range(0, c.NGroup)
                .OrderByDescending(g => Enumerable.Range(g * size, size).Select(i => choice[i]).OrderDescending().Take(2).Sum())
                .ThenBy(g => g).Take(c.TopkGroup).ToHashSet();
            eligible = eligible.Where(i => kept.Contains(i / size));
        }

        var ranked = eligible.OrderByDescending(i => choice[i]).ThenBy(i => i).ToArray();
        int[] top = ranked[..c.NumExpertsPerTok];
        double gap = ranked.Length > top.Length ? choice[ranked[top.Length - 1]] - choice[ranked[top.Length]] : double.PositiveInfinity;
        double sum = top.Sum(i => s[i]) + 1e-20;
        double[] w = [.. top.Select(i => (c.NormTopkProb ? s[i] / sum : s[i]) * c.RoutedScalingFactor)];
        return (top, w, gap);
    }

    private static double[] Softmax(float[] logits)
    {
        double max = logits.Max();
        double[] e = [.. logits.Select(v => Math.Exp(v - max))];
        double total = e.Sum();
        return [.. e.Select(v => v / total)];
    }

    public static TheoryData<int, int, int, int, bool, ScoringFunction> Cases() => new()
    {
        { 64, 22, 1, 1, true, ScoringFunction.Sigmoid },
        { 64, 22, 1, 1, false, ScoringFunction.Sigmoid },
        { 32, 6, 8, 3, true, ScoringFunction.Sigmoid },
        { 256, 8, 8, 4, true, ScoringFunction.Sigmoid },
        { 8, 2, 1, 1, true, ScoringFunction.Softmax },
        { 60, 4, 1, 1, false, ScoringFunction.Softmax },
        { 16, 16, 1, 1, true, ScoringFunction.Sigmoid },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Selection_and_weights_match_a_float64_reference_on_random_logits(int n, int k, int groups, int keep, bool norm, ScoringFunction scoring)
    {
        int seed = Random.Shared.Next();
        var rng = new Random(seed);
        var c = Config(n, k, groups, keep, norm, 1 + (rng.NextDouble() * 4), scoring);
        float[] bias = [.. Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() - 0.5) * 0.2))];
        var router = new TopKRouter(c, bias);
        const int tokens = 64;
        float[] logits = [.. Enumerable.Range(0, tokens * n).Select(_ => (float)((rng.NextDouble() * 8) - 4))];
        RoutingPlan plan = router.Route(logits, tokens);
        int compared = 0;
        for (int t = 0; t < tokens; t++)
        {
            var (experts, weights, gap) = Reference(c, logits[(t * n)..((t + 1) * n)], bias);
            if (gap < 1e-5)
            {
                continue; // a near-tie is decided by fp32 rounding; exact ties are pinned below
            }

            compared++;
            Assert.True(experts.SequenceEqual(plan.ExpertsOf(t).ToArray()), $"seed {seed} token {t}: experts {string.Join(",", plan.ExpertsOf(t).ToArray())} vs reference {string.Join(",", experts)}");
            for (int j = 0; j < k; j++)
            {
                Assert.True(Math.Abs(plan.WeightsOf(t)[j] - weights[j]) <= 1e-5 * Math.Max(1, Math.Abs(weights[j])), $"seed {seed} token {t} slot {j}: {plan.WeightsOf(t)[j]} vs {weights[j]}");
            }
        }

        Assert.True(compared > tokens / 2, $"seed {seed}: only {compared} tokens without near-ties");
    }

    [Fact]
    public void Equal_scores_go_to_the_lower_expert_index()
    {
        var router = new TopKRouter(Config(6, 3, rsf: 1), new float[6]);
        float[] logits = [1f, 2f, 2f, 0f, 2f, 1f];
        var plan = router.Route(logits, 1);
        Assert.Equal([1, 2, 4], plan.ExpertsOf(0).ToArray());
    }

    [Fact]
    public void Ties_at_the_boundary_keep_the_lower_index()
    {
        var router = new TopKRouter(Config(6, 2, rsf: 1), new float[6]);
        float[] logits = [0.5f, 3f, 0.5f, 0.5f, -1f, 0.5f];
        Assert.Equal([1, 0], router.Route(logits, 1).ExpertsOf(0).ToArray());
    }

    [Fact]
    public void Bias_changes_selection_but_not_weights()
    {
        float[] logits = [2f, 1f, 0f, -1f];
        var noBias = new TopKRouter(Config(4, 1, norm: false, rsf: 1), new float[4]).Route(logits, 1);
        var biased = new TopKRouter(Config(4, 1, norm: false, rsf: 1), [0f, 0f, 0f, 0.9f]).Route(logits, 1);
        Assert.Equal(0, noBias.ExpertsOf(0)[0]);
        Assert.Equal(3, biased.ExpertsOf(0)[0]);
        Assert.Equal(1 / (1 + Math.Exp(1)), biased.WeightsOf(0)[0], 6);
    }

    [Fact]
    public void Normalized_weights_sum_to_the_routed_scaling_factor()
    {
        var router = new TopKRouter(Config(16, 4, rsf: 5), new float[16]);
        var rng = new Random();
        float[] logits = [.. Enumerable.Range(0, 16 * 10).Select(_ => (float)rng.NextDouble())];
        var plan = router.Route(logits, 10);
        for (int t = 0; t < 10; t++)
        {
            Assert.Equal(5.0, plan.WeightsOf(t).ToArray().Sum(), 4);
        }
    }

    [Fact]
    public void Group_limit_excludes_a_better_expert_in_a_weaker_group()
    {
        // 4 groups of 2. Group 0 has the single best expert but a weak partner; groups 1 and 2 are strong pairs.
        var router = new TopKRouter(Config(8, 2, groups: 4, keep: 2, rsf: 1), new float[8]);
        float[] logits = [5f, -5f, 3f, 3f, 2.5f, 2.5f, 0f, 0f];
        Assert.Equal([2, 3], router.Route(logits, 1).ExpertsOf(0).ToArray());
    }

    [Fact]
    public void Tied_groups_go_to_the_lower_group_index()
    {
        var router = new TopKRouter(Config(8, 2, groups: 4, keep: 1, rsf: 1), new float[8]);
        float[] logits = [0f, 0f, 1f, 2f, 2f, 1f, 0f, 0f];
        Assert.Equal([3, 2], router.Route(logits, 1).ExpertsOf(0).ToArray());
    }

    [Fact]
    public void Nan_scores_sort_last()
    {
        Span<int> top = stackalloc int[3];
        TopKRouter.SelectTop([float.NaN, 1f, float.NaN, 0f, -1f], top);
        Assert.Equal([1, 3, 4], top.ToArray());
    }

    [Fact]
    public void Select_top_agrees_with_a_stable_sort_on_random_values_with_duplicates()
    {
        var rng = new Random();
        for (int trial = 0; trial < 200; trial++)
        {
            int n = rng.Next(1, 100);
            int k = rng.Next(1, n + 1);
            float[] v = [.. Enumerable.Range(0, n).Select(_ => (float)rng.Next(0, 10))];
            var top = new int[k];
            TopKRouter.SelectTop(v, top);
            var expected = Enumerable.Range(0, n).OrderByDescending(i => v[i]).ThenBy(i => i).Take(k);
            Assert.Equal(expected, top);
        }
    }

    [Fact]
    public void Wrong_bias_length_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => new TopKRouter(Config(8, 2), new float[7]));
        Assert.Contains("7 entries, expected n_routed_experts = 8", e.Message, StringComparison.Ordinal);
    }
}

using MoECluster.Model.Dispatch;
using MoECluster.Model.Routing;

namespace MoECluster.Model.Tests.Dispatch;

public sealed class TokenPermutationTests
{
    [Fact]
    public void Slots_are_grouped_by_expert_in_token_order_and_each_appears_once()
    {
        var rng = new Random();
        var plan = new RoutingPlan(tokens: 50, topK: 3);
        for (int t = 0; t < 50; t++)
        {
            int[] picks = [.. Enumerable.Range(0, 10).OrderBy(_ => rng.Next()).Take(3)];
            picks.CopyTo(plan.Experts, t * 3);
        }

        var p = new TokenPermutation(plan, 10);
        Assert.Equal(150, p.Offsets[10]);
        Assert.Equal(Enumerable.Range(0, 150), p.Slots.Order());
        for (int e = 0; e < 10; e++)
        {
            var slots = p.SlotsOf(e).ToArray();
            Assert.All(slots, s => Assert.Equal(e, plan.Experts[s]));
            Assert.Equal(slots.Order(), slots);
            Assert.Equal(plan.Experts.Count(x => x == e), p.CountOf(e));
        }
    }

    [Fact]
    public void An_expert_outside_the_layer_is_refused()
    {
        var plan = new RoutingPlan(1, 1);
        plan.Experts[0] = 4;
        Assert.Throws<ArgumentException>(() => new TokenPermutation(plan, 4));
    }
}

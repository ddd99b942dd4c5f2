using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Requests;
using MoECluster.Model.Numerics;

namespace MoECluster.Cluster.Tests;

/// <summary>What the router logs as its own failure (an error line, a 500 at the gateway) and what it passes on quietly.</summary>
public sealed class RouterFailureLoggingTests
{
    [Fact]
    public void A_bug_in_the_router_is_unexpected_even_when_it_is_an_ArgumentException()
    {
        Assert.False(MoeRouterGrain.IsExpected(new ArgumentException("ShardsPerLayer must be at least 1")));
        Assert.False(MoeRouterGrain.IsExpected(new ArgumentOutOfRangeException("count")));
        Assert.False(MoeRouterGrain.IsExpected(new InvalidOperationException("bug")));
        Assert.False(MoeRouterGrain.IsExpected(new IndexOutOfRangeException()));
    }

    [Fact]
    public void The_clients_input_and_the_clusters_state_are_expected()
    {
        Assert.True(MoeRouterGrain.IsExpected(new ForwardRequestException(ForwardRequestProblem.Invalid, "hidden_states[0][0] is not finite")));
        Assert.True(MoeRouterGrain.IsExpected(new ForwardOverflowException("too large", null, null)));
        Assert.True(MoeRouterGrain.IsExpected(new OperationCanceledException()));
        Assert.True(MoeRouterGrain.IsExpected(new TimeoutException()));
        Assert.True(MoeRouterGrain.IsExpected(new SiloUnavailableException("gone")));
    }
}

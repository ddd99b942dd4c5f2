using MoECluster.Model.Balancing;

namespace MoECluster.Model.Tests.Balancing;

public sealed class ExpertLoadWindowTests
{
    [Fact]
    public void Tokens_count_while_they_are_inside_the_window_and_drop_out_after_it()
    {
        var window = new ExpertLoadWindow(4, TimeSpan.FromSeconds(10), buckets: 10);
        Assert.Equal(TimeSpan.FromSeconds(1), window.BucketWidth);
        window.Add([0, 1, 1], TimeSpan.FromSeconds(0.5));
        window.Add([3], TimeSpan.FromSeconds(5.2));
        Assert.Equal([1, 2, 0, 1], window.Sum(TimeSpan.FromSeconds(6)));

        // At 10.5 s the first second has left the window; at 15.5 s everything has.
        Assert.Equal([0, 0, 0, 1], window.Sum(TimeSpan.FromSeconds(10.5)));
        Assert.Equal([0, 0, 0, 0], window.Sum(TimeSpan.FromSeconds(15.5)));

        // A bucket is reused for a later second only after it is cleared.
        window.Add([2], TimeSpan.FromSeconds(10.7));
        Assert.Equal([0, 0, 1, 1], window.Sum(TimeSpan.FromSeconds(10.9)));
    }

    [Fact]
    public void An_expert_outside_the_layer_is_refused()
    {
        var window = new ExpertLoadWindow(4, TimeSpan.FromSeconds(10));
        Assert.Throws<ArgumentOutOfRangeException>(() => window.Add([4], TimeSpan.Zero));
        Assert.Throws<ArgumentOutOfRangeException>(() => window.Add([-1], TimeSpan.Zero));
    }
}

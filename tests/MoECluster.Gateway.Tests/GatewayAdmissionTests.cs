using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway.Limits;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The bounds on forward work in flight: requests and body bytes admitted before a body is read, and the bounded
/// queue in front of the routers. Every refusal is a <see cref="GatewayOverloadException"/> naming its key.
/// </summary>
public sealed class GatewayAdmissionTests
{
    [Fact]
    public void Requests_past_MaxRequestsInFlight_are_refused_until_one_is_done()
    {
        using var admission = Admission(o => o.MaxRequestsInFlight = 2);
        var first = admission.Admit(10);
        using var second = admission.Admit(10);
        var refused = Assert.Throws<GatewayOverloadException>(() => admission.Admit(10));
        Assert.Contains("limit of 2 forward requests in flight (MoECluster:Gateway:MaxRequestsInFlight)", refused.Message, StringComparison.Ordinal);
        Assert.Equal(2, admission.RequestsInFlight);

        first.Dispose();
        first.Dispose();
        Assert.Equal(1, admission.RequestsInFlight);
        using var third = admission.Admit(10);
        Assert.Equal(2, admission.RequestsInFlight);
    }

    [Fact]
    public void A_body_that_does_not_fit_the_byte_budget_is_refused_and_released_bytes_come_back()
    {
        using var admission = Admission(o =>
        {
            o.MaxRequestBytes = 100;
            o.MaxBodyBytesInFlight = 250;
        });
        using var a = admission.Admit(100);
        using var b = admission.Admit(100);
        var refused = Assert.Throws<GatewayOverloadException>(() => admission.Admit(100));
        Assert.Contains("holds 200 bytes of request bodies in flight; 100 more for this request would pass the limit of 250 bytes (MoECluster:Gateway:MaxBodyBytesInFlight)", refused.Message, StringComparison.Ordinal);
        Assert.Equal(200, admission.BodyBytesInFlight);
        Assert.Equal(2, admission.RequestsInFlight);

        // A small one still fits; once a body is decoded its bytes come back while the request stays in flight.
        using var small = admission.Admit(50);
        a.ReleaseBody();
        Assert.Equal(150, admission.BodyBytesInFlight);
        Assert.Equal(3, admission.RequestsInFlight);
        using var c = admission.Admit(100);
        Assert.Equal(250, admission.BodyBytesInFlight);
    }

    [Fact]
    public async Task The_router_queue_forwards_what_fits_queues_the_rest_in_order_and_refuses_past_its_bound()
    {
        using var admission = Admission(o =>
        {
            o.MaxTokensPerRequest = 10;
            o.MaxTokensInFlight = 10;
            o.MaxQueuedTokens = 10;
        });
        var a = await admission.EnterRoutersAsync(8, CancellationToken.None);
        Assert.Equal(8, admission.TokensInFlight);
        var b = admission.EnterRoutersAsync(5, CancellationToken.None).AsTask();
        var c = admission.EnterRoutersAsync(4, CancellationToken.None).AsTask();
        Assert.False(b.IsCompleted);
        Assert.False(c.IsCompleted);
        Assert.Equal(9, admission.TokensQueued);

        var refused = await Assert.ThrowsAsync<GatewayOverloadException>(() => admission.EnterRoutersAsync(2, CancellationToken.None).AsTask());
        Assert.Contains("queue in front of the routers is full: 9 tokens wait, and 2 more for this request would pass the limit of 10 (MoECluster:Gateway:MaxQueuedTokens)", refused.Message, StringComparison.Ordinal);

        // First come, first served: b (5) goes once a is done, c (4) joins it since both fit.
        a.Dispose();
        using var leaseB = await b.WaitAsync(TimeSpan.FromSeconds(5));
        using var leaseC = await c.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(9, admission.TokensInFlight);
        Assert.Equal(0, admission.TokensQueued);
    }

    [Fact]
    public async Task A_request_that_waits_past_QueueTimeoutSeconds_is_refused_and_a_client_that_leaves_stops_waiting()
    {
        using var admission = Admission(o =>
        {
            o.MaxTokensPerRequest = 10;
            o.MaxTokensInFlight = 10;
            o.QueueTimeoutSeconds = 0.2;
        });
        using var all = await admission.EnterRoutersAsync(10, CancellationToken.None);
        var waited = await Assert.ThrowsAsync<GatewayOverloadException>(() => admission.EnterRoutersAsync(1, CancellationToken.None).AsTask());
        Assert.Contains("(MoECluster:Gateway:QueueTimeoutSeconds, MoECluster:Gateway:MaxTokensInFlight)", waited.Message, StringComparison.Ordinal);

        using var gone = new CancellationTokenSource();
        var waiting = admission.EnterRoutersAsync(1, gone.Token).AsTask();
        await gone.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        Assert.Equal(0, admission.TokensQueued);
    }

    [Theory]
    [InlineData("body", "MoECluster:Gateway:MaxBodyBytesInFlight = 1000 is less than MoECluster:Gateway:MaxRequestBytes = 2000")]
    [InlineData("tokens", "MoECluster:Gateway:MaxTokensInFlight = 8 is less than MoECluster:Gateway:MaxTokensPerRequest = 16")]
    [InlineData("requests", "MoECluster:Gateway:MaxRequestsInFlight = 0: expected at least 1")]
    public void Limits_that_cannot_work_together_fail_at_start(string which, string message)
    {
        var error = Assert.Throws<InvalidOperationException>(() => Admission(o =>
        {
            switch (which)
            {
                case "body":
                    o.MaxRequestBytes = 2000;
                    o.MaxBodyBytesInFlight = 1000;
                    break;
                case "tokens":
                    o.MaxTokensPerRequest = 16;
                    o.MaxTokensInFlight = 8;
                    break;
                default:
                    o.MaxRequestsInFlight = 0;
                    break;
            }
        }));
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_defaults_admit_four_bodies_of_60_MiB_and_one_request_of_the_most_tokens()
    {
        using var admission = Admission(_ => { });
        var tickets = Enumerable.Range(0, 4).Select(_ => admission.Admit(60 << 20)).ToList();
        Assert.Throws<GatewayOverloadException>(() => admission.Admit(60 << 20));
        tickets.ForEach(t => t.Dispose());
        var report = admission.Report();
        Assert.Equal(new AdmissionReport(0, 512, 0, 256L << 20, 0, 8192, 0, 8192), report);
    }

    private static GatewayAdmission Admission(Action<GatewayOptions> configure)
    {
        var options = new MoeClusterOptions();
        configure(options.Gateway);
        return new GatewayAdmission(Options.Create(options));
    }
}

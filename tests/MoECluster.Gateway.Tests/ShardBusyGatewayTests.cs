using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway.Live;
using MoECluster.Gateway.Security;
using Orleans.Serialization;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// A busy expert shard at the gateway: <see cref="ShardBusyException"/> crosses the grain boundary as itself with its
/// retry-after hint, and the gateway answers it 429 with Retry-After, counted by its guard as busy in the request
/// statistics (and /stats) — neither failed nor rejected.
/// </summary>
public sealed class ShardBusyGatewayTests
{

    [Fact]
    public void A_busy_refusal_crosses_the_grain_boundary_as_itself_and_is_a_429()
    {
        var serializer = new ServiceCollection().AddSerializer().BuildServiceProvider().GetRequiredService<Serializer>();
        Exception sent = new ShardBusyException("the expert shard's queue is full; retry after 7 s", 7);
        var received = Assert.IsType<ShardBusyException>(serializer.Deserialize<Exception>(serializer.SerializeToArray(sent)));
        Assert.Equal(7, received.RetryAfterSeconds);
        Assert.Equal(sent.Message, received.Message);
        Assert.Equal((429, sent.Message), GatewayEndpoints.RouterError(received));
    }

    [Fact]
    public async Task A_busy_shard_is_a_429_with_Retry_After_counted_as_busy_not_as_a_failure()
    {
        // The real guard (accounting) ahead of a forward endpoint whose router answered busy, on Kestrel.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.Configure<MoeClusterOptions>(builder.Configuration.GetSection(MoeClusterOptions.Section));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<GatewayRequestStatistics>();
        builder.Services.AddMoeGatewaySecurity();
        await using var app = builder.Build();
        app.UseMiddleware<GatewayRequestGuard>();
        app.MapPost("/v1/forward", (HttpContext http) => GatewayEndpoints.Busy(http, new ShardBusyException("the expert shard's queue is full; retry after 7 s", 7)));
        await app.StartAsync();
        try
        {
            var url = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
            using var http = new HttpClient { BaseAddress = url };
            for (int i = 0; i < 2; i++)
            {
                using var body = new StringContent("{}", Encoding.UTF8, "application/json");
                using var response = await http.PostAsync("/v1/forward", body);
                Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
                Assert.Equal(TimeSpan.FromSeconds(7), response.Headers.RetryAfter?.Delta);
                Assert.Equal("the expert shard's queue is full; retry after 7 s", JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!.GetValue<string>());
            }

            // Counted apart: busy, never failed (5xx), rejected (4xx) or overloaded (503); "busy" in the /stats document.
            var report = app.Services.GetRequiredService<GatewayRequestStatistics>().Snapshot();
            Assert.Equal(new RequestCounts(Sent: 0, Answered: 0, Failed: 0, Rejected: 0, Overloaded: 0, Disconnected: 0, Busy: 2), report.Requests);
            var model = Assert.Single(report.PerModel);
            Assert.Equal((2L, 0L, 0L), (model.Busy, model.Failed, model.Rejected));
            Assert.Equal(2, JsonSerializer.SerializeToNode(report, GatewayEndpoints.Json)!["requests"]!["busy"]!.GetValue<long>());
        }
        finally
        {
            await app.StopAsync();
        }
    }
}

using System.Net;
using System.Text;
using System.Text.Json;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// <c>POST /v1/admin/rebalance</c> refuses what it cannot act on before any grain is asked: no API key (401), an unknown
/// model (404), a body that is not a rebalance request (400, naming the field). What it does with a good request is
/// tested on real clusters (Cluster.Tests ReplicatedPlacementTests, EndToEnd.Tests RebalanceTests).
/// </summary>
[Collection(KServeGatewayGroup.Name)]
public sealed class PlacementEndpointTests(KServeGatewayFixture gateway)
{
    [Fact]
    public async Task Rebalance_without_an_api_key_is_401()
    {
        using var anonymous = new HttpClient { BaseAddress = gateway.Url };
        using var response = await anonymous.PostAsync("/v1/admin/rebalance", null);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        using var placement = await anonymous.GetAsync("/v1/admin/placement");
        Assert.Equal(HttpStatusCode.Unauthorized, placement.StatusCode);
    }

    [Fact]
    public async Task Rebalance_of_an_unknown_model_is_404_naming_the_served_ones()
    {
        using var response = await gateway.Http.PostAsync("/v1/admin/rebalance?model=nope", null);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        string error = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString()!;
        Assert.Contains("unknown model 'nope'", error, StringComparison.Ordinal);
        Assert.Contains(KServeGatewayFixture.Latent, error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[1]", "not a JSON object")]
    [InlineData("{\"redundant_experts\": -1}", "'redundant_experts'")]
    [InlineData("{\"redundant_experts\": 1.5}", "'redundant_experts'")]
    [InlineData("{\"dry_run\": 1}", "'dry_run'")]
    [InlineData("{\"replicas\": 3}", "'replicas' is not a field")]
    [InlineData("{\"redundant_experts\": ", "rebalance body")]
    public async Task A_body_that_is_not_a_rebalance_request_is_400_naming_what_is_wrong(string body, string expected)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await gateway.Http.PostAsync($"/v1/admin/rebalance?model={KServeGatewayFixture.Latent}", content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        string error = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString()!;
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_body_larger_than_4_KiB_is_400()
    {
        using var content = new StringContent("{\"dry_run\": true" + new string(' ', 5000) + "}", Encoding.UTF8, "application/json");
        using var response = await gateway.Http.PostAsync("/v1/admin/rebalance", content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("more than 4096 bytes", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }
}

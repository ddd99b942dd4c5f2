using System.Net;
using System.Text;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The client's reading of /v1/models (both shapes), and: a gateway error reaches the CLI as a <see cref="GatewayException"/> whose message is never empty: an answer without
/// a body (an unhandled failure's 500) says its status instead (it used to print "moecluster run: error: " and nothing).
/// </summary>
public sealed class GatewayClientErrorTests
{
    private sealed class Answer(HttpStatusCode status, string body, string? contentType) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            Task.FromResult(new HttpResponseMessage(status)
            {
                Content = contentType is null ? new ByteArrayContent([]) : new StringContent(body, Encoding.UTF8, contentType),
            });
    }

    private static async Task<GatewayException> ForwardFailsAsync(HttpStatusCode status, string body, string? contentType)
    {
        using var http = new HttpClient(new Answer(status, body, contentType)) { BaseAddress = new Uri("http://gateway.test") };
        var client = new GatewayClient(http);
        return await Assert.ThrowsAsync<GatewayException>(() => client.ForwardAsync("lat", 1, new float[4], 1, 4, "fp32"));
    }

    [Fact]
    public async Task A_500_without_a_body_gets_a_message_naming_its_status()
    {
        var e = await ForwardFailsAsync(HttpStatusCode.InternalServerError, string.Empty, null);
        Assert.Equal(500, e.StatusCode);
        Assert.StartsWith("the gateway answered 500 Internal Server Error with no message", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{\"error\": \"\"}", "application/json")]
    [InlineData("   ", "text/plain")]
    public async Task A_blank_or_odd_error_body_gets_a_message_naming_its_status(string body, string contentType)
    {
        var e = await ForwardFailsAsync(HttpStatusCode.BadGateway, body, contentType);
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        Assert.Contains("502", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_gateway_message_is_kept_when_there_is_one()
    {
        var e = await ForwardFailsAsync(HttpStatusCode.NotFound, "{\"error\": \"unknown model 'x'\"}", "application/json");
        Assert.Equal("unknown model 'x'", e.Message);
    }

    [Theory]
    [InlineData("{\"object\":\"list\",\"data\":[{\"id\":\"lat\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"moecluster\",ENTRY}]}")]
    [InlineData("[{\"id\":\"lat\",ENTRY}]")]
    public async Task Models_are_read_from_the_list_shape_and_from_the_bare_array_of_older_gateways(string template)
    {
        const string Entry = "\"mode\":\"latent\",\"hidden_size\":64,\"latent_size\":16,\"experts\":8,\"top_k\":2,\"moe_layers\":[1,3],\"shards_per_layer\":4,\"is_default\":true";
        using var http = new HttpClient(new Answer(HttpStatusCode.OK, template.Replace("ENTRY", Entry, StringComparison.Ordinal), "application/json")) { BaseAddress = new Uri("http://gateway.test") };
        var model = Assert.Single(await new GatewayClient(http).ModelsAsync());
        Assert.Equal(new ServedModel("lat", "latent", 64, 16, 8, 2, model.MoeLayers, 4, true), model);
        Assert.Equal([1, 3], model.MoeLayers);
    }
}

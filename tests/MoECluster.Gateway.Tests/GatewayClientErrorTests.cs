using System.Net;
using System.Text;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// A gateway error reaches the CLI as a <see cref="GatewayException"/> whose message is never empty: an answer without
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
}

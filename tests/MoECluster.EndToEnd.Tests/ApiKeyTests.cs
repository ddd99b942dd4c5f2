using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Playwright;
using MoECluster.Gateway.Security;
using MoECluster.Testing;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// A real front-end silo process started with API keys from the environment and from a key file: health probes stay
/// open, everything else needs a key (Bearer or X-Api-Key; Basic on reads, which is how a browser opens the live page
/// and its event stream), refusals are 401 with a challenge and counted, and no key reaches the silo's log.
/// </summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class ApiKeyTests(ProcessClusterFixture cluster)
{
    private const string EnvironmentKey = "env-key-3f9a1c0e5b7d2468ace0";
    private const string FileKey = "file-key-b1d2e3f4a5b6c7d8e9f0";
    private const string WrongKey = "wrong-key-000000000000000000";

    [Fact]
    public async Task A_front_end_with_keys_refuses_requests_without_one_and_serves_those_with_one()
    {
        using var dir = new TempDirectory("moecluster-keys-");
        string keysFile = dir.File("gateway-keys.txt");
        await File.WriteAllTextAsync(keysFile, $"# keys of the gateway\n{FileKey}\n\n");
        int[] ports = FreePorts.Take(2);
        string url = $"http://127.0.0.1:{ports[1]}";
        using var silo = BackgroundProcess.Moecluster(
            new Dictionary<string, string>
            {
                ["Orleans__ClusterId"] = "moecluster-keys-test",
                ["MoECluster__Gateway__ApiKeys__0"] = EnvironmentKey,
                ["MoECluster__Gateway__ApiKeysFile"] = keysFile,
            },
            "silo", "--role", "frontend", "--name", "keyed", "--silo-port", ports[0].ToString(CultureInfo.InvariantCulture), "--gateway-port", "0",
            "--urls", url, "--model", $"lat={cluster.LatentPath}");
        using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(30) };
        await ProcessWait.UntilAsync("the front-end's /alive", async () => (await http.GetAsync("/alive")).IsSuccessStatusCode, TimeSpan.FromSeconds(90), silo);

        // Probes stay open (readiness is 503 here: this front-end has no expert silo).
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/alive")).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.GetAsync("/health")).StatusCode);

        // No key, a wrong key: 401 with a challenge and a message.
        using (var response = await http.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Contains(response.Headers.WwwAuthenticate, h => h.Scheme == "Bearer");
            Assert.Contains("an API key is required", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/v1/models", ("Authorization", "Bearer " + WrongKey))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/stats")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/dashboard")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Get, "/")).StatusCode);

        // Either key, either header.
        using (var models = await SendAsync(http, HttpMethod.Get, "/v1/models", ("Authorization", "Bearer " + EnvironmentKey)))
        {
            Assert.Equal(HttpStatusCode.OK, models.StatusCode);
            Assert.Equal("lat", JsonNode.Parse(await models.Content.ReadAsStringAsync())!["data"]![0]!["id"]!.GetValue<string>());
        }

        Assert.Equal(HttpStatusCode.OK, (await SendAsync(http, HttpMethod.Get, "/v1/models", (GatewayRequestGuard.ApiKeyHeader, FileKey))).StatusCode);

        // Forward requests: refused without a key and with browser (Basic) credentials; with a key the body is checked next.
        string basic = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("ops:" + FileKey));
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Post, "/v1/forward", body: "{\"hidden_states\":[]}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await SendAsync(http, HttpMethod.Post, "/v1/forward", ("Authorization", basic), "{\"hidden_states\":[]}")).StatusCode);
        using (var checkedBody = await SendAsync(http, HttpMethod.Post, "/v1/forward", ("Authorization", "Bearer " + FileKey), "{\"hidden_states\":[]}"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, checkedBody.StatusCode);
            Assert.Contains("hidden_states is missing or empty", await checkedBody.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        using (var stats = await SendAsync(http, HttpMethod.Get, "/stats", ("Authorization", basic)))
        {
            Assert.Equal(HttpStatusCode.OK, stats.StatusCode);
            Assert.Equal(3, JsonNode.Parse(await stats.Content.ReadAsStringAsync())!["gateway"]!["requests"]!["rejected"]!.GetValue<long>());
        }

        // A browser with the key as its Basic password (what its login prompt sends): the page opens and its event stream flows.
        Assert.True(File.Exists(LiveRoutingPageTests.ChromiumPath), $"{LiveRoutingPageTests.ChromiumPath} is missing");
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = LiveRoutingPageTests.ChromiumPath,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        });
        await using var context = await browser.NewContextAsync(new BrowserNewContextOptions { HttpCredentials = new HttpCredentials { Username = "ops", Password = FileKey } });
        var page = await context.NewPageAsync();
        Assert.Equal(200, (await page.GotoAsync(url + "/"))!.Status);
        await page.WaitForSelectorAsync("#connection[data-state=live]", new PageWaitForSelectorOptions { Timeout = 15_000 });

        // Refusals were logged with the remote address; no key, right or wrong, was.
        Assert.True(await silo.WaitForOutputAsync("Refused GET /v1/models from 127.0.0.1: wrong API key", TimeSpan.FromSeconds(10)), silo.Output);
        string log = silo.Output;
        Assert.Contains("Gateway API keys: 2 configured", log, StringComparison.Ordinal);
        Assert.Contains("Refused POST /v1/forward from 127.0.0.1: no API key", log, StringComparison.Ordinal);
        Assert.Contains("Refused GET /v1/models from 127.0.0.1: wrong API key", log, StringComparison.Ordinal);
        foreach (string key in new[] { EnvironmentKey, FileKey, WrongKey })
        {
            Assert.DoesNotContain(key, log, StringComparison.Ordinal);
        }
    }

    private static async Task<HttpResponseMessage> SendAsync(HttpClient http, HttpMethod method, string path, (string Name, string Value)? header = null, string? body = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (header is { } h)
        {
            request.Headers.TryAddWithoutValidation(h.Name, h.Value);
        }

        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, new MediaTypeHeaderValue("application/json"));
        }

        return await http.SendAsync(request);
    }
}

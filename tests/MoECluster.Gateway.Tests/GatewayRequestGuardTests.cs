using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway.Live;
using MoECluster.Gateway.Security;
using MoECluster.ServiceDefaults;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The gateway's guard on a real Kestrel port (127.0.0.1:0) in front of stand-in endpoints at the gateway's paths:
/// API keys (header, Basic on reads only, constant-time hash comparison behind), open health probes, 401 bodies and
/// challenges, nothing logged of any key, accounting of refused forward requests, the start-up checks.
/// </summary>
public sealed class GatewayRequestGuardTests : IDisposable
{
    private const string KeyA = "key-a-0123456789abcdef";
    private const string KeyB = "key-b-fedcba9876543210";
    private const string FileKey = "file-key-00112233445566778899";
    private const string WrongKey = "not-the-key-ZZZZZZZZZZZZZ";

    private readonly string _keysFile = Path.Combine(Path.GetTempPath(), $"moecluster-keys-{Guid.NewGuid():N}.txt");

    public void Dispose() => File.Delete(_keysFile);

    [Fact]
    public async Task With_keys_every_path_but_the_health_probes_needs_one()
    {
        await using var app = await StartAsync(Keys());
        using var http = new HttpClient { BaseAddress = app.Url };
        foreach (string path in new[] { "/v1/models", "/stats", "/", "/live/live.js", "/v1/stats/stream", "/dashboard", "/dashboard/DashboardCounters", "/nothing-here" })
        {
            using var response = await http.GetAsync(path);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Contains(response.Headers.WwwAuthenticate, h => h.Scheme == "Bearer");
            Assert.Contains(response.Headers.WwwAuthenticate, h => h.Scheme == "Basic");
            Assert.Contains("an API key is required", await ErrorAsync(response), StringComparison.Ordinal);
        }

        using var post = await http.PostAsync("/v1/forward", Json("{}"));
        Assert.Equal(HttpStatusCode.Unauthorized, post.StatusCode);
        Assert.Equal("Bearer", Assert.Single(post.Headers.WwwAuthenticate).Scheme);

        foreach (string path in new[] { "/health", "/alive" })
        {
            using var response = await http.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }

    [Fact]
    public async Task Bearer_and_X_Api_Key_with_any_configured_key_are_accepted_on_every_method()
    {
        await using var app = await StartAsync(Keys());
        using var http = new HttpClient { BaseAddress = app.Url };
        foreach (string key in new[] { KeyA, KeyB, FileKey })
        {
            using var bearer = new HttpRequestMessage(HttpMethod.Post, "/v1/forward") { Content = Json("{}") };
            bearer.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var answered = await http.SendAsync(bearer);
            Assert.Equal(HttpStatusCode.OK, answered.StatusCode);

            using var header = new HttpRequestMessage(HttpMethod.Get, "/stats");
            header.Headers.Add(GatewayRequestGuard.ApiKeyHeader, key);
            using var stats = await http.SendAsync(header);
            Assert.Equal(HttpStatusCode.OK, stats.StatusCode);
        }
    }

    [Fact]
    public async Task A_wrong_key_gets_401_invalid_token_and_neither_key_is_logged()
    {
        var logs = new LogSink();
        await using var app = await StartAsync(Keys(), logs);
        using var http = new HttpClient { BaseAddress = app.Url };
        foreach (string wrong in new[] { WrongKey, KeyA[..^1], KeyA + "x", string.Empty.PadRight(4096, 'k') })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/layers/1/forward") { Content = Json("{}") };
            request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + wrong);
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Contains("invalid_token", response.Headers.WwwAuthenticate.ToString(), StringComparison.Ordinal);
            Assert.Equal("the API key is not valid", await ErrorAsync(response));
        }

        using var other = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        other.Headers.Add(GatewayRequestGuard.ApiKeyHeader, WrongKey);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.SendAsync(other)).StatusCode);

        string log = logs.Text;
        Assert.Contains("Refused POST /v1/layers/1/forward from 127.0.0.1: wrong API key", log, StringComparison.Ordinal);
        Assert.Contains("Refused GET /v1/models from 127.0.0.1: wrong API key", log, StringComparison.Ordinal);
        foreach (string secret in new[] { KeyA, KeyB, FileKey, WrongKey, KeyA[..^1] })
        {
            Assert.DoesNotContain(secret, log, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Basic_credentials_carry_the_key_for_reads_only()
    {
        await using var app = await StartAsync(Keys());
        using var http = new HttpClient { BaseAddress = app.Url };
        string basic = Convert.ToBase64String(Encoding.UTF8.GetBytes("anyone:" + KeyB));
        foreach (string path in new[] { "/", "/v1/stats/stream", "/dashboard/DashboardCounters", "/stats" })
        {
            using var get = new HttpRequestMessage(HttpMethod.Get, path);
            get.Headers.Authorization = new AuthenticationHeaderValue("Basic", basic);
            Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(get)).StatusCode);
        }

        using var wrong = new HttpRequestMessage(HttpMethod.Get, "/");
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(KeyB + ":x")));
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.SendAsync(wrong)).StatusCode);

        // A browser sends cached Basic credentials on its own, even on a form another site posts: not enough for a POST.
        using var post = new HttpRequestMessage(HttpMethod.Post, "/v1/forward") { Content = Json("{}") };
        post.Headers.Authorization = new AuthenticationHeaderValue("Basic", basic);
        using var refused = await http.SendAsync(post);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.Contains("Basic credentials are accepted only on GET and HEAD", await ErrorAsync(refused), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_keys_the_gateway_is_open()
    {
        await using var app = await StartAsync([]);
        using var http = new HttpClient { BaseAddress = app.Url };
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/stats")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("/v1/forward", Json("{}"))).StatusCode);
    }

    [Fact]
    public async Task Refused_forward_requests_are_counted_as_rejected_and_routing_4xx_get_an_error_body()
    {
        await using var app = await StartAsync(Keys());
        using var http = new HttpClient { BaseAddress = app.Url };
        var statistics = app.Services.GetRequiredService<GatewayRequestStatistics>();
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.PostAsync("/v1/forward", Json("{}"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await http.PostAsync("/v1/layers/abc/forward", Json("{}"))).StatusCode);

        using var get = new HttpRequestMessage(HttpMethod.Get, "/v1/forward");
        get.Headers.Authorization = new AuthenticationHeaderValue("Bearer", KeyA);
        using var wrongMethod = await http.SendAsync(get);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, wrongMethod.StatusCode);
        Assert.Contains("method GET is not allowed on /v1/forward", await ErrorAsync(wrongMethod), StringComparison.Ordinal);

        using var ok = new HttpRequestMessage(HttpMethod.Post, "/v1/forward") { Content = Json("{}") };
        ok.Headers.Authorization = new AuthenticationHeaderValue("Bearer", KeyA);
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(ok)).StatusCode);

        var report = statistics.Snapshot();
        Assert.Equal(3, report.Requests.Rejected);
        Assert.Equal(1, report.Requests.Answered);
    }

    [Theory]
    [InlineData("http://0.0.0.0:0", false, true)]
    [InlineData("http://0.0.0.0:0", true, false)]
    [InlineData("http://127.0.0.1:0", false, false)]
    public async Task An_open_gateway_beyond_loopback_draws_one_warning(string url, bool withKeys, bool warned)
    {
        var logs = new LogSink();
        await using (await StartAsync(withKeys ? Keys() : [], logs, url))
        {
        }

        int warnings = logs.Entries.Count(e => e.Level == LogLevel.Warning && e.Message.Contains("beyond loopback, without API keys", StringComparison.Ordinal));
        Assert.Equal(warned ? 1 : 0, warnings);
        Assert.Equal(withKeys, logs.Text.Contains("Gateway API keys: 3 configured", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("", "MoECluster:Gateway:ApiKeys:0 is empty")]
    [InlineData("with space", "MoECluster:Gateway:ApiKeys:0: an API key may hold only visible ASCII")]
    public async Task An_unusable_configured_key_fails_the_start(string key, string message)
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => StartAsync(new() { ["MoECluster:Gateway:ApiKeys:0"] = key }));
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_key_file_that_is_missing_or_holds_no_key_fails_the_start()
    {
        var missing = await Assert.ThrowsAsync<InvalidOperationException>(() => StartAsync(new() { ["MoECluster:Gateway:ApiKeysFile"] = _keysFile }));
        Assert.Contains("cannot be read", missing.Message, StringComparison.Ordinal);
        await File.WriteAllTextAsync(_keysFile, "# only a comment\n\n   \n");
        var empty = await Assert.ThrowsAsync<InvalidOperationException>(() => StartAsync(new() { ["MoECluster:Gateway:ApiKeysFile"] = _keysFile }));
        Assert.Contains("holds no key", empty.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Loopback_detection_covers_names_v4_v6_and_wildcards()
    {
        Assert.True(GatewaySecurityCheck.IsLoopbackOnly(["http://127.0.0.1:8080", "http://localhost:80", "http://[::1]:9"]));
        Assert.False(GatewaySecurityCheck.IsLoopbackOnly(["http://127.0.0.1:8080", "http://[::]:8080"]));
        Assert.False(GatewaySecurityCheck.IsLoopbackOnly(["http://0.0.0.0:8080"]));
        Assert.False(GatewaySecurityCheck.IsLoopbackOnly(["http://10.1.2.3:8080"]));
        Assert.False(GatewaySecurityCheck.IsLoopbackOnly(["http://gateway.example:8080"]));
    }

    [Fact]
    public void Forward_paths_are_recognized_whatever_the_layer_text()
    {
        Assert.True(GatewayRequestGuard.IsForwardPath("/v1/forward"));
        Assert.True(GatewayRequestGuard.IsForwardPath("/V1/Layers/3/Forward"));
        Assert.True(GatewayRequestGuard.IsForwardPath("/v1/layers/abc/forward"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v1/layers//forward"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v1/layers/1/2/forward"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v1/models"));
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static async Task<string> ErrorAsync(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!.GetValue<string>();

    private Dictionary<string, string?> Keys()
    {
        File.WriteAllText(_keysFile, $"# gateway keys\n\n  {FileKey}  \n");
        return new()
        {
            ["MoECluster:Gateway:ApiKeys:0"] = KeyA,
            ["MoECluster:Gateway:ApiKeys:1"] = KeyB,
            ["MoECluster:Gateway:ApiKeysFile"] = _keysFile,
        };
    }

    /// <summary>A WebApplication as a front-end silo builds it, with stand-ins at the gateway's paths and the real guard ahead of them.</summary>
    private static async Task<RunningApp> StartAsync(Dictionary<string, string?> settings, LogSink? logs = null, string url = "http://127.0.0.1:0")
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.WebHost.UseUrls(url);
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
        }

        builder.AddServiceDefaults();
        builder.Services.Configure<MoeClusterOptions>(builder.Configuration.GetSection(MoeClusterOptions.Section));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<GatewayRequestStatistics>();
        builder.Services.AddMoeGatewaySecurity();
        var app = builder.Build();
        app.MapDefaultEndpoints();
        app.UseMiddleware<GatewayRequestGuard>();
        app.MapPost("/v1/forward", () => Results.Json(new { ok = true }));
        app.MapPost("/v1/layers/{layer}/forward", (string layer) => Results.Json(new { layer }));
        foreach (string path in new[] { "/v1/models", "/stats", "/", "/live/live.js", "/v1/stats/stream", "/dashboard", "/dashboard/DashboardCounters" })
        {
            app.MapGet(path, () => Results.Text("ok"));
        }

        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }

        return new RunningApp(app);
    }

    private sealed class RunningApp(WebApplication app) : IAsyncDisposable
    {
        public Uri Url { get; } = new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal));

        public IServiceProvider Services => app.Services;

        public async ValueTask DisposeAsync()
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    /// <summary>Every log entry of every category, formatted as the console would show it.</summary>
    private sealed class LogSink : ILoggerProvider
    {
        private readonly ConcurrentQueue<(LogLevel Level, string Message)> _entries = new();

        public IReadOnlyList<(LogLevel Level, string Message)> Entries => [.. _entries];

        public string Text => string.Join("\n", _entries.Select(e => e.Message));

        public ILogger CreateLogger(string categoryName) => new Logger(_entries);

        public void Dispose()
        {
        }

        private sealed class Logger(ConcurrentQueue<(LogLevel, string)> entries) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                entries.Enqueue((logLevel, formatter(state, exception)));
        }
    }
}

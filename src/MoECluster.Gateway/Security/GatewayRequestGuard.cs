using System.Diagnostics;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway.Limits;
using MoECluster.Gateway.Live;

namespace MoECluster.Gateway.Security;

/// <summary>
/// The gateway's front door, ahead of every endpoint:
/// <list type="bullet">
/// <item>API keys. With keys configured, every path except the health probes (/health, /alive, and KServe's
/// /v2/health/live and /v2/health/ready) needs one:
/// <c>Authorization: Bearer KEY</c> or <c>X-Api-Key: KEY</c> on any request, or HTTP Basic with the key as password
/// (any user name) on GET and HEAD only. Missing or wrong: 401 with <c>{"error": ...}</c> and
/// <c>WWW-Authenticate: Bearer</c> (plus <c>Basic</c> on GET/HEAD).</item>
/// <item>Accounting: every request to a forward endpoint (KServe's infer included), whatever answers it (this guard, routing, the handler),
/// is counted in <see cref="GatewayRequestStatistics"/> as answered (2xx), rejected (4xx), failed (5xx), refused for
/// overload (the 503 of a limit on work in flight) or disconnected (its client went away first; no stack trace is
/// logged for it).</item>
/// <item>The Orleans Dashboard's log stream (<c>/dashboard/Trace</c>) only with API keys configured (403 without).</item>
/// <item>The body-size limit handed to the server for forward requests, and <c>{"error": ...}</c> bodies for the
/// 4xx that routing answers without one (405 wrong method, 404 no such endpoint).</item>
/// </list>
/// </summary>
/// <remarks>
/// Why Basic on GET/HEAD: a browser cannot put a header on an <c>EventSource</c> (the live page's stream) or on the
/// Orleans Dashboard's own requests, but it answers a <c>Basic</c> challenge with its login prompt and then sends the
/// credentials itself to every same-origin request. Keys in query strings were the alternative; they end up in
/// browser history, proxy and access logs and Referer headers, so none is read from a URL. Browser-cached
/// credentials are ambient (a page on another site can make the browser send them), so they are accepted only for
/// reads: GET and HEAD endpoints have no side effects, and the same-origin policy keeps their answers from other
/// sites. Forward requests (POST) need a key in a header, which no other site can make a browser add.
/// The live page (<c>/</c>) and its assets need a key too: they hold no data, but protecting them is what makes the
/// browser ask for the key before the page opens its stream.
/// </remarks>
public sealed partial class GatewayRequestGuard(
    RequestDelegate next,
    GatewayApiKeys keys,
    GatewayRequestStatistics statistics,
    IOptions<MoeClusterOptions> options,
    ILogger<GatewayRequestGuard> logger)
{
    public const string ApiKeyHeader = "X-Api-Key";
    public const string Realm = "moecluster";

    /// <summary>Paths open without a key: the health probes of the service defaults.</summary>
    private static readonly string[] OpenPaths = ["/health", "/alive", "/v2/health/live", "/v2/health/ready"];

    public async Task InvokeAsync(HttpContext http)
    {
        ArgumentNullException.ThrowIfNull(http);
        string path = http.Request.Path.Value ?? "/";
        bool forward = IsForwardPath(path);
        ForwardOutcome? outcome = null;
        long started = Stopwatch.GetTimestamp();
        if (forward)
        {
            outcome = new ForwardOutcome();
            http.Features.Set(outcome);
            if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size)
            {
                size.MaxRequestBodySize = options.Value.Gateway.MaxRequestBytes;
            }
        }

        try
        {
            if (keys.Enabled && !IsOpenPath(path) && !Authorize(http, out string reason))
            {
                LogRefused(logger, http.Request.Method, Shorten(path), http.Connection.RemoteIpAddress?.ToString() ?? "unknown", reason);
                await ChallengeAsync(http, reason);
            }
            else if (!keys.Enabled && IsTracePath(path))
            {
                http.Response.StatusCode = StatusCodes.Status403Forbidden;
                await http.Response.WriteAsJsonAsync(new { error = TraceClosedMessage }, GatewayEndpoints.Json);
            }
            else
            {
                await next(http);
                // A refusal without a body (routing's 405 and 404): no content type was set, nothing was written.
                if (!http.Response.HasStarted && http.Response.StatusCode >= 400 && string.IsNullOrEmpty(http.Response.ContentType) && IsApiPath(path))
                {
                    await WriteMissingErrorAsync(http, path);
                }
            }
        }
        catch (Exception e) when (forward && PooledRequestBody.IsClientGone(http, e))
        {
            // Nobody to answer and nothing wrong with the server: counted apart, logged without a stack trace. The
            // request is aborted so that the server does not try to drain a body whose connection is gone (which it
            // would log as an error with a stack trace when the read failed mid-way).
            statistics.RecordDisconnected(outcome!.Model);
            http.Abort();
            LogClientGone(logger, http.Request.Method, path);

            return;
        }
        catch when (forward)
        {
            statistics.RecordFailed(outcome!.Model);
            throw;
        }

        if (forward)
        {
            int status = http.Response.StatusCode;
            if (http.RequestAborted.IsCancellationRequested && !http.Response.HasStarted)
            {
                statistics.RecordDisconnected(outcome!.Model);
            }
            else if (outcome!.Overloaded)
            {
                statistics.RecordOverloaded(outcome.Model);
            }
            else if (outcome.Busy)
            {
                statistics.RecordBusy(outcome.Model);
            }
            else if (status < 300)
            {
                statistics.RecordAnswered(outcome!.Model, outcome.Tokens, Stopwatch.GetElapsedTime(started));
            }
            else if (status < 500)
            {
                statistics.RecordRejected(outcome!.Model);
            }
            else
            {
                statistics.RecordFailed(outcome!.Model);
            }
        }
    }

    /// <summary>
    /// <c>POST /v1/forward</c>, <c>POST /v1/layers/{layer}/forward</c> and KServe's <c>POST /v2/models/{model}/infer</c>
    /// (and <c>/v2/models/{model}/versions/{version}/infer</c>), whatever the method, layer, model and version text.
    /// </summary>
    public static bool IsForwardPath(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path.Equals("/v1/forward", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        return IsOneSegmentBetween(path, "/v1/layers/", "/forward") || IsOneSegmentBetween(path, "/v2/models/", "/infer") || IsVersionedInfer(path);
    }

    /// <summary><c>/v2/models/{model}/versions/{version}/infer</c>.</summary>
    private static bool IsVersionedInfer(string path)
    {
        const string Models = "/v2/models/";
        const string Infer = "/infer";
        if (path.Length <= Models.Length + Infer.Length || !path.StartsWith(Models, StringComparison.OrdinalIgnoreCase) || !path.EndsWith(Infer, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var middle = path.AsSpan(Models.Length, path.Length - Models.Length - Infer.Length);
        int first = middle.IndexOf('/');
        if (first <= 0)
        {
            return false;
        }

        var rest = middle[(first + 1)..];
        const string Versions = "versions/";
        return rest.StartsWith(Versions, StringComparison.OrdinalIgnoreCase) && rest.Length > Versions.Length && rest[Versions.Length..].IndexOf('/') < 0;
    }

    /// <summary><paramref name="path"/> is <paramref name="prefix"/>, one non-empty segment, then <paramref name="suffix"/>.</summary>
    private static bool IsOneSegmentBetween(string path, string prefix, string suffix) =>
        path.Length > prefix.Length + suffix.Length
        && path.StartsWith(prefix, StringComparison.OrdinalIgnoreCase)
        && path.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
        && path.AsSpan(prefix.Length, path.Length - prefix.Length - suffix.Length).IndexOf('/') < 0;

    /// <summary>
    /// The Orleans Dashboard's live log stream. It is served only with API keys configured (and then, like every path
    /// but the health probes, only to a key holder): a silo's log names other clients' addresses, model paths and
    /// internal errors, more than the API itself tells anyone who can reach the port.
    /// </summary>
    public static bool IsTracePath(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        const string Trace = GatewayEndpoints.DashboardPath + "/Trace";
        return path.StartsWith(Trace, StringComparison.OrdinalIgnoreCase) && (path.Length == Trace.Length || path[Trace.Length] == '/');
    }

    public const string TraceClosedMessage = "the Orleans Dashboard's log stream (" + GatewayEndpoints.DashboardPath + "/Trace) is served only when API keys are configured "
        + "(MoECluster:Gateway:ApiKeys or MoECluster:Gateway:ApiKeysFile); the silos' logs are on their standard output";

    private static bool IsOpenPath(string path) =>
        OpenPaths.Any(open => path.Equals(open, StringComparison.OrdinalIgnoreCase) || path.Equals(open + "/", StringComparison.OrdinalIgnoreCase));

    private static bool IsApiPath(string path) =>
        path.StartsWith("/v1/", StringComparison.OrdinalIgnoreCase) || path.StartsWith("/v2", StringComparison.OrdinalIgnoreCase)
        || path.StartsWith("/openapi/", StringComparison.OrdinalIgnoreCase) || path.Equals("/stats", StringComparison.OrdinalIgnoreCase);

    private static bool IsReadOnly(string method) => HttpMethods.IsGet(method) || HttpMethods.IsHead(method);

    private bool Authorize(HttpContext http, out string reason)
    {
        var headers = http.Request.Headers;
        bool presented = false;
        bool basicOnWrite = false;
        foreach (string? value in headers[ApiKeyHeader])
        {
            presented = true;
            if (value is not null && keys.IsValid(value.Trim()))
            {
                reason = string.Empty;
                return true;
            }
        }

        foreach (string? value in headers.Authorization)
        {
            if (value is null)
            {
                continue;
            }

            string credentials = value.Trim();
            if (TryScheme(credentials, "Bearer", out string token))
            {
                presented = true;
                if (keys.IsValid(token))
                {
                    reason = string.Empty;
                    return true;
                }
            }
            else if (TryScheme(credentials, "Basic", out string encoded))
            {
                if (!IsReadOnly(http.Request.Method))
                {
                    basicOnWrite = true;
                    continue;
                }

                presented = true;
                if (TryBasicPassword(encoded, out string password) && keys.IsValid(password))
                {
                    reason = string.Empty;
                    return true;
                }
            }
        }

        reason = presented ? "wrong API key"
            : basicOnWrite ? "Basic credentials on a request that is not GET or HEAD"
            : "no API key";
        return false;
    }

    private static bool TryScheme(string credentials, string scheme, out string parameter)
    {
        if (credentials.Length > scheme.Length && credentials.StartsWith(scheme, StringComparison.OrdinalIgnoreCase) && credentials[scheme.Length] == ' ')
        {
            parameter = credentials[(scheme.Length + 1)..].Trim();
            return true;
        }

        parameter = string.Empty;
        return false;
    }

    /// <summary>The password of Basic credentials (base64 of "user:password"); the user name is ignored.</summary>
    private static bool TryBasicPassword(string encoded, out string password)
    {
        password = string.Empty;
        var bytes = new byte[((encoded.Length + 3) / 4) * 3];
        if (!Convert.TryFromBase64String(encoded, bytes, out int written))
        {
            return false;
        }

        string decoded;
        try
        {
            decoded = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString(bytes, 0, written);
        }
        catch (DecoderFallbackException)
        {
            return false;
        }

        int colon = decoded.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0)
        {
            return false;
        }

        password = decoded[(colon + 1)..];
        return true;
    }

    private static Task ChallengeAsync(HttpContext http, string reason)
    {
        var response = http.Response;
        response.StatusCode = StatusCodes.Status401Unauthorized;
        response.Headers.CacheControl = "no-store";
        string bearer = reason == "wrong API key" ? $"Bearer realm=\"{Realm}\", error=\"invalid_token\"" : $"Bearer realm=\"{Realm}\"";
        response.Headers.WWWAuthenticate = IsReadOnly(http.Request.Method)
            ? new Microsoft.Extensions.Primitives.StringValues([bearer, $"Basic realm=\"{Realm}\", charset=\"UTF-8\""])
            : new Microsoft.Extensions.Primitives.StringValues(bearer);
        string message = reason switch
        {
            "wrong API key" => "the API key is not valid",
            "no API key" => $"an API key is required: send 'Authorization: Bearer <key>' or '{ApiKeyHeader}: <key>'",
            _ => $"Basic credentials are accepted only on GET and HEAD requests: send 'Authorization: Bearer <key>' or '{ApiKeyHeader}: <key>'",
        };
        return response.WriteAsJsonAsync(new { error = message }, GatewayEndpoints.Json);
    }

    private static Task WriteMissingErrorAsync(HttpContext http, string path)
    {
        var response = http.Response;
        string message = response.StatusCode switch
        {
            StatusCodes.Status405MethodNotAllowed => $"method {http.Request.Method} is not allowed on {Shorten(path)}"
                + (response.Headers.Allow.Count > 0 ? $"; allowed: {response.Headers.Allow}" : string.Empty),
            StatusCodes.Status404NotFound => $"no endpoint {Shorten(path)}",
            int status => ReasonPhrases.GetReasonPhrase(status),
        };
        return response.WriteAsJsonAsync(new { error = message }, GatewayEndpoints.Json);
    }

    /// <summary>Request paths are the client's text: shown at most 200 characters long.</summary>
    private static string Shorten(string path) => path.Length <= 200 ? path : string.Concat(path.AsSpan(0, 200), "...");

    [LoggerMessage(Level = LogLevel.Debug, Message = "The client of {Method} {Path} went away before its answer")]
    private static partial void LogClientGone(ILogger logger, string method, string path);

    // Neither the key presented nor any configured key is logged: only that a request was refused, and why.
    [LoggerMessage(Level = LogLevel.Warning, Message = "Refused {Method} {Path} from {RemoteAddress}: {Reason}")]
    private static partial void LogRefused(ILogger logger, string method, string path, string remoteAddress, string reason);
}

/// <summary>What the accounting needs from the forward handler: the resolved model and the tokens answered.</summary>
internal sealed class ForwardOutcome
{
    public string Model { get; set; } = string.Empty;

    public int Tokens { get; set; }

    /// <summary>Refused because a limit on work in flight was reached (a 503 counted apart from failures).</summary>
    public bool Overloaded { get; set; }

    /// <summary>Refused because an expert shard's queue was full (a 429 counted apart from failures and rejections).</summary>
    public bool Busy { get; set; }
}

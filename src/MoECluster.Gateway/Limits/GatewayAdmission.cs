using System.Diagnostics.Metrics;
using System.Globalization;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;

namespace MoECluster.Gateway.Limits;

/// <summary>
/// Bounds on the forward work a front-end holds at once ("MoECluster:Gateway"), checked in this order:
/// <list type="number">
/// <item><see cref="GatewayOptions.MaxRequestsInFlight"/> and <see cref="GatewayOptions.MaxBodyBytesInFlight"/>, by
/// <see cref="Admit"/>, before any byte of the body is read: the request reserves its Content-Length (a chunked body
/// the whole <see cref="GatewayOptions.MaxRequestBytes"/>); the reservation is given back once the body has been
/// decoded (<see cref="AdmissionTicket.ReleaseBody"/>).</item>
/// <item>The queue in front of the routers, by <see cref="EnterRoutersAsync"/>: a decoded request waits until its tokens
/// fit in <see cref="GatewayOptions.MaxTokensInFlight"/>, first come first served; at most
/// <see cref="GatewayOptions.MaxQueuedTokens"/> tokens wait, each at most <see cref="GatewayOptions.QueueTimeoutSeconds"/>.</item>
/// </list>
/// Beyond any of them the request is refused at once with <see cref="GatewayOverloadException"/> (503, Retry-After),
/// whose message names the limit's configuration key.
/// </summary>
public sealed class GatewayAdmission : IDisposable
{
    /// <summary>The Retry-After of a refusal for overload, in seconds.</summary>
    public const int RetryAfterSeconds = 1;

    private const string Prefix = MoeClusterOptions.Section + ":Gateway:";

    private readonly GatewayOptions _options;
    private readonly ConcurrencyLimiter _routers;
    private int _requests;
    private long _bodyBytes;
    private int _queued;

    public GatewayAdmission(IOptions<MoeClusterOptions> options, IMeterFactory? meters = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value.Gateway;
        Validate(_options);
        _routers = new ConcurrencyLimiter(new ConcurrencyLimiterOptions
        {
            PermitLimit = _options.MaxTokensInFlight,
            QueueLimit = _options.MaxQueuedTokens,
            QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
        });
        if (meters is not null)
        {
            Meter meter = meters.Create(TrafficLedger.MeterName);
            meter.CreateObservableGauge("moecluster.gateway.requests.in_flight", () => RequestsInFlight, "{request}", "Forward requests admitted at this gateway now (reading their body, queued in front of the routers, or forwarded)");
            meter.CreateObservableGauge("moecluster.gateway.requests.queued", () => RequestsQueued, "{request}", "Forward requests waiting now in the queue in front of the routers");
            meter.CreateObservableGauge("moecluster.gateway.tokens.in_flight", () => TokensInFlight, "{token}", "Tokens being forwarded now (MoECluster:Gateway:MaxTokensInFlight bounds them)");
            meter.CreateObservableGauge("moecluster.gateway.tokens.queued", () => TokensQueued, "{token}", "Tokens waiting now in the queue in front of the routers (MoECluster:Gateway:MaxQueuedTokens bounds them)");
            meter.CreateObservableGauge("moecluster.gateway.body.in_flight", () => BodyBytesInFlight, "By", "Request body bytes reserved now (MoECluster:Gateway:MaxBodyBytesInFlight bounds them)");
        }
    }

    /// <summary>Forward requests waiting now in the queue in front of the routers.</summary>
    public int RequestsQueued => Volatile.Read(ref _queued);

    /// <summary>Forward requests admitted now (reading their body, queued or forwarded).</summary>
    public int RequestsInFlight => Volatile.Read(ref _requests);

    /// <summary>Body bytes reserved now.</summary>
    public long BodyBytesInFlight => Interlocked.Read(ref _bodyBytes);

    /// <summary>Tokens being forwarded now.</summary>
    public long TokensInFlight => _options.MaxTokensInFlight - (_routers.GetStatistics()?.CurrentAvailablePermits ?? _options.MaxTokensInFlight);

    /// <summary>Tokens waiting in the queue in front of the routers now.</summary>
    public long TokensQueued => _routers.GetStatistics()?.CurrentQueuedCount ?? 0;

    /// <summary>The limits' figures now, for <c>/stats</c>.</summary>
    public AdmissionReport Report() => new(
        RequestsInFlight, _options.MaxRequestsInFlight, BodyBytesInFlight, _options.MaxBodyBytesInFlight, TokensInFlight, _options.MaxTokensInFlight, TokensQueued, _options.MaxQueuedTokens);

    /// <summary>
    /// Admits a forward request whose body will hold at most <paramref name="bodyBytes"/> bytes, or throws
    /// <see cref="GatewayOverloadException"/>. Call before reading the body; dispose the ticket when the request is done.
    /// </summary>
    public AdmissionTicket Admit(long bodyBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bodyBytes);
        if (Interlocked.Increment(ref _requests) > _options.MaxRequestsInFlight)
        {
            Interlocked.Decrement(ref _requests);
            throw new GatewayOverloadException(string.Create(CultureInfo.InvariantCulture,
                $"the gateway is at its limit of {_options.MaxRequestsInFlight} forward requests in flight ({Prefix}{nameof(GatewayOptions.MaxRequestsInFlight)}); retry after {RetryAfterSeconds} s"));
        }

        long held = Interlocked.Add(ref _bodyBytes, bodyBytes);
        if (held > _options.MaxBodyBytesInFlight)
        {
            Interlocked.Add(ref _bodyBytes, -bodyBytes);
            Interlocked.Decrement(ref _requests);
            throw new GatewayOverloadException(string.Create(CultureInfo.InvariantCulture,
                $"the gateway holds {held - bodyBytes} bytes of request bodies in flight; {bodyBytes} more for this request would pass the limit of {_options.MaxBodyBytesInFlight} bytes ({Prefix}{nameof(GatewayOptions.MaxBodyBytesInFlight)}); retry after {RetryAfterSeconds} s"));
        }

        return new AdmissionTicket(this, bodyBytes);
    }

    /// <summary>
    /// Waits in the queue in front of the routers until <paramref name="tokens"/> fit, or throws
    /// <see cref="GatewayOverloadException"/> (queue full, or waited too long); <paramref name="aborted"/> (the client went
    /// away) ends the wait with <see cref="OperationCanceledException"/>. Dispose the lease when the forward is done.
    /// </summary>
    public async ValueTask<IDisposable> EnterRoutersAsync(int tokens, CancellationToken aborted)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(aborted);
        timeout.CancelAfter(TimeSpan.FromSeconds(_options.QueueTimeoutSeconds));
        RateLimitLease lease;
        Interlocked.Increment(ref _queued);
        try
        {
            lease = await _routers.AcquireAsync(Math.Min(tokens, _options.MaxTokensInFlight), timeout.Token);
        }
        catch (OperationCanceledException) when (!aborted.IsCancellationRequested)
        {
            throw new GatewayOverloadException(string.Create(CultureInfo.InvariantCulture,
                $"the request waited {_options.QueueTimeoutSeconds} s in the queue in front of the routers without its {tokens} tokens fitting in the {_options.MaxTokensInFlight} tokens in flight ({Prefix}{nameof(GatewayOptions.QueueTimeoutSeconds)}, {Prefix}{nameof(GatewayOptions.MaxTokensInFlight)}); retry after {RetryAfterSeconds} s"));
        }
        finally
        {
            Interlocked.Decrement(ref _queued);
        }

        if (!lease.IsAcquired)
        {
            lease.Dispose();
            throw new GatewayOverloadException(string.Create(CultureInfo.InvariantCulture,
                $"the queue in front of the routers is full: {TokensQueued} tokens wait, and {tokens} more for this request would pass the limit of {_options.MaxQueuedTokens} ({Prefix}{nameof(GatewayOptions.MaxQueuedTokens)}); retry after {RetryAfterSeconds} s"));
        }

        return lease;
    }

    public void Dispose() => _routers.Dispose();

    internal void ReleaseBody(long bytes) => Interlocked.Add(ref _bodyBytes, -bytes);

    internal void ReleaseRequest() => Interlocked.Decrement(ref _requests);

    /// <summary>Refuses limits that cannot work together: a request the limits allow must be admissible when the gateway is idle.</summary>
    private static void Validate(GatewayOptions o)
    {
        static void Require(bool ok, string message)
        {
            if (!ok)
            {
                throw new InvalidOperationException(message);
            }
        }

        string K(string name) => Prefix + name;
        Require(o.MaxRequestBytes >= 1, string.Create(CultureInfo.InvariantCulture, $"{K(nameof(o.MaxRequestBytes))} = {o.MaxRequestBytes}: expected at least 1"));
        Require(o.MaxRequestsInFlight >= 1, string.Create(CultureInfo.InvariantCulture, $"{K(nameof(o.MaxRequestsInFlight))} = {o.MaxRequestsInFlight}: expected at least 1"));
        Require(o.MaxBodyBytesInFlight >= o.MaxRequestBytes, string.Create(CultureInfo.InvariantCulture,
            $"{K(nameof(o.MaxBodyBytesInFlight))} = {o.MaxBodyBytesInFlight} is less than {K(nameof(o.MaxRequestBytes))} = {o.MaxRequestBytes}: a request of the largest size could never be admitted"));
        Require(o.MaxTokensInFlight >= o.MaxTokensPerRequest, string.Create(CultureInfo.InvariantCulture,
            $"{K(nameof(o.MaxTokensInFlight))} = {o.MaxTokensInFlight} is less than {K(nameof(o.MaxTokensPerRequest))} = {o.MaxTokensPerRequest}: a request of the most tokens could never be forwarded"));
        Require(o.MaxQueuedTokens >= 0, string.Create(CultureInfo.InvariantCulture, $"{K(nameof(o.MaxQueuedTokens))} = {o.MaxQueuedTokens}: expected 0 or more"));
        Require(o.QueueTimeoutSeconds > 0, string.Create(CultureInfo.InvariantCulture, $"{K(nameof(o.QueueTimeoutSeconds))} = {o.QueueTimeoutSeconds}: expected more than 0"));
        Require(o.BodyReadTimeoutSeconds > 0, string.Create(CultureInfo.InvariantCulture, $"{K(nameof(o.BodyReadTimeoutSeconds))} = {o.BodyReadTimeoutSeconds}: expected more than 0"));
    }
}

/// <summary>An admitted request's hold on <see cref="GatewayAdmission"/>: its place among the requests in flight and its body reservation.</summary>
public sealed class AdmissionTicket : IDisposable
{
    private readonly GatewayAdmission _admission;
    private long _bodyBytes;
    private int _disposed;

    internal AdmissionTicket(GatewayAdmission admission, long bodyBytes)
    {
        _admission = admission;
        _bodyBytes = bodyBytes;
    }

    /// <summary>Gives the body reservation back (the body's buffer is released); the request stays in flight.</summary>
    public void ReleaseBody()
    {
        long bytes = Interlocked.Exchange(ref _bodyBytes, 0);
        if (bytes > 0)
        {
            _admission.ReleaseBody(bytes);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            ReleaseBody();
            _admission.ReleaseRequest();
        }
    }
}

/// <summary>The <c>limits</c> of <c>/stats</c>' gateway section: what is held now and each limit.</summary>
public sealed record AdmissionReport(
    int RequestsInFlight,
    int MaxRequestsInFlight,
    long BodyBytesInFlight,
    long MaxBodyBytesInFlight,
    long TokensInFlight,
    int MaxTokensInFlight,
    long TokensQueued,
    int MaxQueuedTokens);

/// <summary>A request refused because a limit on work in flight is reached: 503 with Retry-After; the message names the limit's key.</summary>
public sealed class GatewayOverloadException : Exception
{
    public GatewayOverloadException()
        : this("the gateway is overloaded")
    {
    }

    public GatewayOverloadException(string message)
        : base(message)
    {
    }

    public GatewayOverloadException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

using System.Diagnostics;
using OpenTelemetry.Trace;

namespace MoECluster.ServiceDefaults;

/// <summary>
/// The root sampler of a MoECluster process (inside a <see cref="ParentBasedSampler"/>): a new trace that is a request
/// (an HTTP server span: a client's call to the gateway; an HTTP client span: <c>moecluster load</c>'s requests) draws on
/// the request budget, any other new trace (Orleans' housekeeping: membership, timers, statistics) on a budget of its
/// own. Housekeeping runs every second whatever the traffic; on a shared budget it took the credit of a lone request,
/// which then was not traced. A health probe is known only after sampling and returns its credit
/// (<see cref="ReturnRequestCredit"/>).
/// </summary>
public sealed class TraceBudgetSampler : Sampler
{
    /// <summary>The name ASP.NET Core gives the activity of an incoming request when it starts it (before routing).</summary>
    public const string HttpServerActivity = "Microsoft.AspNetCore.Hosting.HttpRequestIn";

    /// <summary>The name System.Net.Http gives the activity of an outgoing request.</summary>
    public const string HttpClientActivity = "System.Net.Http.HttpRequestOut";

    private readonly RateLimitingSampler _requests;
    private readonly RateLimitingSampler _housekeeping;

    /// <param name="requestsPerSecond">New request traces per second (0: only requests with a sampled parent).</param>
    /// <param name="housekeepingPerSecond">New traces of anything else per second (0: none).</param>
    /// <param name="clock">Timestamps in <see cref="Stopwatch"/> ticks (tests move it by hand).</param>
    public TraceBudgetSampler(double requestsPerSecond, double housekeepingPerSecond, Func<long>? clock = null)
    {
        _requests = new RateLimitingSampler(requestsPerSecond, clock);
        _housekeeping = new RateLimitingSampler(housekeepingPerSecond, clock);
        Description = string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"TraceBudgetSampler{{requests: {_requests.Description}, housekeeping: {_housekeeping.Description}}}");
    }

    /// <summary>Whether a new trace that starts with a span of this name and kind is a request.</summary>
    public static bool IsRequest(string name, ActivityKind kind) =>
        (kind == ActivityKind.Server && name == HttpServerActivity) || (kind == ActivityKind.Client && name == HttpClientActivity);

    public override SamplingResult ShouldSample(in SamplingParameters samplingParameters) =>
        (IsRequest(samplingParameters.Name, samplingParameters.Kind) ? _requests : _housekeeping).ShouldSample(samplingParameters);

    /// <summary>Gives back the credit a request trace took that is not recorded after all (a probe).</summary>
    public void ReturnRequestCredit() => _requests.Return();
}

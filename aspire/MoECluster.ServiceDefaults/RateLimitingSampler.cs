using System.Diagnostics;
using OpenTelemetry.Trace;

namespace MoECluster.ServiceDefaults;

/// <summary>
/// Samples at most <c>perSecond</c> traces per second, in bursts of up to that many (a token bucket), and drops the
/// rest; meant as the root sampler of a <see cref="ParentBasedSampler"/>, so that a trace is kept or dropped whole and a
/// request that arrives with a sampled <c>traceparent</c> is always recorded. At a few requests per second every request
/// is traced; under load the spans (about 20 per forward with 4 shards) stay bounded instead of costing the front-end and
/// the collector CPU in proportion to the traffic.
/// </summary>
public sealed class RateLimitingSampler : Sampler
{
    private readonly double _perSecond;
    private readonly double _burst;
    private readonly Func<long> _clock;
    private readonly Lock _lock = new();
    private double _credits;
    private long _last;

    /// <param name="perSecond">Traces per second, 0 for none (then only parents decide).</param>
    /// <param name="clock">Timestamps in <see cref="Stopwatch"/> ticks (tests move it by hand).</param>
    public RateLimitingSampler(double perSecond, Func<long>? clock = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(perSecond);
        if (!double.IsFinite(perSecond))
        {
            throw new ArgumentOutOfRangeException(nameof(perSecond), perSecond, "traces per second must be a finite number");
        }

        _perSecond = perSecond;
        _burst = Math.Max(1, perSecond);
        _clock = clock ?? Stopwatch.GetTimestamp;
        _credits = perSecond > 0 ? _burst : 0;
        _last = _clock();
        Description = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"RateLimitingSampler{{{perSecond}/s}}");
    }

    public override SamplingResult ShouldSample(in SamplingParameters samplingParameters)
    {
        if (_perSecond == 0)
        {
            return new SamplingResult(SamplingDecision.Drop);
        }

        lock (_lock)
        {
            long now = _clock();
            double elapsed = Math.Max(0, now - _last) / (double)Stopwatch.Frequency;
            _last = now;
            _credits = Math.Min(_burst, _credits + (elapsed * _perSecond));
            if (_credits >= 1)
            {
                _credits -= 1;
                return new SamplingResult(SamplingDecision.RecordAndSample);
            }
        }

        return new SamplingResult(SamplingDecision.Drop);
    }

    /// <summary>
    /// Gives back the credit of a trace that was sampled and then not recorded after all (a health probe, whose path the
    /// sampler cannot see: ASP.NET Core starts its activity before routing); never more than the burst.
    /// </summary>
    public void Return()
    {
        lock (_lock)
        {
            _credits = Math.Min(_burst, _credits + 1);
        }
    }
}

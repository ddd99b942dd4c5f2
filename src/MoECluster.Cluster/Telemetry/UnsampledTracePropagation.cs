using System.Diagnostics;

namespace MoECluster.Cluster.Telemetry;

/// <summary>
/// Carries a "not sampled" trace decision across grain calls, so that a trace is kept or dropped whole. Orleans' activity
/// propagation writes a traceparent only for a call it records: a call made under a request the sampler dropped went out
/// with no trace context, and the callee started a trace of its own, a root the sampler could keep (a forward traced from
/// the router grain or an expert shard down, without its request, on the budget of the requests that are traced). The
/// outgoing filter writes the unrecorded current activity's traceparent (flags 00) into the request context; the incoming
/// filter, when Orleans recorded nothing for a call whose traceparent says "not sampled", makes that context current (an
/// activity no listener sees), so the grain's own calls carry it on. Registered after Orleans' filters: it sees
/// the activity Orleans made, or none.
/// </summary>
internal static class UnsampledTracePropagation
{
    private const string TraceParent = "traceparent";

    internal static void Add(ISiloBuilder silo)
    {
        silo.AddOutgoingGrainCallFilter<Outgoing>();
        silo.AddIncomingGrainCallFilter<Incoming>();
    }

    /// <summary>Makes "not sampled" the trace context here and at every grain the calls made before disposing reach.</summary>
    internal static IDisposable Untraced() => new UntracedScope(StartUnsampled(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom()));

    /// <summary>Makes current an activity no listener sees, child of a parent that is not sampled.</summary>
    private static Activity StartUnsampled(ActivityTraceId trace, ActivitySpanId parent)
    {
        var activity = new Activity("moecluster.unsampled");
        activity.SetIdFormat(ActivityIdFormat.W3C);
        activity.SetParentId(trace, parent, ActivityTraceFlags.None);
        return activity.Start();
    }

    private sealed class UntracedScope(Activity activity) : IDisposable
    {
        public void Dispose()
        {
            RequestContext.Remove(TraceParent);
            activity.Dispose();
        }
    }

    private sealed class Outgoing : IOutgoingGrainCallFilter
    {
        public Task Invoke(IOutgoingGrainCallContext context)
        {
            if (Activity.Current is { Recorded: false, IdFormat: ActivityIdFormat.W3C, Id: { } id })
            {
                RequestContext.Set(TraceParent, id);
            }

            return context.Invoke();
        }
    }

    private sealed class Incoming : IIncomingGrainCallFilter
    {
        public async Task Invoke(IIncomingGrainCallContext context)
        {
            using var unsampled = Activity.Current is not { Recorded: true }
                && RequestContext.Get(TraceParent) is string traceparent
                && ActivityContext.TryParse(traceparent, null, isRemote: true, out var parent)
                && (parent.TraceFlags & ActivityTraceFlags.Recorded) == 0
                    ? StartUnsampled(parent.TraceId, parent.SpanId)
                    : null;
            await context.Invoke();
        }
    }
}

namespace MoECluster.AppHost.Model;

/// <summary>A fact about a resource: its arguments, environment, endpoints, health checks, waits, references.</summary>
public interface IResourceAnnotation;

/// <summary>Arguments appended for each replica.</summary>
public sealed record CommandLineArgsAnnotation(Func<ResourceInstance, IEnumerable<string>> Arguments) : IResourceAnnotation;

/// <summary>Sets environment variables of each replica (applied in the order they were added; later ones win).</summary>
public sealed record EnvironmentAnnotation(Action<EnvironmentContext> Apply) : IResourceAnnotation;

/// <summary>Run this many copies, named <c>&lt;name&gt;-1</c> … <c>&lt;name&gt;-n</c>.</summary>
public sealed record ReplicaAnnotation(int Replicas) : IResourceAnnotation;

/// <summary>
/// A port the resource listens on, on 127.0.0.1. A fixed <see cref="Port"/> goes to replica 1, port + 1 to replica 2,
/// and so on; without one, every replica gets a free port.
/// </summary>
public sealed record EndpointAnnotation(string Name, string Scheme, int? Port) : IResourceAnnotation;

/// <summary>Healthy when <c>GET &lt;endpoint&gt;&lt;path&gt;</c> answers <see cref="StatusCode"/>.</summary>
public sealed record HttpHealthCheckAnnotation(string EndpointName, string Path, int StatusCode) : IResourceAnnotation;

/// <summary>A health check of any kind (a TCP PING, a query); <see cref="Describe"/> says what it probes, for progress lines.</summary>
public sealed record HealthCheckAnnotation(Func<ResourceInstance, string> Describe, Func<ResourceInstance, CancellationToken, Task<HealthCheckResult>> Check) : IResourceAnnotation;

/// <summary>Do not start until <see cref="Resource"/> is healthy (or, for a one-shot resource, has completed successfully).</summary>
public sealed record WaitAnnotation(IResource Resource, WaitType WaitType) : IResourceAnnotation;

/// <summary>Uses <see cref="Resource"/> (its connection information is injected); stops before it.</summary>
public sealed record ResourceReferenceAnnotation(IResource Resource) : IResourceAnnotation;

/// <summary>A URL shown in the summary once the application is ready: <c>&lt;endpoint&gt;&lt;path&gt;</c>.</summary>
public sealed record UrlAnnotation(string EndpointName, string Path, string DisplayText) : IResourceAnnotation;

/// <summary>A line shown in the summary once the application is ready (for example, a command to try).</summary>
public sealed record HintAnnotation(string DisplayText, Func<ResourceInstance, string> Text) : IResourceAnnotation;

/// <summary>
/// The program stops by itself when the process whose id it finds in <see cref="EnvironmentVariable"/> exits. Programs
/// without this annotation know nothing of their parent: the launcher pairs each with a watchdog process.
/// </summary>
public sealed record ParentProcessAnnotation(string EnvironmentVariable) : IResourceAnnotation;

/// <summary>
/// When a process of <see cref="Resource"/> exits and is restarted, restart this resource's processes too (they cannot
/// outlive it: the expert silos of localhost clustering, whose membership table lives in the front-end).
/// </summary>
public sealed record RestartWithAnnotation(IResource Resource) : IResourceAnnotation;

/// <summary>
/// Liveness, once the application is ready: a process that has passed <see cref="IsAlive"/> and then fails it for
/// <see cref="Timeout"/> is hung (stopped, deadlocked) and is killed, so that supervision restarts it.
/// </summary>
public sealed record LivenessAnnotation(Func<ResourceInstance, string> Describe, Func<ResourceInstance, CancellationToken, Task<bool>> IsAlive, TimeSpan Timeout) : IResourceAnnotation;

public enum WaitType
{
    /// <summary>Every replica started and passed its health checks (a resource without health checks: started).</summary>
    UntilHealthy,

    /// <summary>Every replica exited with code 0 (a one-shot resource: model generation, a migration).</summary>
    UntilCompleted,
}

public sealed record HealthCheckResult(bool IsHealthy, string Detail)
{
    public static HealthCheckResult Healthy(string detail) => new(true, detail);

    public static HealthCheckResult Unhealthy(string detail) => new(false, detail);
}

/// <summary>The environment of one replica under construction, with the model to look other resources up in.</summary>
public sealed class EnvironmentContext(ResourceInstance instance, DistributedApplicationModel model, IDictionary<string, string> variables)
{
    public ResourceInstance Instance { get; } = instance;

    public DistributedApplicationModel Model { get; } = model;

    public IDictionary<string, string> Variables { get; } = variables;
}

/// <summary>A mistake in the application model (a reference to a resource that was not added, a missing endpoint, a cycle).</summary>
public sealed class DistributedApplicationException : Exception
{
    public DistributedApplicationException()
    {
    }

    public DistributedApplicationException(string message)
        : base(message)
    {
    }

    public DistributedApplicationException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

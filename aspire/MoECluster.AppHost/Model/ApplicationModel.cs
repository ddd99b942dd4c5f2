namespace MoECluster.AppHost.Model;

/// <summary>A port allocated to one replica, on 127.0.0.1.</summary>
public sealed record AllocatedEndpoint(string Name, string Scheme, string Host, int Port)
{
    /// <summary><c>scheme://host:port</c>.</summary>
    public string Address => $"{Scheme}://{Host}:{Port}";

    /// <summary><c>host:port</c>.</summary>
    public string HostAndPort => $"{Host}:{Port}";
}

/// <summary>
/// One running copy of a resource as the launcher will start it: its name (<c>expert-2</c>), its endpoints, its
/// full command line and environment. Resources without a process (a task) have one instance and no command.
/// </summary>
public sealed class ResourceInstance
{
    internal ResourceInstance(IResource resource, string name, int replicaIndex, int replicaCount, IReadOnlyDictionary<string, AllocatedEndpoint> endpoints)
    {
        Resource = resource;
        Name = name;
        ReplicaIndex = replicaIndex;
        ReplicaCount = replicaCount;
        Endpoints = endpoints;
        InstanceId = $"{name}-{Guid.NewGuid():N}";
    }

    public IResource Resource { get; }

    /// <summary>The resource's name, or <c>&lt;name&gt;-&lt;i&gt;</c> for a replica.</summary>
    public string Name { get; }

    /// <summary>1-based.</summary>
    public int ReplicaIndex { get; }

    public int ReplicaCount { get; }

    /// <summary>Unique per launch: <c>&lt;name&gt;-&lt;guid&gt;</c> (OpenTelemetry's service.instance.id).</summary>
    public string InstanceId { get; }

    public IReadOnlyDictionary<string, AllocatedEndpoint> Endpoints { get; }

    /// <summary>The program; null for a resource without a process.</summary>
    public string? FileName { get; internal set; }

    /// <summary>Every argument after the program, in order.</summary>
    public IReadOnlyList<string> Arguments { get; internal set; } = [];

    /// <summary>The variables the launcher sets (on top of its own environment), sorted by name.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; internal set; } = new SortedDictionary<string, string>(StringComparer.Ordinal);

    public AllocatedEndpoint Endpoint(string name) => Endpoints.TryGetValue(name, out var endpoint)
        ? endpoint
        : throw new DistributedApplicationException($"{Name} has no endpoint '{name}' (endpoints: {(Endpoints.Count == 0 ? "none" : string.Join(", ", Endpoints.Keys))})");

    public override string ToString() => Name;
}

/// <summary>
/// The application after <see cref="DistributedApplicationBuilder.Build"/>: resources expanded into named instances
/// with ports, command lines and environments, and the order they start and stop in.
/// </summary>
public sealed class DistributedApplicationModel
{
    private readonly Dictionary<IResource, List<ResourceInstance>> _instances = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<IResource, List<IResource>> _dependencies = new(ReferenceEqualityComparer.Instance);

    internal DistributedApplicationModel(IReadOnlyList<IResource> resources, LauncherSettings settings)
    {
        Resources = resources;
        Settings = settings;
        foreach (var r in resources)
        {
            _instances[r] = [];
            _dependencies[r] = [];
        }
    }

    /// <summary>In the order they were added.</summary>
    public IReadOnlyList<IResource> Resources { get; }

    public LauncherSettings Settings { get; }

    /// <summary>Every instance, in start order.</summary>
    public IReadOnlyList<ResourceInstance> Instances => [.. StartOrder.SelectMany(r => _instances[r])];

    /// <summary>Resources in an order where each comes after everything it waits for or references.</summary>
    public IReadOnlyList<IResource> StartOrder { get; internal set; } = [];

    public IReadOnlyList<ResourceInstance> InstancesOf(IResource resource) => _instances.TryGetValue(resource, out var list)
        ? list
        : throw new DistributedApplicationException($"resource '{resource.Name}' is not part of this application");

    public ResourceInstance Instance(string name) =>
        _instances.Values.SelectMany(i => i).FirstOrDefault(i => i.Name == name)
        ?? throw new DistributedApplicationException($"no resource instance named '{name}' (instances: {string.Join(", ", _instances.Values.SelectMany(i => i).Select(i => i.Name))})");

    /// <summary>What <paramref name="resource"/> waits for or references (it starts after them and stops before them).</summary>
    public IReadOnlyList<IResource> DependenciesOf(IResource resource) => _dependencies[resource];

    /// <summary>What waits for or references <paramref name="resource"/>.</summary>
    public IReadOnlyList<IResource> DependentsOf(IResource resource) =>
        [.. Resources.Where(r => _dependencies[r].Contains(resource, ReferenceEqualityComparer.Instance))];

    public static IEnumerable<WaitAnnotation> WaitsOf(IResource resource) => resource.Annotations.OfType<WaitAnnotation>();

    /// <summary>Whether some resource waits for this one to complete: it is then a one-shot resource whose exit is expected.</summary>
    public bool IsOneShot(IResource resource) =>
        resource is TaskResource || Resources.Any(r => WaitsOf(r).Any(w => w.WaitType == WaitType.UntilCompleted && ReferenceEquals(w.Resource, resource)));

    internal void AddInstance(ResourceInstance instance) => _instances[instance.Resource].Add(instance);

    internal void AddDependency(IResource resource, IResource dependency)
    {
        if (!_dependencies[resource].Contains(dependency, ReferenceEqualityComparer.Instance))
        {
            _dependencies[resource].Add(dependency);
        }
    }
}

/// <summary>Settings of the launcher itself, from configuration (<c>AppHost:*</c>, environment variables).</summary>
public sealed record LauncherSettings(
    string EnvironmentName,
    int ParentProcessId,
    TimeSpan StartupTimeout,
    TimeSpan StopGrace,
    string? OtlpEndpoint,
    string OtlpProtocol);

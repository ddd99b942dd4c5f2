using MoECluster.AppHost.Model;
using MoECluster.Cluster.Security;

namespace MoECluster.AppHost.Integrations;

/// <summary>
/// An Orleans cluster as a resource without a process of its own: its identity and its clustering. Each silo resource
/// that references it (<see cref="OrleansResourceExtensions.WithReference{T}"/>) gets an <c>orleans-silo</c> endpoint
/// (unless it declares one) and the configuration Orleans reads, in the environment-variable form Aspire uses:
/// <c>Orleans__ClusterId</c>, <c>Orleans__ServiceId</c>, <c>Orleans__Clustering__*</c>, <c>Orleans__Endpoints__*</c>,
/// <c>Orleans__Name</c>. Without Redis, clustering is localhost ("Development") clustering whose primary silo is the
/// first replica of the first silo resource that references the cluster; with Redis, the membership lives in Redis.
/// </summary>
public sealed class OrleansResource(string name) : IResource
{
    public const string SiloEndpoint = "orleans-silo";
    public const string GatewayEndpoint = "orleans-gateway";

    public string Name { get; } = name;

    public IList<IResourceAnnotation> Annotations { get; } = [];

    public string ClusterId { get; set; } = name;

    public string ServiceId { get; set; } = name;

    /// <summary>Null: localhost clustering.</summary>
    public RedisResource? Clustering { get; set; }

    /// <summary>The silo resources that reference the cluster, in the order they did.</summary>
    public IList<IResource> Silos { get; } = [];

    /// <summary>Where the cluster's TLS material lies (ca.crt, tls.crt, tls.key); every silo gets the paths. Null: the silos' own configuration decides.</summary>
    public string? TlsDirectory { get; set; }

    internal void Apply(EnvironmentContext context)
    {
        var instance = context.Instance;
        var env = context.Variables;
        env["Orleans__ClusterId"] = ClusterId;
        env["Orleans__ServiceId"] = ServiceId;
        env["Orleans__Name"] = instance.Name;
        env["Orleans__Endpoints__AdvertisedIPAddress"] = "127.0.0.1";
        env["Orleans__Endpoints__SiloPort"] = instance.Endpoint(SiloEndpoint).Port.Invariant();
        env["Orleans__Endpoints__GatewayPort"] = instance.Endpoints.TryGetValue(GatewayEndpoint, out var gateway) ? gateway.Port.Invariant() : "0";
        if (TlsDirectory is { } tls)
        {
            foreach (var (name, value) in LocalClusterTls.Environment(tls))
            {
                env[name] = value;
            }
        }

        if (Clustering is { } redis)
        {
            env["Orleans__Clustering__ProviderType"] = "Redis";
            env["Orleans__Clustering__ServiceKey"] = redis.Name;
            env[$"ConnectionStrings__{redis.Name}"] = redis.GetConnectionString(context.Model);
        }
        else
        {
            env["Orleans__Clustering__ProviderType"] = "Development";
            env["Orleans__Clustering__PrimarySiloEndPoint"] = context.Model.InstancesOf(Silos[0])[0].Endpoint(SiloEndpoint).HostAndPort;
        }
    }
}

public static class OrleansResourceExtensions
{
    public static IResourceBuilder<OrleansResource> AddOrleans(this DistributedApplicationBuilder builder, string name) =>
        builder.AddResource(new OrleansResource(name));

    /// <summary>Redis clustering when <paramref name="redis"/> is given (silos then start after Redis is healthy); localhost clustering when null.</summary>
    public static IResourceBuilder<OrleansResource> WithClustering(this IResourceBuilder<OrleansResource> builder, IResourceBuilder<RedisResource>? redis)
    {
        builder.Resource.Clustering = redis?.Resource;
        if (redis is not null)
        {
            builder.WithAnnotation(new ResourceReferenceAnnotation(redis.Resource));
        }

        return builder;
    }

    /// <summary>Mutual TLS between the silos with the material in <paramref name="directory"/> (see <see cref="LocalClusterTls"/>).</summary>
    public static IResourceBuilder<OrleansResource> WithTls(this IResourceBuilder<OrleansResource> builder, string directory)
    {
        builder.Resource.TlsDirectory = Path.GetFullPath(directory);
        return builder;
    }

    public static IResourceBuilder<OrleansResource> WithClusterId(this IResourceBuilder<OrleansResource> builder, string clusterId)
    {
        builder.Resource.ClusterId = clusterId;
        return builder;
    }

    public static IResourceBuilder<OrleansResource> WithServiceId(this IResourceBuilder<OrleansResource> builder, string serviceId)
    {
        builder.Resource.ServiceId = serviceId;
        return builder;
    }

    /// <summary>Makes the resource a silo of <paramref name="orleans"/>: an <c>orleans-silo</c> endpoint and the Orleans configuration in its environment.</summary>
    public static IResourceBuilder<T> WithReference<T>(this IResourceBuilder<T> builder, IResourceBuilder<OrleansResource> orleans)
        where T : IProcessResource
    {
        var cluster = orleans.Resource;
        cluster.Silos.Add(builder.Resource);
        builder.WithAnnotation(new ResourceReferenceAnnotation(cluster));
        if (!builder.Resource.Annotations.OfType<EndpointAnnotation>().Any(e => e.Name == OrleansResource.SiloEndpoint))
        {
            builder.WithEndpoint(OrleansResource.SiloEndpoint);
        }

        return builder.WithEnvironment(cluster.Apply);
    }
}

using System.Globalization;
using Aspire.Hosting.Orleans;
using Microsoft.Extensions.DependencyInjection;
using MoECluster.Cluster.Hosting;

namespace MoECluster.AppHost.Resources;

/// <summary>
/// Redis for Orleans' Redis clustering (<c>--redis</c>): Aspire's Redis container resource where a container engine
/// (docker or podman) is on the PATH, else a local <c>redis-server</c> as an executable resource (these build machines
/// have no container engine). Either way Orleans is told through Aspire.Hosting.Orleans: provider type Redis, service key
/// "redis", and the connection string <c>ConnectionStrings__redis</c>.
/// </summary>
public static class RedisClustering
{
    /// <summary>The Redis resource and the clustering provider that points Orleans at it.</summary>
    public static (IResourceBuilder<IResource> Resource, IProviderConfiguration Clustering) Add(IDistributedApplicationBuilder builder, string name)
    {
        if (ContainerEngine() is not null)
        {
            var container = builder.AddRedis(name);
            return (builder.CreateResourceBuilder<IResource>(container.Resource), new RedisProvider(container.Resource.Name, builder.CreateResourceBuilder<IResourceWithConnectionString>(container.Resource)));
        }

        int port = LoopbackPorts.Free();
        var server = new RedisServerResource(name, port);
        var executable = builder.AddResource(server)
            .WithArgs("--port", port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "yes")
            .WithEndpoint(port: port, targetPort: port, name: "tcp", scheme: "tcp", isProxied: false);
        string check = $"{name}-ping";
        builder.Services.AddHealthChecks().AddRedis($"127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)},abortConnect=false,connectTimeout=1000", check);
        executable.WithHealthCheck(check);
        return (builder.CreateResourceBuilder<IResource>(server), new RedisProvider(name, builder.CreateResourceBuilder<IResourceWithConnectionString>(server)));
    }

    /// <summary>docker or podman on the PATH, or null.</summary>
    private static string? ContainerEngine()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (string engine in new[] { "docker", "podman" })
            {
                if (File.Exists(Path.Combine(dir, engine)))
                {
                    return engine;
                }
            }
        }

        return null;
    }

    /// <summary>Orleans' clustering provider "Redis" with the resource's connection string under its name.</summary>
    private sealed class RedisProvider(string serviceKey, IResourceBuilder<IResourceWithConnectionString> resource) : IProviderConfiguration
    {
        public void ConfigureResource<TResource>(IResourceBuilder<TResource> resourceBuilder, string configurationSectionName)
            where TResource : IResourceWithEnvironment
        {
            string prefix = configurationSectionName.Replace(":", "__", StringComparison.Ordinal);
            resourceBuilder.WithEnvironment($"Orleans__{prefix}__ProviderType", "Redis");
            resourceBuilder.WithEnvironment($"Orleans__{prefix}__ServiceKey", serviceKey);
            resourceBuilder.WithReference(resource);
        }
    }
}

/// <summary>A local <c>redis-server</c> process on a loopback port, with the connection string Orleans' Redis clustering reads.</summary>
public sealed class RedisServerResource(string name, int port) : ExecutableResource(name, "redis-server", "."), IResourceWithConnectionString
{
    public int Port { get; } = port;

    public ReferenceExpression ConnectionStringExpression =>
        ReferenceExpression.Create($"127.0.0.1:{Port.ToString(CultureInfo.InvariantCulture)}");
}

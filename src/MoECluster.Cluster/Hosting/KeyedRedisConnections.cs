using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using StackExchange.Redis;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// Orleans' Redis providers, selected from configuration (<c>Orleans:Clustering:ProviderType=Redis</c>), take their
/// connection by service key (<c>Orleans:Clustering:ServiceKey=redis</c>) as a keyed <see cref="IConnectionMultiplexer"/>,
/// which Aspire's Redis client integration registers from <c>ConnectionStrings:redis</c>. This registers the same
/// thing without Aspire: one keyed connection per service key, from the connection string of that name.
/// </summary>
public static class KeyedRedisConnections
{
    public static IServiceCollection AddKeyedRedisConnections(this IServiceCollection services, IConfiguration configuration)
    {
        string? key = configuration["Orleans:Clustering:ServiceKey"];
        if (string.IsNullOrEmpty(key))
        {
            return services;
        }

        string connectionString = configuration.GetConnectionString(key)
            ?? throw new InvalidOperationException($"Orleans:Clustering:ServiceKey is '{key}' but no connection string of that name is configured (set ConnectionStrings__{key}, e.g. 127.0.0.1:6379)");
        ConfigurationOptions options;
        try
        {
            options = ConfigurationOptions.Parse(connectionString);
        }
        catch (ArgumentException e)
        {
            throw new InvalidOperationException($"ConnectionStrings:{key} = '{connectionString}' is not a Redis connection string: {e.Message}", e);
        }

        services.AddKeyedSingleton<IConnectionMultiplexer>(key, (_, _) => ConnectionMultiplexer.Connect(options));
        return services;
    }
}

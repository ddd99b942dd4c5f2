using System.Net.Sockets;
using System.Text;
using MoECluster.AppHost.Model;

namespace MoECluster.AppHost.Integrations;

/// <summary>
/// A throw-away <c>redis-server</c> on 127.0.0.1 (no persistence), healthy once it answers PING with PONG. It knows
/// nothing of the launcher, so the launcher gives it a watchdog. Its connection string is <c>127.0.0.1:&lt;port&gt;</c>.
/// </summary>
public sealed class RedisResource(string name) : IProcessResource, IResourceWithConnectionString
{
    public const string EndpointName = "tcp";

    public string Name { get; } = name;

    public IList<IResourceAnnotation> Annotations { get; } = [];

    public ProcessCommand Command { get; } = new("redis-server", [], "install it with `apt-get install -y redis-server` (Debian, Ubuntu) or start without --redis");

    public string GetConnectionString(DistributedApplicationModel model) => model.InstancesOf(this)[0].Endpoint(EndpointName).HostAndPort;
}

public static class RedisResourceExtensions
{
    /// <summary>Adds a redis-server on <paramref name="port"/> (default: a free port).</summary>
    public static IResourceBuilder<RedisResource> AddRedis(this DistributedApplicationBuilder builder, string name, int? port = null) =>
        builder.AddResource(new RedisResource(name))
            .WithEndpoint(RedisResource.EndpointName, port)
            .WithArgs(i => ["--port", i.Endpoint(RedisResource.EndpointName).Port.Invariant(), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .WithHealthCheck(i => $"PING redis at {i.Endpoint(RedisResource.EndpointName).HostAndPort}", PingAsync);

    /// <summary>Healthy when <c>PING</c> gets <c>+PONG</c>.</summary>
    public static async Task<HealthCheckResult> PingAsync(ResourceInstance instance, CancellationToken cancel)
    {
        var endpoint = instance.Endpoint(RedisResource.EndpointName);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(TimeSpan.FromSeconds(3));
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync(endpoint.Host, endpoint.Port, timeout.Token);
            var stream = client.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray(), timeout.Token);
            var buffer = new byte[64];
            int read = await stream.ReadAsync(buffer, timeout.Token);
            string answer = Encoding.ASCII.GetString(buffer, 0, read).Trim();
            return answer == "+PONG" ? HealthCheckResult.Healthy("PONG") : HealthCheckResult.Unhealthy($"PING answered '{answer}'");
        }
        catch (SocketException e)
        {
            return HealthCheckResult.Unhealthy($"{endpoint.HostAndPort}: {e.Message}");
        }
        catch (IOException e)
        {
            return HealthCheckResult.Unhealthy($"{endpoint.HostAndPort}: {e.Message}");
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            return HealthCheckResult.Unhealthy($"{endpoint.HostAndPort}: no answer within 3 s");
        }
    }
}

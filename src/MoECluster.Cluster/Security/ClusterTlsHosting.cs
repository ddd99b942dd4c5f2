using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoECluster.Cluster.Telemetry;
using Orleans.Configuration;

namespace MoECluster.Cluster.Security;

/// <summary>Mutual TLS on a silo's and an Orleans client's connections, with the cluster's own CA as the only trust anchor.</summary>
public static class ClusterTlsHosting
{
    /// <summary>
    /// Every Orleans connection of the silo: a byte counter beneath everything (what goes on TCP), then, unless
    /// <paramref name="tls"/> is null (TLS turned off), TLS: as server on the silo and gateway ports, where a client
    /// certificate issued by the cluster's CA is required, and as client on the connections it opens to other silos.
    /// </summary>
    public static ISiloBuilder UseClusterConnections(this ISiloBuilder silo, ClusterTls? tls)
    {
        ArgumentNullException.ThrowIfNull(silo);
        silo.Services.AddOptions<SiloConnectionOptions>().Configure<TrafficLedger, ILoggerFactory>((options, ledger, loggers) =>
        {
            var logger = loggers.CreateLogger<ClusterTls>();
            var server = tls?.ServerOptions(logger);
            var client = tls?.ClientOptions(logger);
            options.ConfigureSiloInboundConnection(b =>
            {
                b.UseTcpByteCounting(ledger, TcpByteCounting.Silo);
                if (server is not null)
                {
                    b.UseServerTls(server);
                }
            });
            options.ConfigureGatewayInboundConnection(b =>
            {
                b.UseTcpByteCounting(ledger, TcpByteCounting.Gateway);
                if (server is not null)
                {
                    b.UseServerTls(server);
                }
            });
            options.ConfigureSiloOutboundConnection(b =>
            {
                b.UseTcpByteCounting(ledger, TcpByteCounting.Silo);
                if (client is not null)
                {
                    b.UseClientTls(client);
                }
            });
        });
        if (tls is null)
        {
            silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, TlsOffWarning>();
        }
        else
        {
            silo.Services.AddSingleton(tls);
        }

        return silo;
    }

    /// <summary>An Orleans client that connects to the gateway with TLS, presenting <paramref name="tls"/>'s certificate and trusting only the cluster's CA.</summary>
    public static IClientBuilder UseClusterTls(this IClientBuilder client, ClusterTls tls)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(tls);
        client.Services.AddOptions<ClientConnectionOptions>().Configure<ILoggerFactory>((options, loggers) =>
        {
            var settings = tls.ClientOptions(loggers.CreateLogger<ClusterTls>());
            options.ConfigureConnection(b => b.UseClientTls(settings));
        });
        return client;
    }
}

/// <summary>TLS turned off is never silent: a warning at every start, in the silo's first lifecycle stage (before it joins).</summary>
internal sealed partial class TlsOffWarning(ILogger<TlsOffWarning> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    public void Participate(ISiloLifecycle lifecycle) => lifecycle.Subscribe(nameof(TlsOffWarning), ServiceLifecycleStage.First, _ =>
    {
        LogTlsOff(logger);
        return Task.CompletedTask;
    });

    [LoggerMessage(Level = LogLevel.Warning, Message = "TLS is OFF (MoECluster:Tls:Enabled=false): this silo's Orleans connections are plain, unauthenticated TCP; any process that reaches its silo or gateway port can join the cluster or call its grains. It can only form a cluster with silos that have TLS off too.")]
    private static partial void LogTlsOff(ILogger logger);
}

using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Gateway.Limits;

/// <summary>
/// Bounds on the HTTP connections a silo holds (the "MoECluster:Gateway" section): Kestrel's own limits
/// (<see cref="GatewayOptions.MaxConnections"/>, <see cref="GatewayOptions.MaxUpgradedConnections"/>, keep-alive and
/// header timeouts) and a per-client cap (<see cref="GatewayOptions.MaxConnectionsPerClient"/>) in a connection
/// middleware ahead of HTTP. A connection beyond either cap is closed as soon as it is accepted, before any byte of
/// it is read; the refusals are logged at most once per <see cref="LogInterval"/>, with their count.
/// </summary>
/// <remarks>
/// Why: every connection is a file handle. Without a cap, one client holding about 20,000 idle keep-alive connections
/// took every file handle of the front-end, after which nothing worked (not even reading /proc). The global cap is
/// never more than three quarters of the process's open-file limit (<see cref="EffectiveMaxConnections"/>). Clients
/// are counted by IPv4 address, and by /64 prefix for IPv6 (one host usually holds a whole /64).
/// </remarks>
public sealed partial class GatewayConnectionLimits
{
    /// <summary>Refusals are logged at most this often (with how many there were since the last line).</summary>
    public static readonly TimeSpan LogInterval = TimeSpan.FromSeconds(10);

    private readonly object _gate = new();
    private readonly Dictionary<IPAddress, int> _perClient = [];
    private readonly TimeProvider _clock;
    private readonly ILogger<GatewayConnectionLimits> _logger;
    private readonly int _perClientLimit;
    private long _open;
    private long _refusedPerClient;
    private long _refusedSinceLog;
    private DateTimeOffset _lastRefusalLog = DateTimeOffset.MinValue;
    private DateTimeOffset _lastFullLog = DateTimeOffset.MinValue;

    public GatewayConnectionLimits(IOptions<MoeClusterOptions> options, TimeProvider clock, ILogger<GatewayConnectionLimits> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        var gateway = options.Value.Gateway;
        Check(gateway.MaxConnections >= 1, nameof(GatewayOptions.MaxConnections), gateway.MaxConnections, "at least 1");
        Check(gateway.MaxConnectionsPerClient >= 0, nameof(GatewayOptions.MaxConnectionsPerClient), gateway.MaxConnectionsPerClient, "0 (no limit) or more");
        Check(gateway.MaxUpgradedConnections >= 0, nameof(GatewayOptions.MaxUpgradedConnections), gateway.MaxUpgradedConnections, "0 or more");
        Check(gateway.KeepAliveTimeoutSeconds > 0, nameof(GatewayOptions.KeepAliveTimeoutSeconds), gateway.KeepAliveTimeoutSeconds, "more than 0");
        Check(gateway.RequestHeadersTimeoutSeconds > 0, nameof(GatewayOptions.RequestHeadersTimeoutSeconds), gateway.RequestHeadersTimeoutSeconds, "more than 0");
        _clock = clock;
        _logger = logger;
        _perClientLimit = gateway.MaxConnectionsPerClient;
        OpenFileLimit = ReadOpenFileLimit();
        ConfiguredMaxConnections = gateway.MaxConnections;
        EffectiveMaxConnections = OpenFileLimit is long files ? (int)Math.Max(1, Math.Min(gateway.MaxConnections, files / 4 * 3)) : gateway.MaxConnections;
        if (EffectiveMaxConnections < gateway.MaxConnections)
        {
            LogLimitLowered(logger, gateway.MaxConnections, EffectiveMaxConnections, OpenFileLimit ?? 0);
        }
    }

    /// <summary>The process's open-file limit (RLIMIT_NOFILE, from /proc/self/limits); null where it cannot be read.</summary>
    public long? OpenFileLimit { get; }

    public int ConfiguredMaxConnections { get; }

    /// <summary><see cref="GatewayOptions.MaxConnections"/>, lowered to three quarters of <see cref="OpenFileLimit"/>.</summary>
    public int EffectiveMaxConnections { get; }

    /// <summary>Connections open now (those that passed both caps).</summary>
    public long Open => Interlocked.Read(ref _open);

    /// <summary>Connections closed at once because their client already held <see cref="GatewayOptions.MaxConnectionsPerClient"/>.</summary>
    public long RefusedPerClient => Interlocked.Read(ref _refusedPerClient);

    /// <summary>The client a connection is counted against: an IPv4 address, or the /64 prefix of an IPv6 one.</summary>
    public static IPAddress ClientOf(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (address.IsIPv4MappedToIPv6)
        {
            return address.MapToIPv4();
        }

        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return address;
        }

        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        bytes[8..].Clear();
        return new IPAddress(bytes);
    }

    /// <summary>Applies the Kestrel limits and puts the per-client cap ahead of every endpoint of <paramref name="kestrel"/>.</summary>
    public void Configure(KestrelServerOptions kestrel, GatewayOptions gateway)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        ArgumentNullException.ThrowIfNull(gateway);
        kestrel.Limits.MaxConcurrentConnections = EffectiveMaxConnections;
        kestrel.Limits.MaxConcurrentUpgradedConnections = gateway.MaxUpgradedConnections;
        kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(gateway.KeepAliveTimeoutSeconds);
        kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(gateway.RequestHeadersTimeoutSeconds);
        kestrel.ConfigureEndpointDefaults(listen => listen.Use(next => connection => OnConnectionAsync(connection, next)));
    }

    private async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        IPAddress? client = (connection.RemoteEndPoint as IPEndPoint)?.Address is { } address ? ClientOf(address) : null;
        if (!TryEnter(client))
        {
            // Returning without calling the next middleware closes the connection; nothing of it was read.
            return;
        }

        try
        {
            await next(connection);
        }
        finally
        {
            Exit(client);
        }
    }

    /// <summary>Counts a new connection of <paramref name="client"/> (null: not an IP connection, only counted); false when it is over the cap.</summary>
    internal bool TryEnter(IPAddress? client)
    {
        if (client is not null && _perClientLimit > 0)
        {
            lock (_gate)
            {
                _perClient.TryGetValue(client, out int held);
                if (held >= _perClientLimit)
                {
                    Interlocked.Increment(ref _refusedPerClient);
                    _refusedSinceLog++;
                    var now = _clock.GetUtcNow();
                    if (now - _lastRefusalLog >= LogInterval)
                    {
                        LogRefusedPerClient(_logger, _refusedSinceLog, client.ToString(), _perClientLimit);
                        _lastRefusalLog = now;
                        _refusedSinceLog = 0;
                    }

                    return false;
                }

                _perClient[client] = held + 1;
            }
        }

        long open = Interlocked.Increment(ref _open);
        if (open >= EffectiveMaxConnections)
        {
            lock (_gate)
            {
                var now = _clock.GetUtcNow();
                if (now - _lastFullLog >= LogInterval)
                {
                    LogFull(_logger, open, EffectiveMaxConnections);
                    _lastFullLog = now;
                }
            }
        }

        return true;
    }

    internal void Exit(IPAddress? client)
    {
        Interlocked.Decrement(ref _open);
        if (client is null || _perClientLimit <= 0)
        {
            return;
        }

        lock (_gate)
        {
            if (_perClient.TryGetValue(client, out int held))
            {
                if (held <= 1)
                {
                    _perClient.Remove(client);
                }
                else
                {
                    _perClient[client] = held - 1;
                }
            }
        }
    }

    /// <summary>The soft RLIMIT_NOFILE of this process ("Max open files" in /proc/self/limits); null when unknown or unlimited.</summary>
    public static long? ReadOpenFileLimit()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/limits"))
            {
                if (line.StartsWith("Max open files", StringComparison.Ordinal))
                {
                    string[] fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    return fields.Length > 0 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out long soft) ? soft : null;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return null;
    }

    private static void Check(bool ok, string name, object value, string expected)
    {
        if (!ok)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"{MoeClusterOptions.Section}:Gateway:{name} = {value}: expected {expected}"));
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "MoECluster:Gateway:MaxConnections = {Configured} is more than three quarters of the open-file limit ({OpenFiles}): at most {Effective} connections are accepted")]
    private static partial void LogLimitLowered(ILogger logger, int configured, int effective, long openFiles);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refused {Count} connection(s) (the last from {Client}): a client may hold at most {Limit} connections (MoECluster:Gateway:MaxConnectionsPerClient)")]
    private static partial void LogRefusedPerClient(ILogger logger, long count, string client, int limit);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The gateway holds {Open} connections, its limit (MoECluster:Gateway:MaxConnections = {Limit}): new connections are closed as they arrive")]
    private static partial void LogFull(ILogger logger, long open, int limit);
}

/// <summary>Registration of <see cref="GatewayConnectionLimits"/>.</summary>
public static class GatewayConnectionLimitsExtensions
{
    /// <summary>
    /// Applies the connection limits of "MoECluster:Gateway" to this process's Kestrel server (both silo roles serve
    /// HTTP). Kestrel's own log line per refused connection is silenced: <see cref="GatewayConnectionLimits"/> logs the
    /// refusals, rate-limited, so that a flood of connections cannot flood the log too.
    /// </summary>
    public static IServiceCollection AddMoeConnectionLimits(this IServiceCollection services)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<GatewayConnectionLimits>();
        services.AddOptions<KestrelServerOptions>().Configure<GatewayConnectionLimits, IOptions<MoeClusterOptions>>(
            (kestrel, limits, options) => limits.Configure(kestrel, options.Value.Gateway));
        services.AddLogging(logging => logging.AddFilter(KestrelConnectionsCategory, LogLevel.Error));
        return services;
    }

    /// <summary>The category of Kestrel's "connection rejected because the maximum number of concurrent connections has been reached".</summary>
    public const string KestrelConnectionsCategory = "Microsoft.AspNetCore.Server.Kestrel.Connections";
}

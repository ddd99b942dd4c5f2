using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Gateway.Security;

/// <summary>
/// At start-up: loads the API keys (a bad key file fails the start), checks the gateway's limits, and once the server
/// listens, warns when it listens beyond loopback with no key configured (anyone who reaches it can use it).
/// </summary>
public sealed partial class GatewaySecurityCheck(
    GatewayApiKeys keys,
    IOptions<MoeClusterOptions> options,
    IServer server,
    IHostApplicationLifetime lifetime,
    ILogger<GatewaySecurityCheck> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        Validate(options.Value.Gateway);
        if (keys.Enabled)
        {
            LogKeys(logger, keys.Count);
            if (keys.ShortKeys > 0)
            {
                LogShortKeys(logger, keys.ShortKeys, GatewayApiKeys.RecommendedMinimumLength);
            }
        }

        lifetime.ApplicationStarted.Register(CheckAddresses);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Whether every address is loopback (127.0.0.0/8, ::1 or "localhost").</summary>
    public static bool IsLoopbackOnly(IEnumerable<string> addresses)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        foreach (string address in addresses)
        {
            if (!Uri.TryCreate(address, UriKind.Absolute, out Uri? uri))
            {
                return false;
            }

            string host = uri.Host.Trim('[', ']');
            bool loopback = host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
                || (IPAddress.TryParse(host, out IPAddress? ip) && IPAddress.IsLoopback(ip));
            if (!loopback)
            {
                return false;
            }
        }

        return true;
    }

    private static void Validate(GatewayOptions gateway)
    {
        static void Check(bool ok, string key, int value, string allowed)
        {
            if (!ok)
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"MoECluster:Gateway:{key} is {value}; allowed: {allowed}."));
            }
        }

        Check(gateway.MaxRequestBytes >= 1, nameof(gateway.MaxRequestBytes), gateway.MaxRequestBytes, "1 and above");
        Check(gateway.MaxTokensPerRequest >= 1, nameof(gateway.MaxTokensPerRequest), gateway.MaxTokensPerRequest, "1 and above");
        Check(gateway.MaxJsonDepth is >= 3 and <= 64, nameof(gateway.MaxJsonDepth), gateway.MaxJsonDepth, "3..64 (a body nests 3 levels)");
    }

    private void CheckAddresses()
    {
        var addresses = server.Features.Get<IServerAddressesFeature>()?.Addresses;
        if (!keys.Enabled && addresses is { Count: > 0 } && !IsLoopbackOnly(addresses))
        {
            LogOpenGateway(logger, string.Join(", ", addresses));
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The gateway listens on {Addresses}, beyond loopback, without API keys: anyone who can reach it can use it. Set MoECluster:Gateway:ApiKeys or MoECluster:Gateway:ApiKeysFile.")]
    private static partial void LogOpenGateway(ILogger logger, string addresses);

    [LoggerMessage(Level = LogLevel.Information, Message = "Gateway API keys: {Count} configured; every endpoint but /health and /alive requires one.")]
    private static partial void LogKeys(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Count} gateway API key(s) are shorter than {Minimum} characters and may be guessed.")]
    private static partial void LogShortKeys(ILogger logger, int count, int minimum);
}

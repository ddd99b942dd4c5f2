using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway.Limits;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The connection limits on a real Kestrel port (127.0.0.1:0), configured as a silo does it
/// (<see cref="GatewayConnectionLimitsExtensions.AddMoeConnectionLimits"/>): the per-client cap, the global cap,
/// the keep-alive timeout, and the cap's bound by the open-file limit.
/// </summary>
public sealed class GatewayConnectionLimitsTests
{
    [Fact]
    public async Task A_client_past_MaxConnectionsPerClient_is_closed_at_once_while_other_addresses_still_connect()
    {
        await using var app = await StartAsync(new() { ["MoECluster:Gateway:MaxConnectionsPerClient"] = "3" });
        var held = new List<Socket>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                var (socket, served) = await AliveAsync(app.Port, IPAddress.Loopback);
                Assert.True(served, $"connection {i} from 127.0.0.1 was not served");
                held.Add(socket);
            }

            var (fourth, fourthServed) = await AliveAsync(app.Port, IPAddress.Loopback);
            fourth.Dispose();
            Assert.False(fourthServed, "a fourth connection from 127.0.0.1 was served");
            var limits = app.Services.GetRequiredService<GatewayConnectionLimits>();
            Assert.Equal(1, limits.RefusedPerClient);

            var (other, otherServed) = await AliveAsync(app.Port, IPAddress.Parse("127.0.0.2"));
            other.Dispose();
            Assert.True(otherServed, "127.0.0.2 was refused because of 127.0.0.1's connections");

            // A connection closed gives its place back.
            held[0].Dispose();
            held.RemoveAt(0);
            await WaitUntilAsync(() => limits.Open <= 2);
            var (again, againServed) = await AliveAsync(app.Port, IPAddress.Loopback);
            held.Add(again);
            Assert.True(againServed);
        }
        finally
        {
            held.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public async Task Connections_past_MaxConnections_are_closed_at_once()
    {
        await using var app = await StartAsync(new() { ["MoECluster:Gateway:MaxConnections"] = "4", ["MoECluster:Gateway:MaxConnectionsPerClient"] = "0" });
        var results = new List<(Socket Socket, bool Served)>();
        try
        {
            for (int i = 0; i < 6; i++)
            {
                results.Add(await AliveAsync(app.Port, IPAddress.Parse($"127.0.0.{i + 2}")));
            }

            Assert.Equal([true, true, true, true, false, false], results.Select(r => r.Served));
            Assert.Equal(4, app.Services.GetRequiredService<GatewayConnectionLimits>().EffectiveMaxConnections);
        }
        finally
        {
            results.ForEach(r => r.Socket.Dispose());
        }
    }

    [Fact]
    public async Task An_idle_keep_alive_connection_is_closed_after_KeepAliveTimeoutSeconds()
    {
        await using var app = await StartAsync(new() { ["MoECluster:Gateway:KeepAliveTimeoutSeconds"] = "1" });
        var (socket, served) = await AliveAsync(app.Port, IPAddress.Loopback);
        using (socket)
        {
            Assert.True(served);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            int read = await socket.ReceiveAsync(new byte[16], SocketFlags.None, timeout.Token);
            Assert.Equal(0, read);
        }
    }

    [Fact]
    public void MaxConnections_is_never_more_than_three_quarters_of_the_open_file_limit()
    {
        var options = new MoeClusterOptions();
        options.Gateway.MaxConnections = 1_000_000_000;
        var limits = new GatewayConnectionLimits(Options.Create(options), TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger<GatewayConnectionLimits>.Instance);
        long files = Assert.NotNull(GatewayConnectionLimits.ReadOpenFileLimit());
        Assert.Equal(files, limits.OpenFileLimit);
        Assert.Equal(files / 4 * 3, limits.EffectiveMaxConnections);
        Assert.Equal(Math.Min(10_000, files / 4 * 3), new GatewayConnectionLimits(Options.Create(new MoeClusterOptions()), TimeProvider.System,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<GatewayConnectionLimits>.Instance).EffectiveMaxConnections);
    }

    [Fact]
    public void Clients_are_IPv4_addresses_and_IPv6_64_prefixes()
    {
        Assert.Equal(IPAddress.Parse("10.1.2.3"), GatewayConnectionLimits.ClientOf(IPAddress.Parse("10.1.2.3")));
        Assert.Equal(IPAddress.Parse("10.1.2.3"), GatewayConnectionLimits.ClientOf(IPAddress.Parse("::ffff:10.1.2.3")));
        Assert.Equal(IPAddress.Parse("2001:db8:1:2::"), GatewayConnectionLimits.ClientOf(IPAddress.Parse("2001:db8:1:2:aaaa:bbbb:cccc:dddd")));
        Assert.Equal(GatewayConnectionLimits.ClientOf(IPAddress.Parse("2001:db8:1:2::1")), GatewayConnectionLimits.ClientOf(IPAddress.Parse("2001:db8:1:2:ffff::9")));
        Assert.NotEqual(GatewayConnectionLimits.ClientOf(IPAddress.Parse("2001:db8:1:2::1")), GatewayConnectionLimits.ClientOf(IPAddress.Parse("2001:db8:1:3::1")));
    }

    [Theory]
    [InlineData("MaxConnections", "0", "MoECluster:Gateway:MaxConnections = 0: expected at least 1")]
    [InlineData("MaxConnectionsPerClient", "-1", "MoECluster:Gateway:MaxConnectionsPerClient = -1: expected 0 (no limit) or more")]
    [InlineData("KeepAliveTimeoutSeconds", "0", "MoECluster:Gateway:KeepAliveTimeoutSeconds = 0: expected more than 0")]
    public async Task A_limit_out_of_range_fails_the_start(string key, string value, string message)
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => StartAsync(new() { [$"MoECluster:Gateway:{key}"] = value }));
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    /// <summary>Opens a connection from <paramref name="source"/> and sends GET /alive; the socket and whether it was answered 200.</summary>
    private static async Task<(Socket Socket, bool Served)> AliveAsync(int port, IPAddress source)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(source, 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await socket.SendAsync("GET /alive HTTP/1.1\r\nHost: test\r\n\r\n"u8.ToArray(), SocketFlags.None, timeout.Token);
            var buffer = new byte[1024];
            int read = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            return (socket, read > 0 && Encoding.ASCII.GetString(buffer, 0, read).StartsWith("HTTP/1.1 200", StringComparison.Ordinal));
        }
        catch (SocketException)
        {
            return (socket, false);
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (int i = 0; i < 100 && !condition(); i++)
        {
            await Task.Delay(50);
        }

        Assert.True(condition());
    }

    private static async Task<RunningApp> StartAsync(Dictionary<string, string?> settings)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.Configure<MoeClusterOptions>(builder.Configuration.GetSection(MoeClusterOptions.Section));
        builder.Services.AddMoeConnectionLimits();
        var app = builder.Build();
        app.MapGet("/alive", () => Results.Text("ok"));
        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }

        return new RunningApp(app);
    }

    private sealed class RunningApp(WebApplication app) : IAsyncDisposable
    {
        public int Port { get; } = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;

        public IServiceProvider Services => app.Services;

        public async ValueTask DisposeAsync()
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}

using System.Buffers.Binary;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoECluster.Cluster.Grains;
using MoECluster.Wire;

namespace MoECluster.Cluster.Tests;

/// <summary>An Orleans client talks to expert-shard grains directly, as a router would.</summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class ShardGrainTests(ProcessClusterFixture cluster) : IAsyncLifetime
{
    private IHost _client = null!;

    private IClusterClient Client => _client.Services.GetRequiredService<IClusterClient>();

    public async Task InitializeAsync()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.UseOrleansClient(c => c.UseLocalhostClustering(cluster.GatewayPort, serviceId: "moecluster", clusterId: "moecluster"));
        _client = builder.Build();
        await _client.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await _client.StopAsync();
        _client.Dispose();
    }

    private static ShardRequest Request(int first, int count, params int[] experts)
    {
        var rows = new float[experts.Length * 16];
        Array.Fill(rows, 0.25f);
        var counts = Enumerable.Repeat((byte)1, experts.Length).ToArray();
        return WireFormat.BuildRequest("lat", 1, first, count, rows, experts.Length, 16, WireDType.F32, counts,
            [.. experts.Select(e => (ushort)e)], [.. Enumerable.Repeat(1f, experts.Length)], WireDType.F32, 1);
    }

    [Fact]
    public async Task A_shard_answers_its_own_experts_with_one_partial_row_per_token()
    {
        var shard = Client.GetGrain<IExpertShardGrain>("lat/1/4-8");
        var reply = await shard.Compute(new WireBytes(WireFormat.Serialize(Request(4, 4, 4, 7))));
        var response = WireFormat.DecodeResponse(reply.Bytes, new WireLimits(), 2, 16);
        Assert.Equal(2, response.Partials.Rows);
        Assert.Contains(response.Partials.Decode(), v => v != 0f);
        var description = await shard.Describe();
        Assert.Equal("expert", description.SiloRole);
        Assert.Equal((4, 4), (description.FirstExpert, description.ExpertCount));
    }

    [Fact]
    public async Task A_shard_asked_for_an_expert_it_does_not_own_answers_with_a_clear_error()
    {
        var shard = Client.GetGrain<IExpertShardGrain>("lat/1/0-4");

        // The request addresses another shard's range.
        var wrongRange = await Assert.ThrowsAnyAsync<Exception>(() => shard.Compute(new WireBytes(WireFormat.Serialize(Request(4, 4, 5)))));
        Assert.Contains("holds experts 0..3", wrongRange.Message, StringComparison.Ordinal);
        Assert.Contains("addresses experts 4..7", wrongRange.Message, StringComparison.Ordinal);

        // The request claims this shard's range but names expert 9 in its pairs (bytes altered after building).
        var forged = Request(0, 4, 2);
        BinaryPrimitives.WriteUInt16LittleEndian(forged.Experts, 9);
        var outside = await Assert.ThrowsAnyAsync<Exception>(() => shard.Compute(new WireBytes(WireFormat.Serialize(forged))));
        Assert.Contains("9", outside.Message, StringComparison.Ordinal);
        Assert.Contains("lat/1/0-4", outside.Message, StringComparison.Ordinal);

        // And the shard keeps serving.
        var reply = await shard.Compute(new WireBytes(WireFormat.Serialize(Request(0, 4, 1))));
        Assert.Equal(1, WireFormat.DecodeResponse(reply.Bytes, new WireLimits(), 1, 16).Partials.Rows);
    }

    [Fact]
    public async Task Garbage_bytes_are_refused_by_the_shard()
    {
        var shard = Client.GetGrain<IExpertShardGrain>("lat/1/0-4");
        var e = await Assert.ThrowsAnyAsync<Exception>(() => shard.Compute(new WireBytes([0x93, 0x01, 0xC1])));
        Assert.Contains("lat/1/0-4", e.Message, StringComparison.Ordinal);
    }
}

using System.Buffers.Binary;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Security;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// An Orleans client with the cluster's certificate (mutual TLS) talks to grains directly, as a router would; it is
/// authenticated, not trusted with unbounded work: grains enforce the gateway's limits and activate only the shards
/// the routing table names.
/// </summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class ShardGrainTests(ProcessClusterFixture cluster) : IAsyncLifetime
{
    private IHost _client = null!;

    private IClusterClient Client => _client.Services.GetRequiredService<IClusterClient>();

    public async Task InitializeAsync()
    {
        var builder = Host.CreateApplicationBuilder();
        var tls = TestTls.Cluster.Load();
        builder.Services.AddSingleton(tls);
        builder.UseOrleansClient(c => c.UseLocalhostClustering(cluster.GatewayPort, serviceId: "moecluster", clusterId: "moecluster").UseClusterTls(tls));
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
        var pairs = new RoutedPairs([.. Enumerable.Range(0, experts.Length + 1)], experts, [.. Enumerable.Repeat(1f, experts.Length)]);
        return WireFormat.BuildRequest("lat", 1, Enumerable.Range(first, count).ToArray(), rows, 16, WireDType.F32, pairs, WireDType.F32, 1);
    }

    [Fact]
    public async Task A_shard_answers_its_own_experts_with_one_partial_row_per_token()
    {
        var shard = Client.GetGrain<IExpertShardGrain>("lat/1/s1/4-8");
        var reply = await shard.Compute(new WireBytes(WireFormat.Serialize(Request(4, 4, 4, 7))));
        var response = WireFormat.DecodeResponse(reply.Bytes, new WireLimits(), 2, 16);
        Assert.Equal(2, response.Partials.Rows);
        Assert.Contains(response.Partials.Decode(), v => v != 0f);
        var description = await shard.Describe();
        Assert.Equal("expert", description.SiloRole);
        Assert.Equal(("4-8", 4), (description.Experts, description.ExpertCount));
    }

    [Fact]
    public async Task A_shard_asked_for_an_expert_it_does_not_own_answers_with_a_clear_error()
    {
        var shard = Client.GetGrain<IExpertShardGrain>("lat/1/s0/0-4");

        // The request addresses another shard's range.
        var wrongRange = await Assert.ThrowsAnyAsync<Exception>(() => shard.Compute(new WireBytes(WireFormat.Serialize(Request(4, 4, 5)))));
        Assert.Contains("holds experts 0-4 of", wrongRange.Message, StringComparison.Ordinal);
        Assert.Contains("addresses experts 4-8 of", wrongRange.Message, StringComparison.Ordinal);

        // The request claims this shard's range but names expert 9 in its pairs (bytes altered after building).
        var forged = Request(0, 4, 2);
        BinaryPrimitives.WriteUInt16LittleEndian(forged.Experts, 9);
        var outside = await Assert.ThrowsAnyAsync<Exception>(() => shard.Compute(new WireBytes(WireFormat.Serialize(forged))));
        Assert.Contains("9", outside.Message, StringComparison.Ordinal);
        Assert.Contains("lat/1/s0/0-4", outside.Message, StringComparison.Ordinal);

        // And the shard keeps serving.
        var reply = await shard.Compute(new WireBytes(WireFormat.Serialize(Request(0, 4, 1))));
        Assert.Equal(1, WireFormat.DecodeResponse(reply.Bytes, new WireLimits(), 1, 16).Partials.Rows);
    }

    [Fact]
    public async Task Garbage_bytes_are_refused_by_the_shard()
    {
        var shard = Client.GetGrain<IExpertShardGrain>("lat/1/s0/0-4");
        var e = await Assert.ThrowsAnyAsync<Exception>(() => shard.Compute(new WireBytes([0x93, 0x01, 0xC1])));
        Assert.Contains("lat/1/s0/0-4", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("lat/1/s0/0-16")] // the whole layer in one shard
    [InlineData("lat/1/s0/0-3")]  // part of a map shard
    [InlineData("lat/1/s1/04-8")] // a map range spelled differently: another grain identity for the same experts
    [InlineData("lat/1/s01/4-8")] // a map index spelled differently
    [InlineData("lat/1/s2/4-8")]  // a map range under another shard's index
    [InlineData("lat/0/s0/0-4")]  // not an MoE layer
    [InlineData("lat/1/4-8")]     // the old key form, without the shard index
    [InlineData("lat/1/s0/0-3,5-6")] // a set of experts no placement names
    public async Task A_shard_outside_the_shard_map_does_not_activate(string key)
    {
        var shard = Client.GetGrain<IExpertShardGrain>(key);
        var e = await Assert.ThrowsAnyAsync<Exception>(() => shard.Describe());
        Assert.Contains(key, e.Message, StringComparison.Ordinal);
        Assert.True(
            e.Message.Contains("not in the routing table", StringComparison.Ordinal)
            || e.Message.Contains("not an MoE layer", StringComparison.Ordinal)
            || e.Message.Contains("{model}/{layer}/s{index}/{ranges}", StringComparison.Ordinal),
            e.Message);

        // And no silo holds it: /stats lists every activated shard of every silo.
        var stats = await cluster.Client.StatsAsync();
        var held = stats["silos"]!.AsArray().SelectMany(s => s!["shards"]!.AsArray().Select(k => k!.GetValue<string>())).ToList();
        Assert.DoesNotContain(key, held);
    }

    [Fact]
    public async Task The_router_refuses_more_tokens_than_the_gateway_allows()
    {
        using var model = MoeModel.Open(cluster.LatentPath);
        int d = model.Config.HiddenSize;
        int tokens = MoECluster.Cluster.Hosting.GatewayOptions.DefaultMaxTokensPerRequest + 1;
        var router = Client.GetGrain<IMoeRouterGrain>("lat");
        var e = await Assert.ThrowsAnyAsync<Exception>(() => router.Forward(new ForwardCall(model.Config.MoeLayers[0], new float[tokens * d], tokens, WireDType.F32)));
        Assert.Contains("MoECluster:Gateway:MaxTokensPerRequest", e.Message, StringComparison.Ordinal);
        Assert.Contains($"hidden_states has {tokens} rows", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public async Task The_router_refuses_non_finite_hidden_states_before_any_shard_sees_them(float bad)
    {
        using var model = MoeModel.Open(cluster.LatentPath);
        int d = model.Config.HiddenSize;
        var x = new float[4 * d];
        x[(2 * d) + 5] = bad;
        var router = Client.GetGrain<IMoeRouterGrain>("lat");
        var e = await Assert.ThrowsAnyAsync<Exception>(() => router.Forward(new ForwardCall(model.Config.MoeLayers[0], x, 4, WireDType.F32)));
        Assert.Contains("hidden_states[2][5] is not finite", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_router_called_directly_with_the_clusters_certificate_answers_like_the_in_process_forward()
    {
        using var model = MoeModel.Open(cluster.LatentPath);
        int d = model.Config.HiddenSize, layer = model.Config.MoeLayers[0];
        var rng = DeterministicRandom.For(17, "direct-router");
        float[] x = [.. Enumerable.Range(0, 16 * d).Select(_ => (float)rng.NextGaussian())];
        var reply = await Client.GetGrain<IMoeRouterGrain>("lat").Forward(new ForwardCall(layer, x, 16, WireDType.F32));
        double err = RelativeError.Of(reply.Hidden, model.ForwardLayer(layer, x, 16));
        Assert.True(err <= 1e-5, $"relative error {err:E2}");
    }
}

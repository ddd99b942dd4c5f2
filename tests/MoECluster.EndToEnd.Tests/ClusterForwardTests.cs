using MoECluster.Testing;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using MoECluster.Gateway;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Wire;

namespace MoECluster.EndToEnd.Tests;

/// <summary>The cluster computes what the in-process forward computes, and moves exactly the bytes it should.</summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class ClusterForwardTests(ProcessClusterFixture cluster)
{
    private static float[] Gaussian(int count, Random rng) =>
        [.. Enumerable.Range(0, count).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())))];
    private string PathOf(string model) => model == "lat" ? cluster.LatentPath : cluster.StandardPath;

    [Theory]
    [InlineData("lat", "fp32")]
    [InlineData("std", "fp32")]
    [InlineData("lat", "bf16")]
    [InlineData("std", "bf16")]
    [InlineData("lat", "fp16")]
    public async Task Layer_output_equals_the_in_process_forward(string model, string wire)
    {
        double tolerance = WireCodecs.Parse(wire).ParityTolerance;
        using var reference = MoeModel.Open(PathOf(model));
        int d = reference.Config.HiddenSize;
        int tokens = Random.Shared.Next(1, 40);
        float[] x = Gaussian(tokens * d, new Random());
        foreach (int layer in reference.Config.MoeLayers)
        {
            var response = await cluster.Client.ForwardAsync(model, layer, x, tokens, d, wire);
            double error = Metrics.RelativeError(response.HiddenStates.Decode(), reference.ForwardLayer(layer, x, tokens));
            Assert.True(error <= tolerance, $"{model} layer {layer} wire {wire}: relative error {error:E2}");
            var traffic = response.Layers.Single();
            Assert.Equal(($"{wire}/{wire}", wire, wire), (traffic.Wire, traffic.WireDispatch, traffic.WireCombine));
        }
    }

    [Theory]
    [InlineData("lat")]
    [InlineData("std")]
    public async Task Stack_output_equals_the_in_process_stack_on_fp32_wire(string model)
    {
        using var reference = MoeModel.Open(PathOf(model));
        int d = reference.Config.HiddenSize;
        float[] x = Gaussian(17 * d, new Random());
        var response = await cluster.Client.ForwardAsync(model, null, x, 17, d, "fp32");
        Assert.Equal(reference.Config.MoeLayers.Count, response.Layers.Count);
        double error = Metrics.RelativeError(response.HiddenStates.Decode(), reference.ForwardStack(x, 17));
        Assert.True(error <= 1e-5, $"{model} stack: relative error {error:E2}");
    }

    [Fact]
    public async Task No_shard_is_placed_on_the_front_end_silo_and_both_expert_silos_hold_shards()
    {
        using var reference = MoeModel.Open(cluster.LatentPath);
        int d = reference.Config.HiddenSize;
        await cluster.Client.ForwardAsync("lat", null, Gaussian(64 * d, new Random()), 64, d, "bf16");
        var stats = await cluster.Client.StatsAsync();
        var silos = stats["silos"]!.AsArray();
        Assert.Equal(3, silos.Count);
        var frontend = silos.Single(s => s!["role"]!.GetValue<string>() == "frontend");
        Assert.Empty(frontend!["shards"]!.AsArray());
        var experts = silos.Where(s => s!["role"]!.GetValue<string>() == "expert").ToList();
        Assert.Equal(2, experts.Count);
        Assert.All(experts, e => Assert.Contains(e!["shards"]!.AsArray(), k => k!.GetValue<string>().StartsWith("lat/", StringComparison.Ordinal)));
        string[] held = [.. experts.SelectMany(e => e!["shards"]!.AsArray().Select(k => k!.GetValue<string>())).Where(k => k.StartsWith("lat/1/", StringComparison.Ordinal)).Order()];
        Assert.Equal(["lat/1/s0/0-4", "lat/1/s1/4-8", "lat/1/s2/8-12", "lat/1/s3/12-16"], held);
    }

    [Theory]
    [InlineData("lat", "bf16")]
    [InlineData("std", "fp32")]
    public async Task Measured_payload_bytes_equal_the_analytic_count_exactly(string model, string wire)
    {
        using var reference = MoeModel.Open(PathOf(model));
        var config = reference.Config;
        int d = config.HiddenSize;
        int layer = config.MoeLayers[^1];
        int tokens = 53;
        float[] x = Gaussian(tokens * d, new Random());

        // The analytic count, from an independent in-process routing of the same input: one row per (token, shard).
        var plan = reference.Mixer(layer).Route(x, tokens);
        var map = new ExpertRoutingTable(model, layer, config.NRoutedExperts, 4);
        int rows = Enumerable.Range(0, tokens).Sum(t => plan.ExpertsOf(t).ToArray().Select(map.ShardOf).Distinct().Count());
        long expected = (long)rows * config.RoutedWidth * (wire == "fp32" ? 4 : 2);

        var traffic = (await cluster.Client.ForwardAsync(model, layer, x, tokens, d, wire)).Layers.Single();
        Assert.Equal(rows, traffic.RoutedRows);
        Assert.Equal(expected, traffic.DispatchPayloadBytes);
        Assert.Equal(expected, traffic.CombinePayloadBytes);
        Assert.Equal(2 * expected, traffic.PredictedPayloadBytes);

        // Beside the activation block, a dispatch message carries per row a pair count (1 byte) and per
        // (token, expert) pair a uint16 expert id and an fp32 weight; the rest is a small fixed envelope.
        long pairBytes = rows + (6L * tokens * config.NumExpertsPerTok);
        long envelope = traffic.DispatchMessageBytes - traffic.DispatchPayloadBytes - pairBytes;
        Assert.InRange(envelope, 1, 64 * traffic.Messages);
        Assert.InRange(traffic.CombineMessageBytes - traffic.CombinePayloadBytes, 1, 96 * traffic.Messages);
    }

    [Fact]
    public async Task Orleans_socket_bytes_equal_payload_messages_plus_envelopes_within_a_few_percent()
    {
        using var reference = MoeModel.Open(cluster.StandardPath);
        int d = reference.Config.HiddenSize;
        int tokens = 4096;
        float[] x = Gaussian(tokens * d, new Random());
        await cluster.Client.ForwardAsync("std", reference.Config.MoeLayers[0], x[..(8 * d)], 8, d, "fp32"); // warm: shards active
        long before = (await cluster.Client.StatsAsync())["totals"]!["socket_bytes"]!.GetValue<long>();
        var traffic = (await cluster.Client.ForwardAsync("std", reference.Config.MoeLayers[0], x, tokens, d, "fp32")).Layers.Single();
        long after = (await cluster.Client.StatsAsync())["totals"]!["socket_bytes"]!.GetValue<long>();
        long socket = after - before;
        long messages = traffic.DispatchMessageBytes + traffic.CombineMessageBytes;
        Assert.True(messages > 1_000_000, $"payload too small to measure: {messages}");
        double excess = (double)(socket - messages) / messages;
        Assert.True(excess > 0 && excess < 0.03, $"socket bytes {socket:N0} vs MessagePack messages {messages:N0}: {excess:P2} over");
    }

    [Fact]
    public async Task Bytes_written_to_TCP_exceed_Orleans_socket_bytes_by_the_TLS_records_alone()
    {
        using var reference = MoeModel.Open(cluster.StandardPath);
        int d = reference.Config.HiddenSize;
        int tokens = 4096;
        float[] x = Gaussian(tokens * d, new Random());
        await cluster.Client.ForwardAsync("std", reference.Config.MoeLayers[0], x[..(8 * d)], 8, d, "fp32"); // warm: shards active, connections open
        var before = (await cluster.Client.StatsAsync())["totals"]!;
        await cluster.Client.ForwardAsync("std", reference.Config.MoeLayers[0], x, tokens, d, "fp32");
        var after = (await cluster.Client.StatsAsync())["totals"]!;
        Assert.True(after["tls"]!.GetValue<bool>(), "the silos should talk mutual TLS");
        long socket = after["socket_bytes"]!.GetValue<long>() - before["socket_bytes"]!.GetValue<long>();
        long tcp = after["tcp_bytes"]!.GetValue<long>() - before["tcp_bytes"]!.GetValue<long>();
        Assert.True(socket > 1_000_000, $"too little traffic to measure: {socket}");

        // TLS 1.3 adds 22 bytes per record (header, content type, AEAD tag) and a record holds up to 16 KiB: well under
        // 1 % on megabyte messages, but never nothing.
        double overhead = (double)(tcp - socket) / socket;
        Assert.True(overhead > 0 && overhead < 0.01, $"TCP bytes {tcp:N0} vs Orleans socket bytes {socket:N0}: {overhead:P3} over");
    }

    [Fact]
    public async Task Stats_show_measured_bytes_beside_predictions_and_d_over_l_fewer_bytes_per_routed_row()
    {
        using var lat = MoeModel.Open(cluster.LatentPath);
        int d = lat.Config.HiddenSize;
        float[] x = Gaussian(256 * d, new Random());
        var before = await cluster.Client.StatsAsync();
        await cluster.Client.ForwardAsync("lat", lat.Config.MoeLayers[0], x, 256, d, "bf16");
        await cluster.Client.ForwardAsync("std", lat.Config.MoeLayers[0], x, 256, d, "bf16");
        var after = await cluster.Client.StatsAsync();
        foreach (var m in after["models"]!.AsArray())
        {
            Assert.Equal(m!["predicted_payload_bytes"]!.GetValue<long>(), m["measured_payload_bytes"]!.GetValue<long>());
            Assert.True(m["measured_message_bytes"]!.GetValue<long>() > m["measured_payload_bytes"]!.GetValue<long>());
        }

        (long Bytes, long Rows) Routed(JsonNode stats, string model) => stats["silo_pairs"]!.AsArray()
            .Where(p => p!["model"]!.GetValue<string>() == model && p["direction"]!.GetValue<string>() == "dispatch")
            .Aggregate((0L, 0L), (acc, p) => (acc.Item1 + p!["payload_bytes"]!.GetValue<long>(), acc.Item2 + p["rows"]!.GetValue<long>()));
        var (latBytes, latRows) = Routed(after, "lat");
        var (latBytes0, latRows0) = Routed(before, "lat");
        var (stdBytes, stdRows) = Routed(after, "std");
        var (stdBytes0, stdRows0) = Routed(before, "std");
        double perRowLatent = (double)(latBytes - latBytes0) / (latRows - latRows0);
        double perRowStandard = (double)(stdBytes - stdBytes0) / (stdRows - stdRows0);
        Assert.Equal(16 * 2, perRowLatent);
        Assert.Equal(64 * 2, perRowStandard);
        Assert.True(after["standard_over_latent_bytes_per_token"]!.GetValue<double>() > 1);
        Assert.NotEmpty(after["socket"]!.AsArray());
        Assert.Contains(after["silo_pairs"]!.AsArray(), p => p!["direction"]!.GetValue<string>() == "combine" && p["to_silo"]!.GetValue<string>() == "frontend");
    }

    [Fact]
    public async Task Stats_taken_while_requests_are_in_flight_count_whole_batches_so_measured_equals_predicted()
    {
        using var lat = MoeModel.Open(cluster.LatentPath);
        int d = lat.Config.HiddenSize, layer = lat.Config.MoeLayers[0];
        float[] x = Gaussian(256 * d, new Random());
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(4));
        int answered = 0;
        var senders = Enumerable.Range(0, 6).Select(i => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await cluster.Client.ForwardAsync(i % 2 == 0 ? "lat" : "std", layer, x, 256, d, "bf16");
                Interlocked.Increment(ref answered);
            }
        })).ToArray();

        int snapshots = 0;
        while (!stop.IsCancellationRequested)
        {
            var stats = await cluster.Client.StatsAsync();
            snapshots++;
            foreach (var m in stats["models"]!.AsArray())
            {
                long measured = m!["measured_payload_bytes"]!.GetValue<long>(), predicted = m["predicted_payload_bytes"]!.GetValue<long>();
                Assert.True(measured == predicted,
                    $"snapshot {snapshots} with requests in flight: {m["model"]} measured {measured:N0} payload bytes, predicted {predicted:N0}");
            }
        }

        await Task.WhenAll(senders);
        Assert.True(answered >= 12 && snapshots >= 10, $"too little overlap to tell: {answered} requests answered, {snapshots} snapshots");
    }

    [Fact]
    public async Task Json_bodies_work_like_messagepack_bodies()
    {
        using var reference = MoeModel.Open(cluster.LatentPath);
        int d = reference.Config.HiddenSize;
        var rng = new Random();
        float[][] rows = [.. Enumerable.Range(0, 3).Select(_ => Gaussian(d, rng))];
        using var response = await cluster.Http.PostAsJsonAsync("/v1/layers/1/forward", new { model = "lat", wire = "fp32", hidden_states = rows });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        float[] y = [.. body["hidden_states"]!.AsArray().SelectMany(r => r!.AsArray().Select(v => v!.GetValue<float>()))];
        double error = Metrics.RelativeError(y, reference.ForwardLayer(1, [.. rows.SelectMany(r => r)], 3));
        Assert.True(error <= 1e-5, $"relative error {error:E2}");
    }

    [Theory]
    [InlineData("{\"model\":\"lat\",\"hidden_states\":[[1,2,3]]}", 400, "hidden_size 64")]
    [InlineData("{\"model\":\"nope\",\"hidden_states\":[[1]]}", 404, "unknown model 'nope'")]
    [InlineData("{\"model\":\"lat\",\"hidden_states\":[]}", 400, "hidden_states is missing or empty")]
    [InlineData("{\"model\":\"lat\",\"hidden_states\":[[1,2],[1]]}", 400, "hidden_states[1] has 1 values")]
    [InlineData("{not json", 400, "malformed JSON")]
    [InlineData("", 400, "empty request body")]
    public async Task Bad_json_requests_get_a_4xx_with_a_clear_message(string body, int status, string message)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await cluster.Http.PostAsync("/v1/layers/1/forward", content);
        Assert.Equal(status, (int)response.StatusCode);
        string error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!.GetValue<string>();
        Assert.Contains(message, error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unknown_layer_and_non_finite_values_are_refused()
    {
        var notMoe = await Assert.ThrowsAsync<GatewayException>(() => cluster.Client.ForwardAsync("lat", 2, new float[64], 1, 64, "bf16"));
        Assert.Equal(404, notMoe.StatusCode);
        Assert.Contains("MoE layers: 1, 3", notMoe.Message, StringComparison.Ordinal);
        float[] x = new float[64];
        x[5] = float.NaN;
        var nan = await Assert.ThrowsAsync<GatewayException>(() => cluster.Client.ForwardAsync("lat", 1, x, 1, 64, "bf16"));
        Assert.Equal(400, nan.StatusCode);
        Assert.Contains("hidden_states[0][5] is not finite", nan.Message, StringComparison.Ordinal);
        using var garbage = new ByteArrayContent([0xC1, 0x00, 0xFF]);
        garbage.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(GatewayEndpoints.MessagePackContentType);
        using var response = await cluster.Http.PostAsync("/v1/layers/1/forward", garbage);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("malformed MessagePack", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }
}

using System.Text.Json.Nodes;
using MoECluster.Cli.Load;

namespace MoECluster.Cli.Tests;

/// <summary><c>moecluster load</c>'s cluster figures: the difference of two <c>/stats</c> documents, per token and per batch.</summary>
public sealed class ClusterCountersTests
{
    private static JsonNode Stats(long tokens, long messages, long payload, long message, (long Batches, long Requests, long Tokens)[] frontEnd, (long Batches, long Requests)[] shards) => new JsonObject
    {
        ["models"] = new JsonArray(new JsonObject { ["model"] = "latent", ["tokens"] = tokens - 5 }, new JsonObject { ["model"] = "standard", ["tokens"] = 5 }),
        ["totals"] = new JsonObject { ["payload_bytes"] = payload, ["message_bytes"] = message, ["messages"] = messages },
        ["front_end_batches"] = new JsonArray([.. frontEnd.Select(b => (JsonNode)new JsonObject { ["batches"] = b.Batches, ["requests"] = b.Requests, ["tokens"] = b.Tokens })]),
        ["shard_batches"] = new JsonArray([.. shards.Select(b => (JsonNode)new JsonObject { ["batches"] = b.Batches, ["requests"] = b.Requests })]),
    };

    [Fact]
    public void A_run_reports_messages_and_bytes_per_token_and_requests_per_forward_and_pass_from_two_stats_documents()
    {
        var before = ClusterCounters.From(Stats(100, 40, 10_000, 12_000, [(10, 10, 80)], [(20, 20), (5, 5)]));
        var after = ClusterCounters.From(Stats(900, 120, 90_000, 100_000, [(20, 50, 400), (3, 3, 24)], [(40, 60), (5, 5)]));
        var run = after.Since(before);
        Assert.Equal(new ClusterCounters(800, 80, 80_000, 88_000, 13, 43, 344, 20, 40), run);
        var json = run.ToJson();
        Assert.Equal(0.1, json["messages_per_token"]!.GetValue<double>(), 12);
        Assert.Equal(100.0, json["payload_bytes_per_token"]!.GetValue<double>(), 12);
        Assert.Equal(110.0, json["message_bytes_per_token"]!.GetValue<double>(), 12);
        Assert.Equal(43.0 / 13, json["frontend_requests_per_forward"]!.GetValue<double>(), 12);
        Assert.Equal(344.0 / 13, json["frontend_tokens_per_forward"]!.GetValue<double>(), 12);
        Assert.Equal(2.0, json["shard_requests_per_pass"]!.GetValue<double>(), 12);
        Assert.Contains("0.10 messages/token, 100.0 payload bytes/token, 110.0 message bytes/token; front-end 3.31 requests/forward (26.5 tokens); shards 2.00 requests/pass", run.Summary(), StringComparison.Ordinal);
    }

    [Fact]
    public void A_stats_document_without_batching_fields_counts_zero_and_reports_no_ratio()
    {
        var run = ClusterCounters.From(new JsonObject { ["models"] = new JsonArray(), ["totals"] = new JsonObject() }).Since(ClusterCounters.From(null));
        Assert.Equal(new ClusterCounters(0, 0, 0, 0, 0, 0, 0, 0, 0), run);
        Assert.Null(run.ToJson()["messages_per_token"]);
        Assert.Null(run.ToJson()["frontend_requests_per_forward"]);
    }

    [Fact]
    public void A_run_reports_each_layers_expert_silo_balance_from_the_shards_work_it_added()
    {
        static JsonNode Shards(params (string Shard, string Silo, long Rows, long Pairs, long Micros)[] work) => new JsonObject
        {
            ["models"] = new JsonArray(),
            ["totals"] = new JsonObject(),
            ["shard_batches"] = new JsonArray([.. work.Select(w => (JsonNode)new JsonObject
            {
                ["shard"] = w.Shard, ["silo"] = w.Silo, ["batches"] = 1, ["requests"] = 1, ["rows"] = w.Rows, ["pairs"] = w.Pairs, ["compute_microseconds"] = w.Micros,
            })]),
        };
        var before = ClusterCounters.From(Shards(("lat/1/s0/0-32", "expert-1", 100, 300, 1000), ("lat/1/s1/32-64", "expert-2", 100, 300, 1000)));
        var after = ClusterCounters.From(Shards(
            ("lat/1/s0/0-32", "expert-1", 400, 1500, 7000), ("lat/1/s1/32-64", "expert-2", 200, 500, 2000), ("lat/1/s1/32-64/alt", "expert-1", 0, 0, 0)));
        var run = after.Since(before);
        var layer = Assert.Single(run.Balance());
        Assert.Equal(("lat", 1), (layer.Model, layer.Layer));
        Assert.Equal(300 / 200.0, layer.RowsImbalance, 12);
        Assert.Equal(1200 / 700.0, layer.PairsImbalance, 12);
        Assert.Equal(6000 / 3500.0, layer.ComputeImbalance, 12);
        Assert.Equal(1200 / 700.0, run.ToJson()["balance"]![0]!["pairs_imbalance"]!.GetValue<double>(), 12);
        Assert.Contains("lat layer 1 expert-silo imbalance (busiest / mean) rows 1.50, pairs 1.71, compute 1.71", run.Summary(), StringComparison.Ordinal);
    }
}

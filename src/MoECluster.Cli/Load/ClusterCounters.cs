using System.Globalization;
using System.Text.Json.Nodes;

namespace MoECluster.Cli.Load;

/// <summary>
/// The cluster's own counters from <c>GET /stats</c> that a load run reads before and after itself: tokens served (per MoE
/// layer), routed messages (a shard call counts two: the request and its answer) and their payload and encoded bytes, the
/// forwards and requests of front-end batching, the passes and requests of shard batching. The difference of two is what
/// the run cost the cluster: messages and bytes per token, requests per front-end forward and per shard pass.
/// </summary>
internal sealed record ClusterCounters(
    long Tokens,
    long Messages,
    long PayloadBytes,
    long MessageBytes,
    long FrontEndForwards,
    long FrontEndRequests,
    long FrontEndTokens,
    long ShardPasses,
    long ShardRequests)
{
    /// <summary>The counters of a <c>/stats</c> document (absent fields count 0).</summary>
    public static ClusterCounters From(JsonNode? stats)
    {
        static long L(JsonNode? n) => n is null ? 0 : long.Parse(n.ToJsonString(), NumberStyles.Integer, CultureInfo.InvariantCulture);
        static IEnumerable<JsonNode> Items(JsonNode? a) => a is JsonArray array ? array.OfType<JsonNode>() : [];
        var totals = stats?["totals"];
        var frontEnd = Items(stats?["front_end_batches"]).ToList();
        var shards = Items(stats?["shard_batches"]).ToList();
        return new ClusterCounters(
            Items(stats?["models"]).Sum(m => L(m["tokens"])),
            L(totals?["messages"]),
            L(totals?["payload_bytes"]),
            L(totals?["message_bytes"]),
            frontEnd.Sum(b => L(b["batches"])),
            frontEnd.Sum(b => L(b["requests"])),
            frontEnd.Sum(b => L(b["tokens"])),
            shards.Sum(b => L(b["batches"])),
            shards.Sum(b => L(b["requests"])));
    }

    /// <summary>What happened between <paramref name="before"/> and this.</summary>
    public ClusterCounters Since(ClusterCounters before)
    {
        ArgumentNullException.ThrowIfNull(before);
        return new ClusterCounters(
            Tokens - before.Tokens,
            Messages - before.Messages,
            PayloadBytes - before.PayloadBytes,
            MessageBytes - before.MessageBytes,
            FrontEndForwards - before.FrontEndForwards,
            FrontEndRequests - before.FrontEndRequests,
            FrontEndTokens - before.FrontEndTokens,
            ShardPasses - before.ShardPasses,
            ShardRequests - before.ShardRequests);
    }

    /// <summary>The JSON of a difference: per token (per MoE layer) and per batch; null where nothing was counted.</summary>
    public JsonObject ToJson()
    {
        double? Per(long value, long by) => by == 0 ? null : (double)value / by;
        return new JsonObject
        {
            ["tokens"] = Tokens,
            ["messages"] = Messages,
            ["messages_per_token"] = Per(Messages, Tokens),
            ["payload_bytes_per_token"] = Per(PayloadBytes, Tokens),
            ["message_bytes_per_token"] = Per(MessageBytes, Tokens),
            ["frontend_forwards"] = FrontEndForwards,
            ["frontend_requests_per_forward"] = Per(FrontEndRequests, FrontEndForwards),
            ["frontend_tokens_per_forward"] = Per(FrontEndTokens, FrontEndForwards),
            ["shard_passes"] = ShardPasses,
            ["shard_requests_per_pass"] = Per(ShardRequests, ShardPasses),
        };
    }

    /// <summary>One line for the summary table.</summary>
    public string Summary()
    {
        string F(long value, long by, string format) => by == 0 ? "-" : ((double)value / by).ToString(format, CultureInfo.InvariantCulture);
        return $"cluster (GET /stats before and after the run, warm-up included; per token per MoE layer): {F(Messages, Tokens, "0.00")} messages/token, "
            + $"{F(PayloadBytes, Tokens, "#,0.0")} payload bytes/token, {F(MessageBytes, Tokens, "#,0.0")} message bytes/token; "
            + $"front-end {F(FrontEndRequests, FrontEndForwards, "0.00")} requests/forward ({F(FrontEndTokens, FrontEndForwards, "0.0")} tokens); "
            + $"shards {F(ShardRequests, ShardPasses, "0.00")} requests/pass";
    }
}

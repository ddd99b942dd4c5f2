using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Telemetry;

namespace MoECluster.Cli.Load;

/// <summary>
/// The cluster's own counters from <c>GET /stats</c> that a load run reads before and after itself: tokens served (per MoE
/// layer), routed messages (a shard call counts two: the request and its answer) and their payload and encoded bytes, the
/// forwards and requests of front-end batching, the passes and requests of shard batching. The difference of two is what
/// the run cost the cluster: messages and bytes per token, requests per front-end forward and per shard pass, and how
/// evenly each layer's work fell on the expert silos (rows, (row, expert) pairs and compute time per silo).
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
    /// <summary>Per (shard or alternate key, expert silo): rows, (row, expert) pairs and compute microseconds of its passes.</summary>
    public IReadOnlyDictionary<(string Shard, string Silo), (long Rows, long Pairs, long Micros)> Work { get; init; } =
        new Dictionary<(string, string), (long, long, long)>();

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
            shards.Sum(b => L(b["requests"])))
        {
            Work = shards
                .Where(b => MoECluster.Cluster.Dispatch.ShardKeys.TryParse(b["shard"]?.GetValue<string>() ?? string.Empty, out _))
                .GroupBy(b => (Shard: b["shard"]!.GetValue<string>(), Silo: b["silo"]?.GetValue<string>() ?? "?"))
                .ToDictionary(g => g.Key, g => (g.Sum(b => L(b["rows"])), g.Sum(b => L(b["pairs"])), g.Sum(b => L(b["compute_microseconds"])))),
        };
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
            ShardRequests - before.ShardRequests)
        {
            Work = Work.ToDictionary(w => w.Key, w =>
                before.Work.TryGetValue(w.Key, out var b) ? (w.Value.Rows - b.Rows, w.Value.Pairs - b.Pairs, w.Value.Micros - b.Micros) : w.Value),
        };
    }

    /// <summary>Equal counters and equal work per (model, layer, silo), compared by content.</summary>
    public bool Equals(ClusterCounters? other) =>
        other is not null
        && (Tokens, Messages, PayloadBytes, MessageBytes, FrontEndForwards, FrontEndRequests, FrontEndTokens, ShardPasses, ShardRequests)
            == (other.Tokens, other.Messages, other.PayloadBytes, other.MessageBytes, other.FrontEndForwards, other.FrontEndRequests, other.FrontEndTokens, other.ShardPasses, other.ShardRequests)
        && Work.Count == other.Work.Count
        && Work.All(w => other.Work.TryGetValue(w.Key, out var o) && o == w.Value);

    public override int GetHashCode() => HashCode.Combine(Tokens, Messages, PayloadBytes, MessageBytes, FrontEndRequests, ShardRequests, Work.Count);

    /// <summary>
    /// Per layer that did work, as <c>/stats</c> computes it (<see cref="LayerBalance"/>) over the work this difference
    /// holds: each silo's share and the busiest silo over the mean of rows, pairs and compute time.
    /// </summary>
    public IReadOnlyList<LayerBalance> Balance() =>
        LayerBalance.From(Work.Where(w => w.Value.Rows > 0).Select(w => new ShardBatchTotals(
            w.Key.Shard, w.Key.Silo, Batches: 0, Requests: 0, w.Value.Rows, MergedBatches: 0, MaxRequests: 0, MaxRows: 0, w.Value.Micros, w.Value.Pairs)));

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
            ["balance"] = new JsonArray([.. Balance().Select(b => (JsonNode)new JsonObject
            {
                ["model"] = b.Model,
                ["layer"] = b.Layer,
                ["rows_imbalance"] = b.RowsImbalance,
                ["pairs_imbalance"] = b.PairsImbalance,
                ["compute_imbalance"] = b.ComputeImbalance,
                ["silos"] = new JsonArray([.. b.Silos.Select(w => (JsonNode)new JsonObject
                {
                    ["silo"] = w.Silo,
                    ["rows"] = w.Rows,
                    ["pairs"] = w.Pairs,
                    ["compute_microseconds"] = w.ComputeMicroseconds,
                })]),
            })]),
        };
    }

    /// <summary>One line for the summary table.</summary>
    public string Summary()
    {
        string F(long value, long by, string format) => by == 0 ? "-" : ((double)value / by).ToString(format, CultureInfo.InvariantCulture);
        return $"cluster (GET /stats before and after the run, warm-up included; per token per MoE layer): {F(Messages, Tokens, "0.00")} messages/token, "
            + $"{F(PayloadBytes, Tokens, "#,0.0")} payload bytes/token, {F(MessageBytes, Tokens, "#,0.0")} message bytes/token; "
            + $"front-end {F(FrontEndRequests, FrontEndForwards, "0.00")} requests/forward ({F(FrontEndTokens, FrontEndForwards, "0.0")} tokens); "
            + $"shards {F(ShardRequests, ShardPasses, "0.00")} requests/pass"
            + string.Concat(Balance().Select(b => string.Create(CultureInfo.InvariantCulture,
                $"; {b.Model} layer {b.Layer} expert-silo imbalance (busiest / mean) rows {b.RowsImbalance:0.00}, pairs {b.PairsImbalance:0.00}, compute {b.ComputeImbalance:0.00}")));
    }
}

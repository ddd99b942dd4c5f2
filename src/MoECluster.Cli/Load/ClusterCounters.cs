using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Model.Balancing;
using MoECluster.Model.Dispatch;

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
    /// <summary>Per (model, layer, expert silo): rows, (row, expert) pairs and compute microseconds of its shards' passes.</summary>
    public IReadOnlyDictionary<(string Model, int Layer, string Silo), (long Rows, long Pairs, long Micros)> Work { get; init; } =
        new Dictionary<(string, int, string), (long, long, long)>();

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
                .Select(b => (Batch: b, Key: b["shard"]?.GetValue<string>() ?? string.Empty))
                .Select(x => (x.Batch, Shard: ExpertShard.TryParseKey(x.Key.EndsWith("/alt", StringComparison.Ordinal) ? x.Key[..^4] : x.Key, out var shard, out _) ? shard : null))
                .Where(x => x.Shard is not null)
                .GroupBy(x => (x.Shard!.Model, x.Shard.Layer, Silo: x.Batch["silo"]?.GetValue<string>() ?? "?"))
                .ToDictionary(g => g.Key, g => (g.Sum(x => L(x.Batch["rows"])), g.Sum(x => L(x.Batch["pairs"])), g.Sum(x => L(x.Batch["compute_microseconds"])))),
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

    /// <summary>Per layer that did work: each silo's share and the busiest silo over the mean of rows, pairs and compute time.</summary>
    public IReadOnlyList<(string Model, int Layer, double Rows, double Pairs, double Compute, IReadOnlyList<(string Silo, long Rows, long Pairs, long Micros)> Silos)> Balance() =>
        [.. Work.Where(w => w.Value.Rows > 0)
            .GroupBy(w => (w.Key.Model, w.Key.Layer))
            .OrderBy(g => g.Key.Model, StringComparer.Ordinal).ThenBy(g => g.Key.Layer)
            .Select(g =>
            {
                var silos = g.OrderBy(w => w.Key.Silo, StringComparer.Ordinal).Select(w => (w.Key.Silo, w.Value.Rows, w.Value.Pairs, w.Value.Micros)).ToList();
                return (g.Key.Model, g.Key.Layer,
                    ExpertLoad.Imbalance(silos.Select(x => (double)x.Rows)),
                    ExpertLoad.Imbalance(silos.Select(x => (double)x.Pairs)),
                    ExpertLoad.Imbalance(silos.Select(x => (double)x.Micros)),
                    (IReadOnlyList<(string, long, long, long)>)silos);
            })];

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
                ["rows_imbalance"] = b.Rows,
                ["pairs_imbalance"] = b.Pairs,
                ["compute_imbalance"] = b.Compute,
                ["silos"] = new JsonArray([.. b.Silos.Select(w => (JsonNode)new JsonObject
                {
                    ["silo"] = w.Silo,
                    ["rows"] = w.Rows,
                    ["pairs"] = w.Pairs,
                    ["compute_microseconds"] = w.Micros,
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
                $"; {b.Model} layer {b.Layer} expert-silo imbalance (busiest / mean) rows {b.Rows:0.00}, pairs {b.Pairs:0.00}, compute {b.Compute:0.00}")));
    }
}

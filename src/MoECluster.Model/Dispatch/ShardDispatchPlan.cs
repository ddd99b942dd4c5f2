using MoECluster.Model.Routing;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// What one shard receives for one batch: the distinct tokens that have at least one of their top-K experts in
/// the shard (each token once, in token order) and, per token (row), its (expert, weight) pairs for this shard.
/// </summary>
public sealed record ShardDispatch(ExpertShard Shard, int[] Tokens, RoutedPairs Pairs)
{
    public int Rows => Tokens.Length;
}

/// <summary>
/// The token dispatcher of the cluster path: groups a routing plan by shard, one row per (token, shard) rather
/// than per (token, expert), so a token's row crosses the network once per shard however many of its experts
/// that shard holds. Routed elements per batch = Σ_shards rows × width.
/// </summary>
public static class ShardDispatchPlan
{
    /// <summary>
    /// The dispatches of a plan, one per shard with at least one row, in shard order. An expert with replicas (in
    /// several shards of <paramref name="table"/>) has each of its (token, expert) pairs sent to one of them: the one
    /// with the least outstanding work — <paramref name="outstandingPairs"/>[shard] (pairs already in flight there, as
    /// the caller counts them; empty for none) plus the pairs this plan has given it so far — ties to a shard the
    /// token already has a row on (no extra row), then to the lower index. Deterministic for the same inputs.
    /// </summary>
    public static IReadOnlyList<ShardDispatch> Build(RoutingPlan plan, ExpertRoutingTable table, ReadOnlySpan<long> outstandingPairs = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(table);
        int shards = table.Shards.Count;
        if (!outstandingPairs.IsEmpty && outstandingPairs.Length != shards)
        {
            throw new ArgumentException($"{outstandingPairs.Length} outstanding counts for {shards} shards", nameof(outstandingPairs));
        }

        var tokens = new List<int>[shards];
        var offsets = new List<int>[shards];
        var experts = new List<int>[shards];
        var weights = new List<float>[shards];
        var work = new long[shards];
        for (int s = 0; s < shards; s++)
        {
            tokens[s] = [];
            offsets[s] = [0];
            experts[s] = [];
            weights[s] = [];
            work[s] = outstandingPairs.IsEmpty ? 0 : outstandingPairs[s];
        }

        for (int t = 0; t < plan.Tokens; t++)
        {
            ReadOnlySpan<int> e = plan.ExpertsOf(t);
            ReadOnlySpan<float> w = plan.WeightsOf(t);
            for (int k = 0; k < e.Length; k++)
            {
                int s = Choose(table.ShardsOf(e[k]), work, tokens, t);
                if (tokens[s].Count == 0 || tokens[s][^1] != t)
                {
                    tokens[s].Add(t);
                    offsets[s].Add(offsets[s][^1]);
                }

                experts[s].Add(e[k]);
                weights[s].Add(w[k]);
                offsets[s][^1]++;
                work[s]++;
            }
        }

        var result = new List<ShardDispatch>();
        for (int s = 0; s < shards; s++)
        {
            if (tokens[s].Count > 0)
            {
                result.Add(new ShardDispatch(table.Shards[s], [.. tokens[s]], new RoutedPairs([.. offsets[s]], [.. experts[s]], [.. weights[s]])));
            }
        }

        return result;
    }

    private static int Choose(ReadOnlySpan<int> replicas, long[] work, List<int>[] tokens, int token)
    {
        int best = replicas[0];
        for (int r = 1; r < replicas.Length; r++)
        {
            int s = replicas[r];
            if (work[s] < work[best] || (work[s] == work[best] && HasRow(tokens[s], token) && !HasRow(tokens[best], token)))
            {
                best = s;
            }
        }

        return best;

        static bool HasRow(List<int> rows, int token) => rows.Count > 0 && rows[^1] == token;
    }

    /// <summary>Copies the rows of <paramref name="tokens"/> out of <paramref name="source"/> ([T, width]).</summary>
    public static float[] GatherRows(ReadOnlySpan<float> source, ReadOnlySpan<int> tokens, int width)
    {
        var rows = new float[tokens.Length * width];
        for (int i = 0; i < tokens.Length; i++)
        {
            source.Slice(tokens[i] * width, width).CopyTo(rows.AsSpan(i * width, width));
        }

        return rows;
    }

    /// <summary>
    /// Expected rows per shard per token under uniform routing: P(a token has ≥ 1 of its K experts in a shard of
    /// size n out of N) = 1 − C(N−n, K)/C(N, K). Multiply by width × bytes for the bytes a shard receives per token.
    /// For a table without replicas (which replica a pair goes to depends on the load of the moment).
    /// </summary>
    public static double ExpectedRowsPerToken(ExpertRoutingTable table, int topK)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (table.HasReplicas)
        {
            throw new ArgumentException("expected rows are defined for a table without replicas", nameof(table));
        }

        double total = 0;
        foreach (var shard in table.Shards)
        {
            double missAll = 1;
            for (int i = 0; i < topK; i++)
            {
                missAll *= (double)(table.Experts - shard.ExpertCount - i) / (table.Experts - i);
                if (missAll <= 0)
                {
                    missAll = 0;
                    break;
                }
            }

            total += 1 - missAll;
        }

        return total;
    }
}

namespace MoECluster.Model.Dispatch;

/// <summary>
/// The routing table of one MoE layer of one model: the single place that says which shard serves an expert, and
/// which shards exist (what a shard activation may hold). Today each expert has one shard: <c>shards</c>
/// contiguous ranges as equal as possible (the first N mod S shards get one expert more). Immutable; the cluster
/// builds one per (model, layer) and caches it.
/// </summary>
public sealed class ExpertRoutingTable
{
    private readonly int[] _shardOfExpert;
    private readonly Dictionary<string, ExpertShard> _byKey;

    public ExpertRoutingTable(string model, int layer, int experts, int shards)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (shards < 1 || shards > experts)
        {
            throw new ArgumentOutOfRangeException(nameof(shards), shards, $"shard count must be 1..{experts} (the layer's routed experts)");
        }

        var list = new List<ExpertShard>(shards);
        _shardOfExpert = new int[experts];
        int first = 0;
        for (int s = 0; s < shards; s++)
        {
            int count = (experts / shards) + (s < experts % shards ? 1 : 0);
            list.Add(new ExpertShard(model, layer, s, first, count));
            _shardOfExpert.AsSpan(first, count).Fill(s);
            first += count;
        }

        Model = model;
        Layer = layer;
        Shards = list;
        Experts = experts;
        _byKey = list.ToDictionary(s => s.Key, StringComparer.Ordinal);
    }

    public string Model { get; }

    public int Layer { get; }

    /// <summary>The shards of the layer, in index order (the order their partial sums are added in).</summary>
    public IReadOnlyList<ExpertShard> Shards { get; }

    /// <summary>The layer's routed experts.</summary>
    public int Experts { get; }

    /// <summary>The index in <see cref="Shards"/> of the shard that serves <paramref name="expert"/>.</summary>
    public int ShardOf(int expert) => _shardOfExpert[expert];

    /// <summary>The shard that serves <paramref name="expert"/>.</summary>
    public ExpertShard ShardFor(int expert) => Shards[_shardOfExpert[expert]];

    /// <summary>The shard whose grain key is <paramref name="key"/>, when this table names one.</summary>
    public bool TryGetShard(string key, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out ExpertShard? shard) =>
        _byKey.TryGetValue(key, out shard);

    /// <summary>Whether <paramref name="key"/> is the grain key of one of this table's shards.</summary>
    public bool Contains(string key) => _byKey.ContainsKey(key);
}

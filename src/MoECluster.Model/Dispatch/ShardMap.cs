namespace MoECluster.Model.Dispatch;

/// <summary>
/// How the routed experts of one MoE layer are split into shards: <c>shards</c> contiguous ranges as equal as
/// possible (the first N mod S shards get one expert more).
/// </summary>
public sealed class ShardMap
{
    private readonly int[] _shardOfExpert;

    public ShardMap(string model, int layer, int experts, int shards)
    {
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

        Shards = list;
        Experts = experts;
    }

    public IReadOnlyList<ExpertShard> Shards { get; }

    public int Experts { get; }

    public int ShardOf(int expert) => _shardOfExpert[expert];
}

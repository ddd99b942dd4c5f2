using MoECluster.Cluster.Contracts;
using MoECluster.Model.Dispatch;

namespace MoECluster.Cluster.Dispatch;

/// <summary>
/// Expert-shard grain keys: a shard's own key (<c>{model}/{layer}/s{index}/{ranges}</c>, <see cref="ExpertShard.Key"/>)
/// and the key of its alternate (<c>{model}/{layer}/s{index}/{ranges}/alt</c>): the same experts in a second activation
/// that the placement policy puts on another expert silo, which routers call when the shard's own activation is overdue (a hung silo). Both compute
/// the same function of the same rows.
/// </summary>
public static class ShardKeys
{
    public const string AlternateSuffix = "/alt";

    public static string Alternate(string key) => key + AlternateSuffix;

    public static bool IsAlternate(string key) => key.EndsWith(AlternateSuffix, StringComparison.Ordinal);

    /// <summary>The shard a key names (its own or its alternate's), and whether the key is the alternate's.</summary>
    public static ExpertShard Parse(string key, out bool alternate)
    {
        alternate = IsAlternate(key);
        return ExpertShard.ParseKey(ShardKeyOf(key, alternate));
    }

    /// <summary>As <see cref="Parse"/>, false for a key that names no shard.</summary>
    public static bool TryParse(string key, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out ExpertShard? shard) =>
        ExpertShard.TryParseKey(ShardKeyOf(key, IsAlternate(key)), out shard, out _);

    private static string ShardKeyOf(string key, bool alternate) => alternate ? key[..^AlternateSuffix.Length] : key;
}

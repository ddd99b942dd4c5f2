using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// A set of routed experts of one MoE layer of one model: the unit that an expert-shard grain owns and loads.
/// <see cref="Index"/> is its position in the layer's routing table (placement spreads shards by it). The default
/// table's shards are contiguous ranges; a placement plan's may be any sets, and an expert may be in several shards
/// (its replicas, on different silos).
/// </summary>
public sealed record ExpertShard(string Model, int Layer, int Index, ExpertSet Experts)
{
    /// <summary>How a shard key is spelled, for messages that refuse one.</summary>
    public const string KeyForm = "{model}/{layer}/s{index}/{ranges} (ranges end exclusive, comma-separated: e.g. latent/1/s0/0-16 or latent/1/s2/3-4,17-19)";

    /// <summary>The shard of the contiguous experts [<paramref name="firstExpert"/>, <paramref name="firstExpert"/> + <paramref name="expertCount"/>).</summary>
    public ExpertShard(string model, int layer, int index, int firstExpert, int expertCount)
        : this(model, layer, index, ExpertSet.Range(firstExpert, expertCount))
    {
    }

    public int ExpertCount => Experts.Count;

    public bool Holds(int expert) => Experts.Contains(expert);

    /// <summary>
    /// The grain key, naming the shard and what it holds: <c>{model}/{layer}/s{index}/{ranges}</c>, e.g.
    /// <c>latent/1/s0/0-16</c> (experts 0..15) or <c>latent/1/s2/3-4,17-19</c>. No ':' (configuration keys use it as a
    /// separator, and pins are configuration keys). Two tables that give shard i the same experts name the same grain,
    /// so a re-plan reloads only the shards whose experts change.
    /// </summary>
    public string Key => string.Create(CultureInfo.InvariantCulture, $"{Model}/{Layer}/s{Index}/{Experts}");

    /// <summary>Parses a key written by <see cref="Key"/>, index included; any other form is refused with the expected one.</summary>
    public static ExpertShard ParseKey(string key) =>
        TryParseKey(key, out var shard, out string? error) ? shard : throw new FormatException(error);

    /// <summary>Parses a key written by <see cref="Key"/>; on failure, <paramref name="error"/> names the key and the expected form.</summary>
    public static bool TryParseKey(string key, [NotNullWhen(true)] out ExpertShard? shard, [NotNullWhen(false)] out string? error)
    {
        shard = null;
        string shown = key.Length <= 100 ? key : key[..100] + "...";
        string[] parts = key.Split('/');
        if (parts.Length != 4 || parts[0].Length == 0 || parts[0].Contains(':', StringComparison.Ordinal))
        {
            error = $"shard key '{shown}' is not {KeyForm}";
            return false;
        }

        if (!int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
            || !parts[2].StartsWith('s')
            || !int.TryParse(parts[2].AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out int index)
            || !ExpertSet.TryParse(parts[3], out var experts))
        {
            error = $"shard key '{shown}' is not {KeyForm} with ascending, non-touching ranges, each first < end";
            return false;
        }

        shard = new ExpertShard(parts[0], layer, index, experts);
        error = null;
        return true;
    }
}

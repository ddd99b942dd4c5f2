using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// A contiguous range of routed experts [FirstExpert, FirstExpert + ExpertCount) of one MoE layer of one model:
/// the unit that an expert-shard grain owns and loads. <see cref="Index"/> is its position in the layer's shard map.
/// </summary>
public sealed record ExpertShard(string Model, int Layer, int Index, int FirstExpert, int ExpertCount)
{
    /// <summary>How a shard key is spelled, for messages that refuse one.</summary>
    public const string KeyForm = "{model}/{layer}/s{index}/{first}-{end} (e.g. latent/1/s0/0-16)";

    public int EndExpert => FirstExpert + ExpertCount;

    public bool Owns(int expert) => expert >= FirstExpert && expert < EndExpert;

    /// <summary>
    /// The grain key, naming the shard and what it holds: <c>{model}/{layer}/s{index}/{first}-{end}</c>, e.g.
    /// <c>latent/1/s0/0-16</c>. No ':' (configuration keys use it as a separator, and pins are configuration keys).
    /// </summary>
    public string Key => string.Create(CultureInfo.InvariantCulture, $"{Model}/{Layer}/s{Index}/{FirstExpert}-{EndExpert}");

    /// <summary>Parses a key written by <see cref="Key"/>, index included; any other form is refused with the expected one.</summary>
    public static ExpertShard ParseKey(string key) =>
        TryParseKey(key, out var shard, out string? error) ? shard : throw new FormatException(error);

    /// <summary>Parses a key written by <see cref="Key"/>; on failure, <paramref name="error"/> names the key and the expected form.</summary>
    public static bool TryParseKey(string key, [NotNullWhen(true)] out ExpertShard? shard, [NotNullWhen(false)] out string? error)
    {
        shard = null;
        string[] parts = key.Split('/');
        if (parts.Length != 4 || parts[0].Length == 0 || parts[0].Contains(':', StringComparison.Ordinal))
        {
            error = $"shard key '{key}' is not {KeyForm}";
            return false;
        }

        string[] range = parts[3].Split('-');
        if (range.Length != 2
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
            || !parts[2].StartsWith('s')
            || !int.TryParse(parts[2].AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out int index)
            || !int.TryParse(range[0], NumberStyles.None, CultureInfo.InvariantCulture, out int first)
            || !int.TryParse(range[1], NumberStyles.None, CultureInfo.InvariantCulture, out int end)
            || end <= first)
        {
            error = $"shard key '{key}' is not {KeyForm} with first < end";
            return false;
        }

        shard = new ExpertShard(parts[0], layer, index, first, end - first);
        error = null;
        return true;
    }
}

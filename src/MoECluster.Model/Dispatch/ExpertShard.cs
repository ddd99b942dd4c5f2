using System.Globalization;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// A contiguous range of routed experts [FirstExpert, FirstExpert + ExpertCount) of one MoE layer of one model:
/// the unit that an expert-shard grain owns and loads.
/// </summary>
public sealed record ExpertShard(string Model, int Layer, int Index, int FirstExpert, int ExpertCount)
{
    public int EndExpert => FirstExpert + ExpertCount;

    public bool Owns(int expert) => expert >= FirstExpert && expert < EndExpert;

    /// <summary>The grain key, naming what the shard holds: <c>model/layer/first-end</c>, e.g. <c>latent/1/0-16</c>.</summary>
    public string Key => string.Create(CultureInfo.InvariantCulture, $"{Model}/{Layer}/{FirstExpert}-{EndExpert}");

    /// <summary>Parses a key written by <see cref="Key"/>; the index is not part of the key and comes back as -1.</summary>
    public static ExpertShard ParseKey(string key)
    {
        string[] parts = key.Split('/');
        if (parts.Length != 3 || parts[0].Length == 0)
        {
            throw new FormatException($"shard key '{key}' is not model/layer/first-end");
        }

        string[] range = parts[2].Split('-');
        if (range.Length != 2
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int layer)
            || !int.TryParse(range[0], NumberStyles.None, CultureInfo.InvariantCulture, out int first)
            || !int.TryParse(range[1], NumberStyles.None, CultureInfo.InvariantCulture, out int end)
            || end <= first)
        {
            throw new FormatException($"shard key '{key}' is not model/layer/first-end with first < end");
        }

        return new ExpertShard(parts[0], layer, -1, first, end - first);
    }
}

using System.Collections;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// A non-empty set of routed expert ids of one layer, ascending and immutable, with value equality: what a shard
/// holds. Written (<see cref="ToString"/>) as its maximal ranges, end exclusive, joined by commas — <c>0-16</c> for
/// experts 0..15, <c>3-4,17-19</c> for {3, 17, 18} — one text per set, so a set has one shard key.
/// </summary>
public sealed class ExpertSet : IReadOnlyList<int>, IEquatable<ExpertSet>
{
    /// <summary>The longest text <see cref="TryParse"/> reads (a set of 65,536 scattered ids is far shorter than a key needs to be).</summary>
    public const int MaxTextLength = 16 * 1024;

    private readonly int[] _ids;

    private ExpertSet(int[] ids)
    {
        _ids = ids;
    }

    public int Count => _ids.Length;

    public int this[int index] => _ids[index];

    /// <summary>The smallest id.</summary>
    public int First => _ids[0];

    /// <summary>The largest id + 1.</summary>
    public int End => _ids[^1] + 1;

    /// <summary>Whether the set is one run of consecutive ids.</summary>
    public bool IsContiguous => End - First == _ids.Length;

    public ReadOnlySpan<int> AsSpan() => _ids;

    /// <summary>Experts [<paramref name="first"/>, <paramref name="first"/> + <paramref name="count"/>).</summary>
    public static ExpertSet Range(int first, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(first);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        return new ExpertSet([.. Enumerable.Range(first, count)]);
    }

    /// <summary>The set of <paramref name="ids"/> (any order); refuses an empty set, a negative id and a duplicate.</summary>
    public static ExpertSet Of(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        int[] sorted = [.. ids.Order()];
        if (sorted.Length == 0)
        {
            throw new ArgumentException("an expert set is never empty", nameof(ids));
        }

        if (sorted[0] < 0)
        {
            throw new ArgumentException($"expert ids are >= 0, got {sorted[0]}", nameof(ids));
        }

        for (int i = 1; i < sorted.Length; i++)
        {
            if (sorted[i] == sorted[i - 1])
            {
                throw new ArgumentException($"expert {sorted[i]} is twice in the set", nameof(ids));
            }
        }

        return new ExpertSet(sorted);
    }

    public bool Contains(int expert) => Array.BinarySearch(_ids, expert) >= 0;

    /// <summary>Parses what <see cref="ToString"/> writes, and only that (maximal ranges, ascending): one set, one text.</summary>
    public static bool TryParse(string text, [NotNullWhen(true)] out ExpertSet? set)
    {
        set = null;
        if (string.IsNullOrEmpty(text) || text.Length > MaxTextLength)
        {
            return false;
        }

        var ids = new List<int>();
        int previousEnd = -2;
        foreach (string part in text.Split(','))
        {
            string[] range = part.Split('-');
            if (range.Length != 2
                || !int.TryParse(range[0], NumberStyles.None, CultureInfo.InvariantCulture, out int first)
                || !int.TryParse(range[1], NumberStyles.None, CultureInfo.InvariantCulture, out int end)
                || end <= first
                || first <= previousEnd // overlapping, unsorted, or touching the previous range (not maximal)
                || end - first > ushort.MaxValue + 1
                || ids.Count + (end - first) > ushort.MaxValue + 1)
            {
                return false;
            }

            for (int e = first; e < end; e++)
            {
                ids.Add(e);
            }

            previousEnd = end;
        }

        set = new ExpertSet([.. ids]);
        return true;
    }

    public override string ToString()
    {
        var text = new StringBuilder();
        for (int i = 0; i < _ids.Length;)
        {
            int j = i;
            while (j + 1 < _ids.Length && _ids[j + 1] == _ids[j] + 1)
            {
                j++;
            }

            if (text.Length > 0)
            {
                text.Append(',');
            }

            text.Append(CultureInfo.InvariantCulture, $"{_ids[i]}-{_ids[j] + 1}");
            i = j + 1;
        }

        return text.ToString();
    }

    public bool Equals(ExpertSet? other) => other is not null && _ids.AsSpan().SequenceEqual(other._ids);

    public override bool Equals(object? obj) => Equals(obj as ExpertSet);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (int e in _ids)
        {
            hash.Add(e);
        }

        return hash.ToHashCode();
    }

    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)_ids).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

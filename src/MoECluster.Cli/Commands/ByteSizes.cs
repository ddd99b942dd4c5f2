using System.Globalization;

namespace MoECluster.Cli.Commands;

/// <summary>A size in bytes as a flag gives it: a whole number with an optional binary suffix (B, KiB, MiB, GiB, TiB).</summary>
internal static class ByteSizes
{
    private static readonly (string Suffix, long Factor)[] Suffixes =
        [("TiB", 1L << 40), ("GiB", 1L << 30), ("MiB", 1L << 20), ("KiB", 1L << 10), ("B", 1)];

    /// <exception cref="UsageException">The text is not such a size (the message names <paramref name="option"/>).</exception>
    public static long Parse(string text, string option)
    {
        ArgumentNullException.ThrowIfNull(text);
        string trimmed = text.Trim();
        long factor = 1;
        foreach (var (suffix, f) in Suffixes)
        {
            if (trimmed.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                trimmed = trimmed[..^suffix.Length].TrimEnd();
                factor = f;
                break;
            }
        }

        if (!long.TryParse(trimmed, NumberStyles.None, CultureInfo.InvariantCulture, out long value) || value > long.MaxValue / factor)
        {
            throw new UsageException($"{option} '{text}' is not a size: give whole bytes, or a number with KiB, MiB, GiB or TiB (e.g. 512MiB)");
        }

        return value * factor;
    }
}

using System.Diagnostics;
using System.Globalization;
using MoECluster.Model.Presets;

namespace MoECluster.Cli.LocalCluster;

/// <summary>Writes the models of a served pair that are missing (or differ), and reuses the ones already there.</summary>
internal static class ModelPreparation
{
    /// <summary>Writes what is missing; with <paramref name="progress"/>, a line per 10% of each model of 64 MiB or more.</summary>
    public static List<(string Id, string Path)> Prepare(IReadOnlyList<PairMember> members, ulong seed, TextWriter output, TextWriter? progress = null)
    {
        var result = new List<(string, string)>();
        foreach (var member in members)
        {
            if (SyntheticCheckpoint.IsSame(member.Directory, member.Config, seed, member.Skew))
            {
                output.WriteLine($"{member.Id}: {member.Directory} already holds {member.Preset} ({member.Config.NRoutedExperts} experts, {member.Config.MoeLayers.Count} MoE layer(s)); reused");
            }
            else
            {
                output.WriteLine($"generating {member.Preset} ({member.Config.NRoutedExperts} experts, {member.Config.MoeLayers.Count} MoE layer(s){(member.Skew is null ? string.Empty : $", gate skew {member.Skew}")}) in {member.Directory} ...");
                var clock = Stopwatch.StartNew();
                long lastTenth = -1;
                SyntheticCheckpoint.Write(member.Directory, member.Config, seed, progress is null ? null : new Reporter(v =>
                {
                    long tenth = v.Done * 10 / Math.Max(1, v.Total);
                    if (v.Total >= 64L << 20 && tenth != lastTenth)
                    {
                        lastTenth = tenth;
                        progress.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {tenth * 10,3}% of {v.Total / (1024.0 * 1024.0):F0} MiB"));
                    }
                }), member.Skew);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  done in {clock.Elapsed.TotalSeconds:F1} s"));
            }

            result.Add((member.Id, member.Directory));
        }

        return result;
    }

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class Reporter(Action<(long Done, long Total)> report) : IProgress<(long Done, long Total)>
    {
        public void Report((long Done, long Total) value) => report(value);
    }
}

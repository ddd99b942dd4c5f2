using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Dispatch;

namespace MoECluster.Cluster.Placement;

/// <summary>
/// Checks MoECluster:Pins when the silo starts: every key must be a shard key (<see cref="ExpertShard.KeyForm"/>) and
/// every value a silo name. A pin in the old form (<c>latent/1/0-16</c>) would otherwise pin nothing, silently.
/// </summary>
internal sealed class PinsValidator : IValidateOptions<MoeClusterOptions>
{
    public ValidateOptionsResult Validate(string? name, MoeClusterOptions options)
    {
        List<string> failures = [];
        foreach (var (key, silo) in options.Pins.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            string setting = $"{MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Pins)}:{key}";
            if (!ExpertShard.TryParseKey(key, out _, out _))
            {
                failures.Add($"{setting}: '{key}' is not a shard key; expected {ExpertShard.KeyForm}");
            }
            else if (string.IsNullOrWhiteSpace(silo))
            {
                failures.Add($"{setting}: the pin names no silo; expected a silo name (Orleans:Name of an expert silo)");
            }
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

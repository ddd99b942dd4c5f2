using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Gateway.Health;

/// <summary>
/// Readiness of any silo: every configured model opens here (its directory exists, config.json and the checkpoint
/// header read). A silo that cannot open a model cannot route it or hold its shards, whatever membership says; the
/// <c>/health</c> body names the model and why. A model that appears later is picked up on the next check.
/// </summary>
public sealed class ModelsHealthCheck(ModelCatalog catalog, IOptions<MoeClusterOptions> options) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var failures = new Dictionary<string, object>();
        foreach (string id in options.Value.Models.Keys)
        {
            try
            {
                _ = catalog.Get(id);
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException
                or MoECluster.Model.Configuration.ModelConfigException or MoECluster.Model.Checkpoints.SafetensorsFormatException)
            {
                failures[id] = e.Message;
            }
        }

        var data = new Dictionary<string, object> { ["models"] = options.Value.Models.Keys.ToArray() };
        if (failures.Count == 0)
        {
            return Task.FromResult(HealthCheckResult.Healthy("every model opens", data));
        }

        data["unavailable_models"] = failures;
        return Task.FromResult(new HealthCheckResult(context.Registration.FailureStatus,
            $"cannot open model(s) {string.Join(", ", failures.Keys)}: {string.Join("; ", failures.Select(f => $"{f.Key}: {f.Value}"))}", data: data));
    }
}

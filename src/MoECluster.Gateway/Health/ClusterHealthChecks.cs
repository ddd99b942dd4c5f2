using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;
using Orleans.Runtime;

namespace MoECluster.Gateway.Health;

/// <summary>
/// Readiness of a front-end silo: it serves once at least one expert silo is active (shards can only live there).
/// While fewer expert silos are active than <see cref="MoeClusterOptions.ExpectedExpertSilos"/> (when configured), it
/// is <em>degraded</em>: <c>/health</c> answers 200 — every request is still answered, by the shards re-placed on the
/// silos that remain, so a readiness probe must not take the gateway out of service — with a body whose status says
/// "degraded" and how many of how many serve. Its data (silos, expert_silos, expected_expert_silos, models) appears in
/// the <c>/health</c> body.
/// </summary>
public sealed class ExpertSilosHealthCheck(ClusterStatistics statistics, IOptions<MoeClusterOptions> options) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var silos = await statistics.CollectAsync().WaitAsync(cancellationToken);
        int experts = silos.Count(s => s.Role == SiloRoles.Expert);
        int expected = options.Value.ExpectedExpertSilos;
        var data = new Dictionary<string, object>
        {
            ["silos"] = silos.Count,
            ["expert_silos"] = experts,
            ["models"] = options.Value.Models.Keys.ToArray(),
        };
        if (expected > 0)
        {
            data["expected_expert_silos"] = expected;
        }

        if (experts == 0)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, "waiting for expert silos", data: data);
        }

        return experts < expected
            ? HealthCheckResult.Degraded($"degraded: {experts} of {expected} expert silos are active", data: data)
            : HealthCheckResult.Healthy("expert silos are active", data);
    }
}

/// <summary>Readiness of any silo: this silo is Active in the cluster's membership table (body: its name, role, address).</summary>
public sealed class SiloMembershipHealthCheck(ILocalSiloDetails silo, IClusterMembershipService membership, IOptions<SiloIdentity> identity) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var snapshot = membership.CurrentSnapshot;
        var status = snapshot.GetSiloStatus(silo.SiloAddress);
        var data = new Dictionary<string, object>
        {
            ["silo"] = identity.Value.Name,
            ["role"] = identity.Value.Role,
            ["address"] = silo.SiloAddress.ToString(),
            ["silo_status"] = status.ToString(),
            ["active_silos"] = snapshot.Members.Values.Count(m => m.Status == SiloStatus.Active),
        };
        return Task.FromResult(status == SiloStatus.Active
            ? HealthCheckResult.Healthy("silo is active", data)
            : new HealthCheckResult(context.Registration.FailureStatus, $"silo is {status}", data: data));
    }
}

public static class SiloHealthCheckExtensions
{
    /// <summary>Registers the readiness checks every silo serves at <c>/health</c>: this silo is Active, and it can open every configured model.</summary>
    public static IServiceCollection AddSiloHealthChecks(this IServiceCollection services)
    {
        services.AddHealthChecks().AddCheck<SiloMembershipHealthCheck>("silo").AddCheck<ModelsHealthCheck>("models");
        return services;
    }
}

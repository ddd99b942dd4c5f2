using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using MoECluster.Gateway.Live;

namespace MoECluster.Gateway.Security;

/// <summary>
/// The API-key policy of the gateway on an expert silo's own HTTP port (<c>/alive</c>, <c>/health</c>, <c>/metrics</c>):
/// with keys configured on the silo (MoECluster:Gateway:ApiKeys or ApiKeysFile), every path but the health probes
/// needs one, exactly as on a front-end (<see cref="GatewayRequestGuard"/>); without keys everything stays open, as the
/// health probes always are. Nothing else changes: an expert silo serves no forward endpoint.
/// </summary>
public static class ExpertSiloHttpSecurity
{
    /// <summary>The guard's services: the API keys (a bad key file fails the start) and the request statistics it counts into.</summary>
    public static IServiceCollection AddMoeExpertSiloHttpSecurity(this IServiceCollection services)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<GatewayRequestStatistics>();
        services.TryAddSingleton<GatewayApiKeys>();
        return services;
    }

    /// <summary>Puts the guard ahead of every endpoint of <paramref name="app"/>.</summary>
    public static WebApplication UseMoeExpertSiloHttpSecurity(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);

        // Resolved now so that a bad key file fails the start, not the first scrape.
        _ = app.Services.GetRequiredService<GatewayApiKeys>();
        app.UseMiddleware<GatewayRequestGuard>();
        return app;
    }
}

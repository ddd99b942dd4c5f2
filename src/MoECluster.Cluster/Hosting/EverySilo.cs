using MoECluster.Cluster.Dispatch;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// Asks every active silo at once through a grain pinned to it (key = the silo's parsable address, as
/// <see cref="Placement.SiloPinnedPlacement"/> places it): the cluster-wide reads of <c>/stats</c> and the placement's
/// calls to every silo. A silo that does not answer in time — dead but not yet declared, or just joined and not yet in
/// this silo's view of the membership (its pinned grain cannot be placed yet) — counts as unanswered; the next ask
/// includes it.
/// </summary>
public static class EverySilo
{
    /// <summary>
    /// <paramref name="ask"/> for every active silo, in parallel; a silo that does not answer within
    /// <paramref name="timeout"/> or cannot be reached gives <paramref name="unanswered"/> (and is passed to
    /// <paramref name="missed"/>).
    /// </summary>
    public static async Task<T[]> AskAsync<T>(
        IGrainFactory grains, Func<string, Task<T>> ask, T unanswered, TimeSpan timeout,
        Action<SiloAddress, Exception>? missed = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ask);
        var silos = await ActiveAsync(grains);
        return await Task.WhenAll(silos.Select(async s =>
        {
            try
            {
                return await ask(s.ToParsableString()).WaitAsync(timeout, cancellationToken);
            }
            catch (Exception e) when (e is TimeoutException or OrleansException || ShardCallRetry.IsSiloLoss(e))
            {
                missed?.Invoke(s, e);
                return unanswered;
            }
        }));
    }

    private static async Task<IEnumerable<SiloAddress>> ActiveAsync(IGrainFactory grains)
    {
        ArgumentNullException.ThrowIfNull(grains);
        return (await grains.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true)).Keys;
    }
}

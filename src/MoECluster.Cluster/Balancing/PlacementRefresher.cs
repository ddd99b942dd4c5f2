using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Telemetry;

namespace MoECluster.Cluster.Balancing;

/// <summary>
/// Keeps this silo's routing tables on each model's placement: every MoECluster:Balancing:RefreshSeconds, while the silo
/// is active, it reads each served model's <see cref="IExpertPlacementGrain"/> and applies what changed (a silo that
/// missed a re-plan's call, joined later, or outlived the placement grain's silo catches up here). On front-end silos
/// with MoECluster:Balancing:PeriodSeconds set it also asks for a re-plan that often (a balanced layer is left alone).
/// </summary>
public sealed partial class PlacementRefresher(
    IOptions<MoeClusterOptions> options,
    IOptions<SiloIdentity> identity,
    RoutingTables tables,
    IGrainFactory grains,
    ILogger<PlacementRefresher> logger) : ILifecycleParticipant<ISiloLifecycle>, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private Task _loop = Task.CompletedTask;

    public void Participate(ISiloLifecycle lifecycle)
    {
        ArgumentNullException.ThrowIfNull(lifecycle);
        lifecycle.Subscribe(nameof(PlacementRefresher), ServiceLifecycleStage.Active, Start, Stop);
    }

    public void Dispose() => _stopping.Dispose();

    private Task Start(CancellationToken cancellationToken)
    {
        _loop = Task.Run(() => RunAsync(_stopping.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    private async Task Stop(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        try
        {
            await _loop.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task RunAsync(CancellationToken stopping)
    {
        var balancing = options.Value.Balancing;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(balancing.RefreshSeconds));
        bool replans = balancing.PeriodSeconds > 0 && identity.Value.Role == SiloRoles.Frontend;
        long lastPlan = System.Diagnostics.Stopwatch.GetTimestamp();
        while (await timer.WaitForNextTickAsync(stopping))
        {
            // Housekeeping, not a request: its grain calls run under a parent that is not sampled, so they make no trace
            // (one a second per silo would flood the trace view) and take nothing from the trace sampler's budget.
            using var untraced = Telemetry.UnsampledTracePropagation.Untraced();
            bool replan = replans && System.Diagnostics.Stopwatch.GetElapsedTime(lastPlan).TotalSeconds >= balancing.PeriodSeconds;
            if (replan)
            {
                lastPlan = System.Diagnostics.Stopwatch.GetTimestamp();
            }

            foreach (string model in options.Value.Models.Keys)
            {
                try
                {
                    var placement = grains.GetGrain<IExpertPlacementGrain>(model);
                    if (replan)
                    {
                        var report = await placement.Rebalance(new RebalanceRequest()).WaitAsync(stopping);
                        LogPeriodic(logger, model, report.Epoch, report.Changed);
                    }

                    var now = await placement.Get().WaitAsync(stopping);
                    if (tables.Apply(now))
                    {
                        LogApplied(logger, model, now.Epoch);
                    }
                }
                catch (Exception e) when (e is not OperationCanceledException || !stopping.IsCancellationRequested)
                {
                    // The placement grain's silo just died, or the cluster is starting: the next period tries again.
                    LogMissed(logger, model, e.Message);
                }
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Routing tables of {Model} now at placement epoch {Epoch}")]
    private static partial void LogApplied(ILogger logger, string model, long epoch);

    [LoggerMessage(Level = LogLevel.Information, Message = "Periodic re-plan of {Model}: epoch {Epoch}, changed {Changed}")]
    private static partial void LogPeriodic(ILogger logger, string model, long epoch, bool changed);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Placement of {Model} not read this period: {Reason}")]
    private static partial void LogMissed(ILogger logger, string model, string reason);
}

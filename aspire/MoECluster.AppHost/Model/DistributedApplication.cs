using System.Runtime.InteropServices;
using MoECluster.AppHost.Orchestration;

namespace MoECluster.AppHost.Model;

/// <summary>
/// A built application: <see cref="RunAsync"/> checks that it can start (programs installed, fixed ports free), starts
/// it, and stops every process on Ctrl+C (SIGINT), SIGTERM or SIGHUP; a second signal kills what is still running.
/// </summary>
public sealed class DistributedApplication
{
    internal DistributedApplication(DistributedApplicationModel model) => Model = model;

    public DistributedApplicationModel Model { get; }

    public static DistributedApplicationBuilder CreateBuilder(string[] args) => new(new DistributedApplicationOptions { Args = args });

    public static DistributedApplicationBuilder CreateBuilder(DistributedApplicationOptions options) => new(options);

    /// <summary>Runs until a stop signal (or <paramref name="cancellationToken"/>); returns the process exit code.</summary>
    public Task<int> RunAsync(CancellationToken cancellationToken = default) =>
        RunAsync(Console.Out, Console.Error, LauncherConsole.TerminalSupportsColor(), cancellationToken);

    internal async Task<int> RunAsync(TextWriter output, TextWriter error, bool color, CancellationToken cancellationToken)
    {
        var console = new LauncherConsole(output, error, color);
        var problems = Preflight.Check(Model);
        if (problems.Count > 0)
        {
            foreach (string problem in problems)
            {
                console.Error($"error: {problem}");
            }

            return 1;
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var force = new CancellationTokenSource();
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true;
            if (!stop.IsCancellationRequested)
            {
                console.Info($"{context.Signal} received: stopping every process (again to kill them at once)");
                stop.Cancel();
            }
            else
            {
                force.Cancel();
            }
        }

        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);
        using var orchestrator = new Orchestrator(Model, console);
        return await orchestrator.RunAsync(stop.Token, force.Token);
    }
}

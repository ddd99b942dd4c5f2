using Microsoft.Extensions.DependencyInjection;

namespace MoECluster.AppHost.Resources;

/// <summary>
/// The front-end's "Run a 30 s load" command on the dashboard: starts the load resource (its console log is the report),
/// unless a run is going already. Enabled while the front-end runs.
/// </summary>
public static class LoadRunCommand
{
    public const string Name = "run-load";

    public static IResourceBuilder<T> WithLoadRunCommand<T>(this IResourceBuilder<T> frontend, string load)
        where T : IResource
    {
        ArgumentNullException.ThrowIfNull(frontend);
        return frontend.WithCommand(Name, "Run a 30 s load", async context =>
        {
            var notifications = context.Services.GetRequiredService<ResourceNotificationService>();
            if (notifications.TryGetCurrentState(load, out var current) && current.Snapshot.State?.Text is { } state
                && (state == KnownResourceStates.Running || state == KnownResourceStates.Starting))
            {
                return CommandResults.Failure($"{load} is running already: its console log is the report");
            }

            var commands = context.Services.GetRequiredService<ResourceCommandService>();
            return await commands.ExecuteCommandAsync(load, KnownResourceCommands.StartCommand, context.CancellationToken);
        }, new CommandOptions
        {
            Description = $"Closed-loop load against the gateway for 30 s ({load}; its console log is the report)",
            IconName = "Play",
            IsHighlighted = true,
            UpdateState = context => context.ResourceSnapshot.State?.Text == KnownResourceStates.Running ? ResourceCommandState.Enabled : ResourceCommandState.Disabled,
        });
    }
}

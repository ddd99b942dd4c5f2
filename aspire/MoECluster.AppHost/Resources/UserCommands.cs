namespace MoECluster.AppHost.Resources;

/// <summary>Runs an action before one of a resource's dashboard commands (Stop, Start, Restart), keeping the command as it is.</summary>
public static class UserCommands
{
    /// <summary>Replaces the command <paramref name="name"/> of <paramref name="resource"/> (if it has one) by itself preceded by <paramref name="before"/>(resource name).</summary>
    public static bool Wrap(IResource resource, string name, Action<string> before)
    {
        ArgumentNullException.ThrowIfNull(resource);
        ArgumentNullException.ThrowIfNull(before);
        var command = resource.Annotations.OfType<ResourceCommandAnnotation>().FirstOrDefault(c => c.Name == name);
        if (command is null)
        {
            return false;
        }

        resource.Annotations.Remove(command);
        resource.Annotations.Add(new ResourceCommandAnnotation(
            command.Name,
            command.DisplayName,
            command.UpdateState,
            context =>
            {
                before(resource.Name);
                return command.ExecuteCommand(context);
            },
            command.DisplayDescription,
            command.Arguments,
            command.ConfirmationMessage,
            command.IconName,
            command.IconVariant,
            command.IsHighlighted,
            command.Visibility,
            command.ValidateArguments));
        return true;
    }
}

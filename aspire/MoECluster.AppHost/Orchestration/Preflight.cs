using MoECluster.AppHost.Model;

namespace MoECluster.AppHost.Orchestration;

/// <summary>What is checked before anything starts: every program can be found, every fixed port is free.</summary>
internal static class Preflight
{
    /// <summary>The problems found, one sentence each; empty when the application can start.</summary>
    public static IReadOnlyList<string> Check(DistributedApplicationModel model)
    {
        var problems = new List<string>();
        foreach (var resource in model.Resources.OfType<IProcessResource>())
        {
            var command = resource.Command;
            if (ExecutableLocator.Find(command.FileName) is null)
            {
                problems.Add($"resource '{resource.Name}': {command.FileName} is not installed (not found on PATH){(command.InstallHint is null ? "" : $"; {command.InstallHint}")}");
            }

            if (resource is ProjectResource project && !File.Exists(project.Project.AssemblyPath))
            {
                problems.Add($"resource '{resource.Name}': {project.Project.AssemblyPath} does not exist; {command.InstallHint}");
            }
        }

        foreach (var instance in model.Instances)
        {
            problems.AddRange(BusyPorts(instance));
        }

        return problems;
    }

    /// <summary>The fixed ports of <paramref name="instance"/> that something else listens on now (checked again right before it starts).</summary>
    public static IEnumerable<string> BusyPorts(ResourceInstance instance) =>
        instance.Endpoints.Values
            .Where(e => IsFixed(instance, e.Name) && !PortAllocator.IsFree(e.Port))
            .Select(e => $"{instance.Name}: port {e.Port} ({e.Name}) is already in use on 127.0.0.1");

    private static bool IsFixed(ResourceInstance instance, string endpoint) =>
        instance.Resource.Annotations.OfType<EndpointAnnotation>().Any(e => e.Name == endpoint && e.Port is not null);
}

/// <summary>Finds programs the way a shell does: a path as given, a bare name on PATH.</summary>
public static class ExecutableLocator
{
    public static string? Find(string command)
    {
        if (command.Contains('/', StringComparison.Ordinal))
        {
            return File.Exists(command) ? Path.GetFullPath(command) : null;
        }

        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, command);
            if (File.Exists(candidate) && (OperatingSystem.IsWindows() || (File.GetUnixFileMode(candidate) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0))
            {
                return candidate;
            }
        }

        return null;
    }
}

namespace MoECluster.AppHost.Model;

/// <summary>
/// Something the application is made of: a program (possibly several replicas of it), a one-shot task, or a service
/// description with no process of its own (an Orleans cluster). What it needs is said by its annotations.
/// </summary>
public interface IResource
{
    string Name { get; }

    IList<IResourceAnnotation> Annotations { get; }
}

/// <summary>A resource that can wait for others before it starts (processes and tasks).</summary>
public interface IResourceWithWaitSupport : IResource;

/// <summary>A resource that runs as an operating-system process per replica.</summary>
public interface IProcessResource : IResourceWithWaitSupport
{
    /// <summary>The program to run and the arguments that come before the resource's own.</summary>
    ProcessCommand Command { get; }
}

/// <summary>A resource that others connect to with a connection string (injected as <c>ConnectionStrings__&lt;name&gt;</c>).</summary>
public interface IResourceWithConnectionString : IResource
{
    string GetConnectionString(DistributedApplicationModel model);
}

/// <summary>How a process resource starts: a program, leading arguments, and what to tell the user when the program is missing.</summary>
public sealed record ProcessCommand(string FileName, IReadOnlyList<string> LeadingArguments, string? InstallHint = null);

/// <summary>Describes a .NET project the launcher references and runs (Aspire generates these as <c>Projects.*</c> types).</summary>
public interface IProjectMetadata
{
    /// <summary>The project's main assembly, built beside the launcher.</summary>
    string AssemblyPath { get; }

    /// <summary>The environment variable through which the program learns its parent's process id (it stops when the parent dies); null if it has none.</summary>
    string? ParentProcessIdVariable { get; }
}

/// <summary>A .NET project run as <c>dotnet &lt;assembly&gt; args…</c>; it gets the OpenTelemetry, URL and environment-name variables.</summary>
public sealed class ProjectResource(string name, IProjectMetadata project) : IProcessResource
{
    public string Name { get; } = name;

    public IList<IResourceAnnotation> Annotations { get; } = [];

    public IProjectMetadata Project { get; } = project;

    public ProcessCommand Command => new(DotnetHost.Path, [Project.AssemblyPath], $"build the launcher (dotnet build aspire/MoECluster.AppHost): {Path.GetFileName(Project.AssemblyPath)} is built beside it");
}

/// <summary>Any program found on PATH (or by absolute path).</summary>
public sealed class ExecutableResource(string name, string command, string? installHint = null) : IProcessResource
{
    public string Name { get; } = name;

    public IList<IResourceAnnotation> Annotations { get; } = [];

    public ProcessCommand Command { get; } = new(command, [], installHint);
}

/// <summary>A one-shot step that runs inside the launcher (no process); its result is a line for the summary.</summary>
public sealed class TaskResource(string name, Func<TaskContext, CancellationToken, Task<string?>> run) : IResourceWithWaitSupport
{
    public string Name { get; } = name;

    public IList<IResourceAnnotation> Annotations { get; } = [];

    public Func<TaskContext, CancellationToken, Task<string?>> Run { get; } = run;
}

/// <summary>What a <see cref="TaskResource"/> may use: the application model, a progress line writer, the start-up time limit.</summary>
public sealed class TaskContext(DistributedApplicationModel model, Action<string> log, TimeSpan startupTimeout)
{
    public DistributedApplicationModel Model { get; } = model;

    public Action<string> Log { get; } = log;

    public TimeSpan StartupTimeout { get; } = startupTimeout;
}

/// <summary>Finds the <c>dotnet</c> host that runs project resources.</summary>
public static class DotnetHost
{
    public static string Path { get; } = Resolve();

    private static string Resolve()
    {
        static bool IsDotnet(string? path) => path is not null && File.Exists(path)
            && string.Equals(System.IO.Path.GetFileNameWithoutExtension(path), "dotnet", StringComparison.OrdinalIgnoreCase);

        if (IsDotnet(Environment.ProcessPath))
        {
            return Environment.ProcessPath!;
        }

        foreach (string? candidate in new[]
        {
            Environment.GetEnvironmentVariable("DOTNET_HOST_PATH"),
            Environment.GetEnvironmentVariable("DOTNET_ROOT") is string root ? System.IO.Path.Combine(root, "dotnet") : null,

            // <root>/shared/Microsoft.NETCore.App/<version>/System.Private.CoreLib.dll → <root>/dotnet
            System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(typeof(object).Assembly.Location) ?? ".", "..", "..", "..", "dotnet")),
        })
        {
            if (IsDotnet(candidate))
            {
                return candidate!;
            }
        }

        return "dotnet";
    }
}

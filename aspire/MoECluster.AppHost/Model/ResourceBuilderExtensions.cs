using System.Globalization;

namespace MoECluster.AppHost.Model;

/// <summary>Adding resources to a builder: projects, executables, in-process tasks.</summary>
public static class DistributedApplicationBuilderExtensions
{
    /// <summary>A .NET project the launcher references (its output is built beside the launcher), run as <c>dotnet &lt;assembly&gt;</c>.</summary>
    public static IResourceBuilder<ProjectResource> AddProject<TProject>(this DistributedApplicationBuilder builder, string name)
        where TProject : IProjectMetadata, new() => builder.AddResource(new ProjectResource(name, new TProject()));

    /// <summary>A program found on PATH; <paramref name="installHint"/> is shown when it is missing.</summary>
    public static IResourceBuilder<ExecutableResource> AddExecutable(this DistributedApplicationBuilder builder, string name, string command, string? installHint = null) =>
        builder.AddResource(new ExecutableResource(name, command, installHint));

    /// <summary>A one-shot step run inside the launcher once its waits are satisfied; it returns a line for the summary.</summary>
    public static IResourceBuilder<TaskResource> AddTask(this DistributedApplicationBuilder builder, string name, Func<TaskContext, CancellationToken, Task<string?>> run) =>
        builder.AddResource(new TaskResource(name, run));
}

/// <summary>The <c>With…</c> and <c>WaitFor…</c> calls that describe a resource.</summary>
public static class ResourceBuilderExtensions
{
    public static IResourceBuilder<T> WithArgs<T>(this IResourceBuilder<T> builder, params string[] args)
        where T : IProcessResource
    {
        string[] copy = [.. args];
        return builder.WithAnnotation(new CommandLineArgsAnnotation(_ => copy));
    }

    /// <summary>Arguments computed per replica (they may use its name and endpoints).</summary>
    public static IResourceBuilder<T> WithArgs<T>(this IResourceBuilder<T> builder, Func<ResourceInstance, IEnumerable<string>> args)
        where T : IProcessResource => builder.WithAnnotation(new CommandLineArgsAnnotation(args));

    public static IResourceBuilder<T> WithEnvironment<T>(this IResourceBuilder<T> builder, string name, string value)
        where T : IProcessResource => builder.WithAnnotation(new EnvironmentAnnotation(c => c.Variables[name] = value));

    /// <summary>Variables computed per replica (they may use its name, its endpoints and other resources' endpoints).</summary>
    public static IResourceBuilder<T> WithEnvironment<T>(this IResourceBuilder<T> builder, Action<EnvironmentContext> callback)
        where T : IProcessResource => builder.WithAnnotation(new EnvironmentAnnotation(callback));

    /// <summary>Runs <paramref name="replicas"/> copies named <c>&lt;name&gt;-1</c> … <c>&lt;name&gt;-n</c>, each with its own ports.</summary>
    public static IResourceBuilder<T> WithReplicas<T>(this IResourceBuilder<T> builder, int replicas)
        where T : IProcessResource
    {
        if (replicas < 1)
        {
            throw new DistributedApplicationException($"WithReplicas({replicas}) on '{builder.Resource.Name}': at least 1 replica");
        }

        return builder.WithAnnotation(new ReplicaAnnotation(replicas));
    }

    /// <summary>
    /// An endpoint on 127.0.0.1. With <paramref name="port"/>, replica i gets port + i - 1; without, each replica gets a
    /// free port. Naming an endpoint that exists replaces it.
    /// </summary>
    public static IResourceBuilder<T> WithEndpoint<T>(this IResourceBuilder<T> builder, string name, int? port = null, string scheme = "tcp")
        where T : IProcessResource
    {
        foreach (var existing in builder.Resource.Annotations.OfType<EndpointAnnotation>().Where(e => e.Name == name).ToList())
        {
            builder.Resource.Annotations.Remove(existing);
        }

        return builder.WithAnnotation(new EndpointAnnotation(name, scheme, port));
    }

    /// <summary>An HTTP endpoint (a project hears of it through <c>ASPNETCORE_URLS</c>).</summary>
    public static IResourceBuilder<T> WithHttpEndpoint<T>(this IResourceBuilder<T> builder, int? port = null, string name = "http")
        where T : IProcessResource => builder.WithEndpoint(name, port, "http");

    /// <summary>Each replica is healthy once <c>GET &lt;endpoint&gt;&lt;path&gt;</c> answers <paramref name="statusCode"/>.</summary>
    public static IResourceBuilder<T> WithHttpHealthCheck<T>(this IResourceBuilder<T> builder, string path, int statusCode = 200, string endpointName = "http")
        where T : IProcessResource => builder.WithAnnotation(new HttpHealthCheckAnnotation(endpointName, path, statusCode));

    public static IResourceBuilder<T> WithHealthCheck<T>(this IResourceBuilder<T> builder, Func<ResourceInstance, string> describe, Func<ResourceInstance, CancellationToken, Task<HealthCheckResult>> check)
        where T : IProcessResource => builder.WithAnnotation(new HealthCheckAnnotation(describe, check));

    /// <summary>Kill (and so restart) a replica that stops answering <c>GET &lt;endpoint&gt;&lt;path&gt;</c> for <paramref name="timeout"/> (default 10 s) once it has answered.</summary>
    public static IResourceBuilder<T> WithHttpLiveness<T>(this IResourceBuilder<T> builder, string path, TimeSpan? timeout = null, string endpointName = "http")
        where T : IProcessResource
    {
        var http = new HttpClient { Timeout = TimeSpan.FromSeconds(3) };
        return builder.WithAnnotation(new LivenessAnnotation(
            i => i.Endpoint(endpointName).Address + path,
            async (i, cancel) =>
            {
                try
                {
                    using var response = await http.GetAsync(new Uri(i.Endpoint(endpointName).Address + path), cancel);
                    return response.IsSuccessStatusCode;
                }
                catch (Exception e) when (e is HttpRequestException || (e is TaskCanceledException && !cancel.IsCancellationRequested))
                {
                    return false;
                }
            },
            timeout ?? TimeSpan.FromSeconds(10)));
    }

    /// <summary>Restart this resource's processes whenever a process of <paramref name="dependency"/> is restarted after an exit.</summary>
    public static IResourceBuilder<T> RestartWith<T>(this IResourceBuilder<T> builder, IResourceBuilder<IResource> dependency)
        where T : IResource => builder.WithAnnotation(new RestartWithAnnotation(dependency.Resource));

    /// <summary>Start only once every replica of <paramref name="dependency"/> is healthy; stop before it.</summary>
    public static IResourceBuilder<T> WaitFor<T>(this IResourceBuilder<T> builder, IResourceBuilder<IResource> dependency)
        where T : IResourceWithWaitSupport => builder.WithAnnotation(new WaitAnnotation(dependency.Resource, WaitType.UntilHealthy));

    /// <summary>Start only once <paramref name="dependency"/> (a one-shot resource) has exited with code 0; a failure stops the launch.</summary>
    public static IResourceBuilder<T> WaitForCompletion<T>(this IResourceBuilder<T> builder, IResourceBuilder<IResource> dependency)
        where T : IResourceWithWaitSupport => builder.WithAnnotation(new WaitAnnotation(dependency.Resource, WaitType.UntilCompleted));

    /// <summary>Injects <c>ConnectionStrings__&lt;name&gt;</c> of <paramref name="source"/>.</summary>
    public static IResourceBuilder<T> WithReference<T>(this IResourceBuilder<T> builder, IResourceBuilder<IResourceWithConnectionString> source)
        where T : IProcessResource
    {
        var resource = source.Resource;
        builder.WithAnnotation(new ResourceReferenceAnnotation(resource));
        return builder.WithEnvironment(c => c.Variables[$"ConnectionStrings__{resource.Name}"] = resource.GetConnectionString(c.Model));
    }

    /// <summary>Shows <c>&lt;endpoint&gt;&lt;path&gt;</c> in the summary as <paramref name="displayText"/>.</summary>
    public static IResourceBuilder<T> WithUrl<T>(this IResourceBuilder<T> builder, string path, string displayText, string endpointName = "http")
        where T : IProcessResource => builder.WithAnnotation(new UrlAnnotation(endpointName, path, displayText));

    /// <summary>Shows a line in the summary (for example, a command to try against the running application).</summary>
    public static IResourceBuilder<T> WithHint<T>(this IResourceBuilder<T> builder, string displayText, Func<ResourceInstance, string> text)
        where T : IProcessResource => builder.WithAnnotation(new HintAnnotation(displayText, text));

    /// <summary>The program reads its parent's process id from <paramref name="environmentVariable"/> and stops when the parent exits.</summary>
    public static IResourceBuilder<T> WithParentProcessId<T>(this IResourceBuilder<T> builder, string environmentVariable)
        where T : IProcessResource => builder.WithAnnotation(new ParentProcessAnnotation(environmentVariable));

    /// <summary>Whether the program stops by itself when the launcher dies; if not, the launcher gives it a watchdog.</summary>
    public static bool StopsWithParent(this IProcessResource resource) =>
        resource.Annotations.OfType<ParentProcessAnnotation>().Any() || resource is ProjectResource { Project.ParentProcessIdVariable: not null };

    internal static string Invariant(this int value) => value.ToString(CultureInfo.InvariantCulture);
}

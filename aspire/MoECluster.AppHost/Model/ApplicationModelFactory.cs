namespace MoECluster.AppHost.Model;

/// <summary>
/// Turns the resources a builder collected into a <see cref="DistributedApplicationModel"/>: checks the model (every
/// wait and reference names a resource of this application, endpoints named by health checks and URLs exist, no
/// cycles, no port used twice), expands replicas, allocates ports, computes command lines and environments.
/// </summary>
internal static class ApplicationModelFactory
{
    public static DistributedApplicationModel Create(IReadOnlyList<IResource> resources, LauncherSettings settings)
    {
        var model = new DistributedApplicationModel(resources, settings);
        var known = new HashSet<IResource>(resources, ReferenceEqualityComparer.Instance);
        foreach (var resource in resources)
        {
            CheckRelations(resource, known, model);
            CheckEndpointNames(resource);
        }

        model.StartOrder = TopologicalOrder(resources, model);
        Expand(resources, model);
        foreach (var instance in model.Instances)
        {
            Complete(instance, model);
        }

        return model;
    }

    private static void CheckRelations(IResource resource, HashSet<IResource> known, DistributedApplicationModel model)
    {
        foreach (var wait in resource.Annotations.OfType<WaitAnnotation>())
        {
            string verb = wait.WaitType == WaitType.UntilCompleted ? "WaitForCompletion" : "WaitFor";
            if (ReferenceEquals(wait.Resource, resource))
            {
                throw new DistributedApplicationException($"resource '{resource.Name}' waits for itself ({verb})");
            }

            if (!known.Contains(wait.Resource))
            {
                throw new DistributedApplicationException($"resource '{resource.Name}' waits for '{wait.Resource.Name}' ({verb}), which is not part of this application: add it to the same builder first");
            }

            if (wait.WaitType == WaitType.UntilCompleted && wait.Resource is not (IProcessResource or TaskResource))
            {
                throw new DistributedApplicationException($"resource '{resource.Name}' waits for '{wait.Resource.Name}' to complete, but it has no process or task that could complete");
            }

            model.AddDependency(resource, wait.Resource);
        }

        foreach (var reference in resource.Annotations.OfType<ResourceReferenceAnnotation>())
        {
            if (!known.Contains(reference.Resource))
            {
                throw new DistributedApplicationException($"resource '{resource.Name}' references '{reference.Resource.Name}' (WithReference), which is not part of this application: add it to the same builder first");
            }

            model.AddDependency(resource, reference.Resource);
        }
    }

    private static void CheckEndpointNames(IResource resource)
    {
        var names = resource.Annotations.OfType<EndpointAnnotation>().Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var check in resource.Annotations.OfType<HttpHealthCheckAnnotation>())
        {
            if (!names.Contains(check.EndpointName))
            {
                throw new DistributedApplicationException($"resource '{resource.Name}' has an HTTP health check on endpoint '{check.EndpointName}' ({check.Path}) but no such endpoint: add .WithHttpEndpoint()");
            }
        }

        foreach (var url in resource.Annotations.OfType<UrlAnnotation>())
        {
            if (!names.Contains(url.EndpointName))
            {
                throw new DistributedApplicationException($"resource '{resource.Name}' shows the URL '{url.DisplayText}' on endpoint '{url.EndpointName}' but has no such endpoint");
            }
        }

        if (resource.Annotations.OfType<ReplicaAnnotation>().Any(r => r.Replicas < 1))
        {
            throw new DistributedApplicationException($"resource '{resource.Name}' asks for fewer than 1 replica");
        }
    }

    /// <summary>Depth-first; a resource is placed after all of its dependencies, ties in the order resources were added.</summary>
    private static List<IResource> TopologicalOrder(IReadOnlyList<IResource> resources, DistributedApplicationModel model)
    {
        var order = new List<IResource>();
        var state = new Dictionary<IResource, bool>(ReferenceEqualityComparer.Instance); // false: on the stack; true: placed
        var stack = new List<IResource>();

        void Visit(IResource r)
        {
            if (state.TryGetValue(r, out bool placed))
            {
                if (!placed)
                {
                    var cycle = stack.SkipWhile(s => !ReferenceEquals(s, r)).Append(r).Select(s => s.Name);
                    throw new DistributedApplicationException($"the resources wait for each other in a cycle: {string.Join(" -> ", cycle)}");
                }

                return;
            }

            state[r] = false;
            stack.Add(r);
            foreach (var dependency in model.DependenciesOf(r))
            {
                Visit(dependency);
            }

            stack.RemoveAt(stack.Count - 1);
            state[r] = true;
            order.Add(r);
        }

        foreach (var r in resources)
        {
            Visit(r);
        }

        return order;
    }

    private static void Expand(IReadOnlyList<IResource> resources, DistributedApplicationModel model)
    {
        // Fixed ports first (port + replica index - 1), each used once; then a free port for every other endpoint.
        var taken = new HashSet<int>();
        var owners = new Dictionary<int, string>();
        var plans = new List<(IResource Resource, string Name, int Index, int Count, List<(EndpointAnnotation Endpoint, int? Port)> Ports)>();
        foreach (var resource in resources)
        {
            if (resource is not (IProcessResource or TaskResource))
            {
                continue;
            }

            var replicas = resource.Annotations.OfType<ReplicaAnnotation>().LastOrDefault();
            int count = replicas?.Replicas ?? 1;
            for (int i = 1; i <= count; i++)
            {
                string name = replicas is null ? resource.Name : $"{resource.Name}-{i}";
                var ports = new List<(EndpointAnnotation, int?)>();
                foreach (var endpoint in resource.Annotations.OfType<EndpointAnnotation>())
                {
                    int? port = endpoint.Port is int first ? first + i - 1 : null;
                    if (port is int p)
                    {
                        if (p is < 1 or > 65535)
                        {
                            throw new DistributedApplicationException($"{name}: endpoint '{endpoint.Name}' would get port {p}, outside 1..65535");
                        }

                        if (owners.TryGetValue(p, out string? owner))
                        {
                            throw new DistributedApplicationException($"port {p} is given twice: to {owner} and to {name} ({endpoint.Name})");
                        }

                        owners[p] = $"{name} ({endpoint.Name})";
                        taken.Add(p);
                    }

                    ports.Add((endpoint, port));
                }

                plans.Add((resource, name, i, count, ports));
            }
        }

        foreach (var plan in plans)
        {
            var endpoints = new Dictionary<string, AllocatedEndpoint>(StringComparer.Ordinal);
            foreach (var (endpoint, port) in plan.Ports)
            {
                endpoints[endpoint.Name] = new AllocatedEndpoint(endpoint.Name, endpoint.Scheme, "127.0.0.1", port ?? PortAllocator.FreePort(taken));
            }

            model.AddInstance(new ResourceInstance(plan.Resource, plan.Name, plan.Index, plan.Count, endpoints));
        }
    }

    private static void Complete(ResourceInstance instance, DistributedApplicationModel model)
    {
        if (instance.Resource is not IProcessResource process)
        {
            return;
        }

        var command = process.Command;
        instance.FileName = command.FileName;
        var variables = new SortedDictionary<string, string>(StringComparer.Ordinal);
        if (process is ProjectResource project)
        {
            AddProjectDefaults(instance, project, model.Settings, variables);
        }

        if (process.Annotations.OfType<ParentProcessAnnotation>().LastOrDefault() is { } parent)
        {
            variables[parent.EnvironmentVariable] = model.Settings.ParentProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        var context = new EnvironmentContext(instance, model, variables);
        foreach (var annotation in process.Annotations.OfType<EnvironmentAnnotation>())
        {
            annotation.Apply(context);
        }

        instance.Environment = variables;
        instance.Arguments = [.. command.LeadingArguments, .. process.Annotations.OfType<CommandLineArgsAnnotation>().SelectMany(a => a.Arguments(instance))];
    }

    /// <summary>What a .NET project gets from an Aspire AppHost: its name for telemetry, where to send it, its URLs, the environment name.</summary>
    private static void AddProjectDefaults(ResourceInstance instance, ProjectResource project, LauncherSettings settings, SortedDictionary<string, string> variables)
    {
        variables["DOTNET_ENVIRONMENT"] = settings.EnvironmentName;
        variables["OTEL_SERVICE_NAME"] = instance.Name;
        variables["OTEL_RESOURCE_ATTRIBUTES"] = $"service.instance.id={instance.InstanceId}";
        if (settings.OtlpEndpoint is string otlp)
        {
            variables["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp;
            variables["OTEL_EXPORTER_OTLP_PROTOCOL"] = settings.OtlpProtocol;
        }

        var http = instance.Endpoints.Values.Where(e => e.Scheme is "http" or "https").Select(e => e.Address).ToList();
        if (http.Count > 0)
        {
            // ASP.NET Core reads both; setting both keeps an inherited Urls from winning over ASPNETCORE_URLS.
            variables["ASPNETCORE_URLS"] = string.Join(';', http);
            variables["Urls"] = variables["ASPNETCORE_URLS"];
        }

        if (project.Project.ParentProcessIdVariable is string variable)
        {
            variables[variable] = settings.ParentProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
    }
}

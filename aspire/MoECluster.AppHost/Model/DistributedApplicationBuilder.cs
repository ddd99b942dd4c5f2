using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace MoECluster.AppHost.Model;

/// <summary>How to create a <see cref="DistributedApplicationBuilder"/>.</summary>
public sealed class DistributedApplicationOptions
{
    public IReadOnlyList<string> Args { get; init; } = [];

    /// <summary>Read appsettings.json beside the launcher and the environment variables (the launcher does; tests give <see cref="Configuration"/> alone).</summary>
    public bool UseDefaultConfigurationSources { get; init; } = true;

    /// <summary>Configuration values that override the default sources.</summary>
    public IReadOnlyDictionary<string, string?>? Configuration { get; init; }

    /// <summary>The process children must outlive no longer than (default: this process).</summary>
    public int? ParentProcessId { get; init; }
}

/// <summary>
/// Collects the resources of a distributed application and their relations, then builds the runnable
/// <see cref="DistributedApplication"/>. Configuration: appsettings.json beside the launcher, then environment variables.
/// Launcher settings read from it: <c>AppHost:StartupTimeoutSeconds</c> (default 120), <c>AppHost:StopGraceSeconds</c>
/// (10), <c>AppHost:Otlp</c> or <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> or <c>DOTNET_DASHBOARD_OTLP_ENDPOINT_URL</c> (where
/// children send telemetry; none by default), <c>AppHost:OtlpProtocol</c> or <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>
/// (grpc), and <c>DOTNET_ENVIRONMENT</c> (Production), which children inherit.
/// </summary>
public sealed class DistributedApplicationBuilder
{
    private readonly List<IResource> _resources = [];
    private readonly int _parentProcessId;

    internal DistributedApplicationBuilder(DistributedApplicationOptions options)
    {
        Args = options.Args;
        _parentProcessId = options.ParentProcessId ?? Environment.ProcessId;
        Configuration = new ConfigurationManager();
        if (options.UseDefaultConfigurationSources)
        {
            Configuration.SetBasePath(AppContext.BaseDirectory);
            Configuration.AddJsonFile("appsettings.json", optional: true);
            Configuration.AddEnvironmentVariables();
        }

        if (options.Configuration is not null)
        {
            Configuration.AddInMemoryCollection(options.Configuration);
        }
    }

    public IReadOnlyList<string> Args { get; }

    public ConfigurationManager Configuration { get; }

    public IReadOnlyList<IResource> Resources => _resources;

    public string EnvironmentName => Configuration["DOTNET_ENVIRONMENT"] is { Length: > 0 } name ? name : "Production";

    /// <summary>Adds a resource; names are unique, lower-case letters, digits and '-'.</summary>
    public IResourceBuilder<T> AddResource<T>(T resource)
        where T : IResource
    {
        if (string.IsNullOrEmpty(resource.Name) || !resource.Name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-') || !char.IsAsciiLetterLower(resource.Name[0]))
        {
            throw new DistributedApplicationException($"resource name '{resource.Name}' is not valid: use lower-case letters, digits and '-', starting with a letter");
        }

        if (_resources.FirstOrDefault(r => r.Name == resource.Name) is { } existing)
        {
            throw new DistributedApplicationException($"a resource named '{resource.Name}' already exists ({existing.GetType().Name})");
        }

        _resources.Add(resource);
        return new ResourceBuilder<T>(resource, this);
    }

    /// <summary>Expands the resources into instances (replicas, ports, command lines, environments) after checking the model.</summary>
    public DistributedApplication Build() => new(ApplicationModelFactory.Create(_resources, ReadSettings()));

    internal LauncherSettings ReadSettings()
    {
        double Seconds(string key, double fallback)
        {
            string? text = Configuration[key];
            return text is null ? fallback
                : double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v > 0 ? v
                : throw new DistributedApplicationException($"{key} = '{text}' is not a positive number of seconds");
        }

        static string? NonEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;
        string? otlp = NonEmpty(Configuration["AppHost:Otlp"]) ?? NonEmpty(Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]) ?? NonEmpty(Configuration["DOTNET_DASHBOARD_OTLP_ENDPOINT_URL"]);
        if (otlp is not null && !Uri.TryCreate(otlp, UriKind.Absolute, out _))
        {
            throw new DistributedApplicationException($"the OTLP endpoint '{otlp}' is not an absolute URL");
        }

        return new LauncherSettings(
            EnvironmentName,
            _parentProcessId,
            TimeSpan.FromSeconds(Seconds("AppHost:StartupTimeoutSeconds", 120)),
            TimeSpan.FromSeconds(Seconds("AppHost:StopGraceSeconds", 10)),
            otlp,
            NonEmpty(Configuration["AppHost:OtlpProtocol"]) ?? NonEmpty(Configuration["OTEL_EXPORTER_OTLP_PROTOCOL"]) ?? "grpc");
    }
}

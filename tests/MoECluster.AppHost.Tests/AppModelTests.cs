using MoECluster.AppHost.Integrations;
using MoECluster.AppHost.Model;

namespace MoECluster.AppHost.Tests;

/// <summary>The generic app model: replicas, endpoints, environment, waits, and the errors a wrong model gets.</summary>
public sealed class AppModelTests
{
    internal sealed class FakeProject : IProjectMetadata
    {
        public string AssemblyPath => "/nonexistent/fake.dll";

        public string? ParentProcessIdVariable => "FAKE_PARENT_PID";
    }

    internal static DistributedApplicationBuilder NewBuilder(Dictionary<string, string?>? configuration = null, string[]? args = null) =>
        DistributedApplication.CreateBuilder(new DistributedApplicationOptions
        {
            Args = args ?? [],
            UseDefaultConfigurationSources = false,
            Configuration = configuration,
            ParentProcessId = 4242,
        });

    [Fact]
    public void Replicas_expand_to_named_instances_with_their_own_ports_and_environment()
    {
        var builder = NewBuilder();
        builder.AddProject<FakeProject>("worker")
            .WithReplicas(3)
            .WithHttpEndpoint()
            .WithEndpoint("peer", 40100)
            .WithEnvironment(c => c.Variables["PEER_PORT"] = c.Instance.Endpoint("peer").Port.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .WithArgs(i => ["--index", i.ReplicaIndex.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        var model = builder.Build().Model;

        var workers = model.Instances;
        Assert.Equal(["worker-1", "worker-2", "worker-3"], workers.Select(w => w.Name));
        Assert.Equal([40100, 40101, 40102], workers.Select(w => w.Endpoint("peer").Port));
        var http = workers.Select(w => w.Endpoint("http").Port).ToList();
        Assert.Equal(3, http.Distinct().Count());
        Assert.DoesNotContain(http, p => p is >= 40100 and <= 40102);
        for (int i = 0; i < 3; i++)
        {
            var env = workers[i].Environment;
            Assert.Equal($"http://127.0.0.1:{http[i]}", env["ASPNETCORE_URLS"]);
            Assert.Equal($"http://127.0.0.1:{http[i]}", env["Urls"]);
            Assert.Equal(workers[i].Name, env["OTEL_SERVICE_NAME"]);
            Assert.Matches($"^service\\.instance\\.id={workers[i].Name}-[0-9a-f]{{32}}$", env["OTEL_RESOURCE_ATTRIBUTES"]);
            Assert.Equal((40100 + i).ToString(System.Globalization.CultureInfo.InvariantCulture), env["PEER_PORT"]);
            Assert.Equal("4242", env["FAKE_PARENT_PID"]);
            Assert.Equal("Production", env["DOTNET_ENVIRONMENT"]);
            Assert.False(env.ContainsKey("OTEL_EXPORTER_OTLP_ENDPOINT"));
            Assert.Equal(["/nonexistent/fake.dll", "--index", (i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)], workers[i].Arguments);
            Assert.Equal(DotnetHost.Path, workers[i].FileName);
        }

        Assert.Equal(3, workers.Select(w => w.Environment["OTEL_RESOURCE_ATTRIBUTES"]).Distinct().Count());
    }

    [Fact]
    public void A_resource_without_replicas_keeps_its_name_and_later_environment_wins()
    {
        var builder = NewBuilder(new() { ["DOTNET_ENVIRONMENT"] = "Staging" });
        builder.AddProject<FakeProject>("single").WithEnvironment("A", "1").WithEnvironment("A", "2").WithEnvironment("OTEL_SERVICE_NAME", "custom");
        var instance = Assert.Single(builder.Build().Model.Instances);
        Assert.Equal("single", instance.Name);
        Assert.Equal("2", instance.Environment["A"]);
        Assert.Equal("custom", instance.Environment["OTEL_SERVICE_NAME"]);
        Assert.Equal("Staging", instance.Environment["DOTNET_ENVIRONMENT"]);
        Assert.False(instance.Environment.ContainsKey("ASPNETCORE_URLS"));
        Assert.False(instance.Environment.ContainsKey("Urls"));
    }

    [Theory]
    [InlineData("AppHost:Otlp", "http://127.0.0.1:4317")]
    [InlineData("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]
    [InlineData("DOTNET_DASHBOARD_OTLP_ENDPOINT_URL", "http://127.0.0.1:18889")]
    public void Otlp_variables_are_injected_only_when_an_endpoint_is_configured(string key, string url)
    {
        var builder = NewBuilder(new() { [key] = url });
        builder.AddProject<FakeProject>("p");
        builder.AddExecutable("tool", "true");
        var model = builder.Build().Model;
        var env = model.Instance("p").Environment;
        Assert.Equal(url, env["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        Assert.Equal("grpc", env["OTEL_EXPORTER_OTLP_PROTOCOL"]);
        Assert.False(model.Instance("tool").Environment.ContainsKey("OTEL_EXPORTER_OTLP_ENDPOINT"));

        var protocol = NewBuilder(new() { [key] = url, ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf" });
        protocol.AddProject<FakeProject>("p");
        Assert.Equal("http/protobuf", protocol.Build().Model.Instance("p").Environment["OTEL_EXPORTER_OTLP_PROTOCOL"]);
    }

    [Fact]
    public void A_connection_string_reference_is_injected_as_ConnectionStrings()
    {
        var builder = NewBuilder();
        var redis = builder.AddRedis("cache", port: 46379);
        builder.AddExecutable("app", "true").WithReference(redis);
        var model = builder.Build().Model;
        Assert.Equal("127.0.0.1:46379", model.Instance("app").Environment["ConnectionStrings__cache"]);
        Assert.Equal(["--port", "46379"], model.Instance("cache").Arguments.Take(2));
        Assert.Equal([model.Resources[0]], model.DependenciesOf(model.Resources[1]));
    }

    [Fact]
    public void Start_order_puts_every_resource_after_what_it_waits_for_whatever_the_order_they_were_added_in()
    {
        var builder = NewBuilder();
        var c = builder.AddExecutable("c", "true");
        var b = builder.AddExecutable("b", "true");
        var a = builder.AddExecutable("a", "true");
        var d = builder.AddExecutable("d", "true");
        c.WaitFor(b);
        b.WaitForCompletion(a);
        d.WaitFor(c).WaitFor(a);
        var model = builder.Build().Model;
        Assert.Equal(["a", "b", "c", "d"], model.StartOrder.Select(r => r.Name));
        Assert.True(model.IsOneShot(a.Resource));
        Assert.False(model.IsOneShot(b.Resource));
        Assert.Equal(["b", "d"], model.DependentsOf(a.Resource).Select(r => r.Name).Order());
    }

    [Fact]
    public void Waiting_for_a_resource_of_another_builder_is_refused_with_both_names()
    {
        var builder = NewBuilder();
        var stranger = NewBuilder().AddExecutable("stranger", "true");
        builder.AddExecutable("app", "true").WaitFor(stranger);
        var e = Assert.Throws<DistributedApplicationException>(() => builder.Build());
        Assert.Contains("'app' waits for 'stranger'", e.Message, StringComparison.Ordinal);
        Assert.Contains("not part of this application", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Referencing_a_resource_of_another_builder_is_refused()
    {
        var builder = NewBuilder();
        var redis = NewBuilder().AddRedis("cache");
        builder.AddExecutable("app", "true").WithReference(redis);
        var e = Assert.Throws<DistributedApplicationException>(() => builder.Build());
        Assert.Contains("'app' references 'cache'", e.Message, StringComparison.Ordinal);

        var orleansElsewhere = NewBuilder().AddOrleans("cluster");
        var silos = NewBuilder();
        silos.AddProject<FakeProject>("silo").WithReference(orleansElsewhere);
        e = Assert.Throws<DistributedApplicationException>(() => silos.Build());
        Assert.Contains("'silo' references 'cluster'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_health_check_or_url_on_a_missing_endpoint_is_refused()
    {
        var builder = NewBuilder();
        builder.AddProject<FakeProject>("web").WithHttpHealthCheck("/health");
        var e = Assert.Throws<DistributedApplicationException>(() => builder.Build());
        Assert.Contains("'web' has an HTTP health check on endpoint 'http' (/health) but no such endpoint", e.Message, StringComparison.Ordinal);

        builder = NewBuilder();
        builder.AddProject<FakeProject>("web").WithUrl("/", "home page");
        e = Assert.Throws<DistributedApplicationException>(() => builder.Build());
        Assert.Contains("home page", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cycles_self_waits_duplicate_names_duplicate_ports_and_zero_replicas_are_refused()
    {
        var builder = NewBuilder();
        var x = builder.AddExecutable("x", "true");
        var y = builder.AddExecutable("y", "true");
        x.WaitFor(y);
        y.WaitFor(x);
        var e = Assert.Throws<DistributedApplicationException>(() => builder.Build());
        Assert.Contains("cycle", e.Message, StringComparison.Ordinal);
        Assert.Contains("x -> y -> x", e.Message, StringComparison.Ordinal);

        builder = NewBuilder();
        var self = builder.AddExecutable("self", "true");
        self.WaitFor(self);
        Assert.Contains("waits for itself", Assert.Throws<DistributedApplicationException>(() => builder.Build()).Message, StringComparison.Ordinal);

        builder = NewBuilder();
        builder.AddExecutable("same", "true");
        Assert.Contains("already exists", Assert.Throws<DistributedApplicationException>(() => builder.AddExecutable("same", "true")).Message, StringComparison.Ordinal);
        Assert.Contains("not valid", Assert.Throws<DistributedApplicationException>(() => builder.AddExecutable("Bad Name", "true")).Message, StringComparison.Ordinal);

        builder = NewBuilder();
        builder.AddExecutable("one", "true").WithEndpoint("p", 41000).WithReplicas(2);
        builder.AddExecutable("two", "true").WithEndpoint("p", 41001);
        e = Assert.Throws<DistributedApplicationException>(() => builder.Build());
        Assert.Contains("port 41001 is given twice: to one-2 (p) and to two", e.Message, StringComparison.Ordinal);

        Assert.Contains("at least 1 replica", Assert.Throws<DistributedApplicationException>(() => NewBuilder().AddExecutable("r", "true").WithReplicas(0)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Waiting_for_the_completion_of_a_resource_that_cannot_complete_is_refused()
    {
        var builder = NewBuilder();
        var orleans = builder.AddOrleans("cluster");
        builder.AddExecutable("app", "true").WaitForCompletion(orleans);
        Assert.Contains("has no process or task that could complete", Assert.Throws<DistributedApplicationException>(() => builder.Build()).Message, StringComparison.Ordinal);
    }
}

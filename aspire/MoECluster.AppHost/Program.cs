using MoECluster.AppHost;

// The dashboard on plain http on localhost (no certificate step), with its login link printed; ports from --dashboard-port.
var builder = DistributedApplication.CreateBuilder(new DistributedApplicationOptions { Args = args, AllowUnsecuredTransport = true });
var parsed = AppHostOptions.Parse(builder, args, Console.Out, Console.Error);
if (parsed.Options is not { } options)
{
    return parsed.ExitCode;
}

MoEClusterApp.UseLocalDashboard(builder, options);
Console.WriteLine(MoEClusterApp.PrepareTls(options));
MoEClusterApp.Describe(builder, options);
builder.Eventing.Subscribe<ResourceReadyEvent>(builder.Resources.Single(r => r.Name == MoEClusterApp.Frontend), (_, _) =>
{
    Console.WriteLine($"gateway ready: http://127.0.0.1:{options.Port} (live routing page /, /stats, Orleans dashboard /dashboard); the warm-up runs next");
    return Task.CompletedTask;
});
await builder.Build().RunAsync();
return 0;

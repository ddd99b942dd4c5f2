using MoECluster.AppHost;
using MoECluster.AppHost.Integrations;
using MoECluster.AppHost.Model;
using MoECluster.Cluster.Security;

var builder = DistributedApplication.CreateBuilder(args);
var parsed = AppHostOptions.Parse(builder, Console.Out, Console.Error);
if (parsed.Options is not { } options)
{
    return parsed.ExitCode;
}

MoEClusterApp.Describe(builder, options);
Console.WriteLine(MoEClusterApp.PrepareTls(options));
return await builder.Build().RunAsync();

namespace MoECluster.AppHost
{
    /// <summary>The MoECluster application, as an Aspire AppHost would describe it.</summary>
    public static class MoEClusterApp
    {
        public static void Describe(DistributedApplicationBuilder builder, AppHostOptions options)
        {
            var served = options.ServedModels();   // the standard + latent pair of the preset, under --models-dir

            var redis = options.Redis ? builder.AddRedis("redis") : null;
            var orleans = builder.AddOrleans("moecluster")
                .WithClustering(redis)                                   // localhost clustering without --redis
                .WithTls(LocalClusterTls.DirectoryFor(options.ModelsDir)); // mutual TLS: certificates made once, beside the models

            var models = builder.AddProject<Projects.MoECluster_Cli>("models")
                .WithModelGeneration(options);                           // one-shot: generates the pair if it is missing

            var frontend = builder.AddProject<Projects.MoECluster_Cli>("frontend")
                .WithArgs("silo", "--role", "frontend")
                .WithReference(orleans)                                  // the primary silo of localhost clustering
                .WithEndpoint(OrleansResource.SiloEndpoint, options.SiloPort)
                .WithEndpoint(OrleansResource.GatewayEndpoint, options.GatewayPort)
                .WithServedModels(served, options)
                .WithHttpEndpoint(options.Port)                          // the gateway
                .WithEnvironment("MoECluster__ExpectedExpertSilos", options.Replicas.Invariant())   // /health: degraded below
                .WithHttpHealthCheck("/alive")
                .WithHttpLiveness("/alive")                              // hung 10 s: killed and restarted
                .WithUrl("/", "live routing page")
                .WithUrl("/dashboard", "Orleans dashboard")
                .WithUrl("/stats", "stats")
                .WithHint("put load on it", i => $"dotnet run --project src/MoECluster.Cli -c Release -- load --url {i.Endpoint("http").Address} --duration 30")
                .WaitForCompletion(models);

            var experts = builder.AddProject<Projects.MoECluster_Cli>("expert")
                .WithArgs("silo", "--role", "expert")
                .WithReplicas(options.Replicas)                          // expert-1 .. expert-n
                .WithReference(orleans)
                .WithEndpoint(OrleansResource.SiloEndpoint, options.SiloPort + 1)   // expert-i: silo port + i
                .WithServedModels(served, options)
                .WithHttpEndpoint()                                      // a free port each, for /alive and /health
                .WithHttpHealthCheck("/health")                          // 200 once the silo is active in the cluster
                .WithHttpLiveness("/alive")
                .WaitFor(frontend);
            if (redis is null)
            {
                // Localhost clustering keeps the membership in the front-end: its restart ends the expert silos.
                experts.RestartWith(frontend);
            }

            builder.AddWarmup("warmup", frontend, expertSilos: options.Replicas)   // /health counts them all, then one forward per model
                .WaitFor(experts);
        }

        /// <summary>Makes the cluster's TLS material in &lt;models-dir&gt;/tls unless usable material is there already; one line that says which.</summary>
        public static string PrepareTls(AppHostOptions options) => LocalClusterTls.Ensure(LocalClusterTls.DirectoryFor(options.ModelsDir));
    }
}

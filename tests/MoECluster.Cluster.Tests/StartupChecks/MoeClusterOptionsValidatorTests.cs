using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Dispatch;

namespace MoECluster.Cluster.Tests.StartupChecks;

/// <summary>Every key of the "MoECluster" section that can be wrong is refused by name, with what it allows (in process, fast).</summary>
public sealed class MoeClusterOptionsValidatorTests
{
    private static string[] Failures(Action<MoeClusterOptions> change)
    {
        var options = new MoeClusterOptions { Models = { ["lat"] = new ModelEntry { Path = "/models/lat" } } };
        change(options);
        var result = new MoeClusterOptionsValidator().Validate(Options.DefaultName, options);
        return result.Failed ? [.. result.Failures!] : [];
    }

    [Fact]
    public void Defaults_are_valid()
    {
        Assert.Empty(Failures(_ => { }));
        Assert.True(new MoeClusterOptionsValidator().Validate(null, new MoeClusterOptions()).Succeeded);
    }

    [Fact]
    public void The_front_end_batch_bound_is_at_most_the_gateway_token_limit_and_0_means_that_limit()
    {
        string failure = Assert.Single(Failures(o =>
        {
            o.Gateway.MaxTokensPerRequest = 1024;
            o.FrontEndBatching.MaxTokens = 1025;
        }));
        Assert.StartsWith("MoECluster:FrontEndBatching:MaxTokens = 1025: expected ", failure, StringComparison.Ordinal);
        Assert.Contains("MoECluster:Gateway:MaxTokensPerRequest (1024)", failure, StringComparison.Ordinal);
        Assert.Empty(Failures(o => o.FrontEndBatching.MaxTokens = o.Gateway.MaxTokensPerRequest));
        var options = new MoeClusterOptions();
        Assert.Equal(GatewayOptions.DefaultMaxTokensPerRequest, options.FrontEndBatching.EffectiveMaxTokens(options.Gateway));
        options.FrontEndBatching.MaxTokens = 64;
        Assert.Equal(64, options.FrontEndBatching.EffectiveMaxTokens(options.Gateway));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-3)]
    public void Shards_per_layer_below_one_is_refused_by_name(int shards)
    {
        string failure = Assert.Single(Failures(o => o.ShardsPerLayer = shards));
        Assert.StartsWith($"MoECluster:ShardsPerLayer = {shards}: expected", failure, StringComparison.Ordinal);
        Assert.Contains("at least 1", failure, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unknown_backend_is_refused_with_the_catalog_names()
    {
        string failure = Assert.Single(Failures(o => o.Compute.Backend = "gpu"));
        Assert.StartsWith("MoECluster:Compute:Backend = gpu: expected one of ", failure, StringComparison.Ordinal);
        foreach (string name in ComputeBackends.Names)
        {
            Assert.Contains(name, failure, StringComparison.Ordinal);
        }

        Assert.Empty(Failures(o => o.Compute.Backend = "Managed"));
        Assert.Empty(Failures(o => o.Compute.Backend = "cublas"));
    }

    [Fact]
    public void An_unknown_default_wire_is_refused_with_the_wire_names()
    {
        string failure = Assert.Single(Failures(o => o.DefaultWire = "int8"));
        Assert.Equal("MoECluster:DefaultWire = int8: expected one of fp32, bf16, fp16, mxfp8-e4m3, mxfp8-e5m2, mxfp6-e3m2, mxfp6-e2m3, mxfp4, nvfp4", failure);
        Assert.Empty(Failures(o => o.DefaultWire = "FP32"));
    }

    [Fact]
    public void Model_entries_need_a_path_and_the_default_model_must_be_one_of_them()
    {
        Assert.Equal("MoECluster:Models:std:Path = (empty): expected the directory of the model (config.json and its safetensors)",
            Assert.Single(Failures(o => o.Models["std"] = new ModelEntry())));
        Assert.Equal("MoECluster:DefaultModel = super: expected one of the configured models: lat",
            Assert.Single(Failures(o => o.DefaultModel = "super")));
        Assert.Empty(Failures(o => o.DefaultModel = "lat"));
        Assert.Contains("no model is configured", Assert.Single(Failures(o =>
        {
            o.Models.Clear();
            o.DefaultModel = "lat";
        })), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("RequestTimeoutSeconds")]
    [InlineData("ExpectedExpertSilos")]
    [InlineData("ShardRetry:MaxAttempts")]
    [InlineData("ShardRetry:BaseDelayMilliseconds")]
    [InlineData("ShardRetry:MaxDelayMilliseconds")]
    [InlineData("ShardHedging:LatencyMultiplier")]
    [InlineData("ShardHedging:MinDelayMilliseconds")]
    [InlineData("ShardHedging:MaxDelayMilliseconds")]
    [InlineData("ShardHedging:PreferAlternateSeconds")]
    [InlineData("ShardHedging:AlternateIdleSeconds")]
    [InlineData("ShardBatching:MaxRows")]
    [InlineData("ShardBatching:MaxBytes")]
    [InlineData("ShardBatching:MaxQueuedRequests")]
    [InlineData("ShardBatching:MaxQueuedBytes")]
    [InlineData("FrontEndBatching:MaxTokens")]
    [InlineData("FrontEndBatching:MaxBatchesInFlight")]
    [InlineData("Balancing:RedundantExperts")]
    [InlineData("Balancing:ReplicaBytesPerSilo")]
    [InlineData("Balancing:WindowSeconds")]
    [InlineData("Balancing:LeaveAloneBelow")]
    [InlineData("Balancing:RefreshSeconds")]
    [InlineData("Balancing:PeriodSeconds")]
    [InlineData("WireLimits:MaxPairsPerRow")]
    [InlineData("Gateway:MaxRequestBytes")]
    [InlineData("Gateway:MaxTokensPerRequest")]
    [InlineData("Gateway:MaxJsonDepth")]
    [InlineData("Gateway:MaxConnections")]
    [InlineData("Gateway:MaxConnectionsPerClient")]
    [InlineData("Gateway:KeepAliveTimeoutSeconds")]
    [InlineData("Gateway:RequestHeadersTimeoutSeconds")]
    [InlineData("Gateway:MaxRequestsInFlight")]
    [InlineData("Gateway:MaxBodyBytesInFlight")]
    [InlineData("Gateway:BodyReadTimeoutSeconds")]
    [InlineData("Gateway:MaxTokensInFlight")]
    [InlineData("Gateway:MaxQueuedTokens")]
    [InlineData("Gateway:QueueTimeoutSeconds")]
    public void A_bad_value_fails_naming_its_key(string key)
    {
        // Each key set out of range (or against the key it must agree with), through configuration as a silo reads it.
        string bad = key switch
        {
            "ShardRetry:MaxAttempts" => "1",
            "ShardRetry:MaxDelayMilliseconds" => "10",
            "ShardHedging:MaxDelayMilliseconds" => "999",
            "WireLimits:MaxPairsPerRow" => "256",
            "ShardBatching:MaxRows" => "0",
            "ShardBatching:MaxBytes" => "1000",
            "Gateway:MaxJsonDepth" => "2",
            "Gateway:MaxBodyBytesInFlight" => "1000",
            "Gateway:MaxTokensInFlight" => "100",
            "Balancing:RedundantExperts" => "-2",
            "Balancing:LeaveAloneBelow" => "0.9",
            "Balancing:PeriodSeconds" => "0.5",
            _ => "-1",
        };
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["MoECluster:Models:lat:Path"] = "/models/lat",
            [$"MoECluster:{key}"] = bad,
        }).Build();
        var options = configuration.GetSection(MoeClusterOptions.Section).Get<MoeClusterOptions>()!;
        var result = new MoeClusterOptionsValidator().Validate(null, options);
        Assert.True(result.Failed, $"{key} = {bad} passed");
        string failure = Assert.Single(result.Failures!);
        Assert.StartsWith($"MoECluster:{key} = {bad}: expected ", failure, StringComparison.Ordinal);
    }

    [Fact]
    public void A_replica_budget_is_given_in_experts_or_in_bytes_not_both()
    {
        string failure = Assert.Single(Failures(o =>
        {
            o.Balancing.RedundantExperts = 4;
            o.Balancing.ReplicaBytesPerSilo = 1L << 30;
        }));
        Assert.Contains("MoECluster:Balancing:ReplicaBytesPerSilo = 1073741824: expected a budget in bytes or Balancing:RedundantExperts (4), not both", failure, StringComparison.Ordinal);
        Assert.Empty(Failures(o => o.Balancing.ReplicaBytesPerSilo = 1L << 30));
    }

    [Fact]
    public void A_byte_budget_buys_each_silo_the_replicas_it_holds_in_every_layer()
    {
        // 10 experts' bytes over 2 MoE layers: 5 replicas a silo in each, so 3 silos get 15 per layer; at most one replica
        // per silo caps it (16 experts on 2 silos: 16 more); 0 bytes leaves the count to RedundantExperts (an eighth).
        const long Expert = 11L << 20;
        var balancing = new BalancingOptions { ReplicaBytesPerSilo = (10 * Expert) + (Expert / 2) };
        Assert.Equal(15, balancing.EffectiveRedundantExperts(64, 3, 2, () => Expert));
        Assert.Equal(16, new BalancingOptions { ReplicaBytesPerSilo = 1L << 40 }.EffectiveRedundantExperts(16, 2, 1, () => Expert));
        Assert.Equal(0, new BalancingOptions { ReplicaBytesPerSilo = Expert - 1 }.EffectiveRedundantExperts(64, 2, 1, () => Expert));
        Assert.Equal(8, new BalancingOptions().EffectiveRedundantExperts(64, 2, 1, () => Expert));
        Assert.Equal(3, new BalancingOptions { RedundantExperts = 3 }.EffectiveRedundantExperts(64, 2, 1, () => Expert));
    }

    [Fact]
    public void The_smallest_valid_retry_builds_a_retry_pipeline()
    {
        // MaxAttempts 2 is one retry: the least Polly's retry strategy accepts (1 would fail where the router builds it).
        var retry = new ShardRetryOptions { MaxAttempts = 2, BaseDelayMilliseconds = 0, MaxDelayMilliseconds = 0 };
        Assert.Empty(Failures(o =>
        {
            o.ShardRetry.MaxAttempts = retry.MaxAttempts;
            o.ShardRetry.BaseDelayMilliseconds = 0;
            o.ShardRetry.MaxDelayMilliseconds = 0;
        }));
        _ = new ShardCallRetry(retry, NullLogger.Instance);
        Assert.ThrowsAny<Exception>(() => new ShardCallRetry(new ShardRetryOptions { MaxAttempts = 1 }, NullLogger.Instance));
    }

    [Fact]
    public void Limits_that_must_agree_name_both_keys()
    {
        string failure = Assert.Single(Failures(o => o.Gateway.MaxTokensInFlight = 5));
        Assert.Equal("MoECluster:Gateway:MaxTokensInFlight = 5: expected at least MoECluster:Gateway:MaxTokensPerRequest (8192): a request of the most tokens must be forwardable", failure);
        Assert.Contains("at least MoECluster:ShardHedging:MinDelayMilliseconds (1000)", Assert.Single(Failures(o => o.ShardHedging.MaxDelayMilliseconds = 10)), StringComparison.Ordinal);
    }

    [Fact]
    public void Every_failure_is_reported_at_once()
    {
        var failures = Failures(o =>
        {
            o.ShardsPerLayer = 0;
            o.Compute.Backend = "tpu";
            o.RequestTimeoutSeconds = 0;
        });
        Assert.Equal(3, failures.Length);
    }

    [Fact]
    public void A_silo_host_with_a_bad_key_fails_its_start_naming_the_key()
    {
        // The registration AddMoeCluster makes (bound, validated on start), on a bare host: StartAsync throws, naming the key.
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["MoECluster:ShardsPerLayer"] = "0" });
        builder.Services.AddOptions<MoeClusterOptions>().Bind(builder.Configuration.GetSection(MoeClusterOptions.Section)).ValidateOnStart();
        builder.Services.AddSingleton<IValidateOptions<MoeClusterOptions>, MoeClusterOptionsValidator>();
        using var host = builder.Build();
        var e = Assert.Throws<OptionsValidationException>(() => host.StartAsync().GetAwaiter().GetResult());
        Assert.Contains("MoECluster:ShardsPerLayer = 0: expected an integer of at least 1", e.Message, StringComparison.Ordinal);
    }
}

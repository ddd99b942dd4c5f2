namespace MoECluster.Cluster.Hosting;

/// <summary>The "MoECluster" configuration section (appsettings.json or MoECluster__* environment variables).</summary>
public sealed class MoeClusterOptions
{
    public const string Section = "MoECluster";

    /// <summary>Models served, by id: <c>MoECluster__Models__latent__Path=/models/super</c>. Every silo must be able to read the path.</summary>
    public Dictionary<string, ModelEntry> Models { get; init; } = [];

    /// <summary>The model a request uses when it names none (default: the first configured).</summary>
    public string? DefaultModel { get; set; }

    /// <summary>Expert shards per MoE layer (contiguous ranges of experts).</summary>
    public int ShardsPerLayer { get; set; } = 4;

    /// <summary>Payload element type when a request names none: fp32, bf16 or fp16.</summary>
    public string DefaultWire { get; set; } = "bf16";

    /// <summary>Per-request deadline of the router (all layers of one request), in seconds.</summary>
    public double RequestTimeoutSeconds { get; set; } = 120;

    /// <summary>Explicit placements: shard key (model/layer/first-end) → silo name (Orleans__Name of that silo).</summary>
    public Dictionary<string, string> Pins { get; init; } = [];

    /// <summary>Where expert and projection compute runs on this silo.</summary>
    public ComputeOptions Compute { get; init; } = new();

    /// <summary>How routers retry a shard call whose silo went away.</summary>
    public ShardRetryOptions ShardRetry { get; init; } = new();

    /// <summary>Bounds every decoded wire message must respect (untrusted input).</summary>
    public MoECluster.Wire.WireLimits WireLimits { get; set; } = new();

    public string ResolveModel(string? requested)
    {
        string? id = requested ?? DefaultModel ?? Models.Keys.FirstOrDefault();
        if (id is null || !Models.ContainsKey(id))
        {
            throw new ArgumentException(Models.Count == 0
                ? "no model is configured (set MoECluster:Models:<id>:Path)"
                : $"unknown model '{id}'; served models: {string.Join(", ", Models.Keys)}");
        }

        return id;
    }
}

public sealed class ComputeOptions
{
    /// <summary>auto (GPU if present, else managed), managed, reference or ilgpu.</summary>
    public string Backend { get; set; } = "auto";
}

/// <summary>Retries of a shard call that failed with a lost silo (see ShardCallRetry); bounded by the request deadline too.</summary>
public sealed class ShardRetryOptions
{
    public int MaxAttempts { get; set; } = 100;

    public double BaseDelayMilliseconds { get; set; } = 50;

    public double MaxDelayMilliseconds { get; set; } = 1000;
}

public sealed class ModelEntry
{
    public string Path { get; set; } = string.Empty;
}

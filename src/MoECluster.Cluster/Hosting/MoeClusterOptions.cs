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

    /// <summary>Payload element type, both directions, when a request names none: a name of <see cref="Wire.WireCodecs"/>.</summary>
    public string DefaultWire { get; set; } = Wire.WireCodecs.Default.Name;

    /// <summary>The dispatch direction's default (routed rows, router → shard), overriding <see cref="DefaultWire"/>'s; null: <see cref="DefaultWire"/>.</summary>
    public string? DefaultWireDispatch { get; set; }

    /// <summary>The combine direction's default (partial sums, shard → router), overriding <see cref="DefaultWire"/>'s; null: <see cref="DefaultWire"/>.</summary>
    public string? DefaultWireCombine { get; set; }

    /// <summary>
    /// The pair a request gets in each direction it names none of: <see cref="DefaultWireDispatch"/> and
    /// <see cref="DefaultWireCombine"/> over <see cref="DefaultWire"/> (checked at start by the options validator).
    /// </summary>
    public Wire.WirePair DefaultWirePair() => Wire.WirePair.Resolve(DefaultWire, DefaultWireDispatch, DefaultWireCombine, Wire.WirePair.Default);

    /// <summary>Per-request deadline of the router (all layers of one request), in seconds.</summary>
    public double RequestTimeoutSeconds { get; set; } = 120;

    /// <summary>
    /// Explicit placements: shard key (<c>{model}/{layer}/s{index}/{ranges}</c>, e.g. <c>latent/1/s0/0-16</c>) → silo
    /// name (Orleans__Name of that silo). Checked at start: a key in another form fails the start, naming it.
    /// </summary>
    public Dictionary<string, string> Pins { get; init; } = [];

    /// <summary>Where expert and projection compute runs on this silo.</summary>
    public ComputeOptions Compute { get; init; } = new();

    /// <summary>How routers retry a shard call whose silo went away.</summary>
    public ShardRetryOptions ShardRetry { get; init; } = new();

    /// <summary>How routers hedge a shard call that is overdue (a hung silo): see ShardCallHedging.</summary>
    public ShardHedgingOptions ShardHedging { get; init; } = new();

    /// <summary>How large one grouped pass of an expert shard may grow when requests queue at it ("MoECluster:ShardBatching").</summary>
    public ShardBatchingOptions ShardBatching { get; init; } = new();

    /// <summary>Batching of concurrent requests at the front-end's routers ("MoECluster:FrontEndBatching").</summary>
    public FrontEndBatchingOptions FrontEndBatching { get; init; } = new();

    /// <summary>Hot-expert replicas and load-aware placement from measured routing ("MoECluster:Balancing").</summary>
    public BalancingOptions Balancing { get; init; } = new();

    /// <summary>
    /// Expert silos the cluster is meant to have (set by the launchers and deploy/); 0 = not configured. While fewer
    /// serve, a front-end's <c>/health</c> says "degraded" (still HTTP 200: every request is still answered).
    /// </summary>
    public int ExpectedExpertSilos { get; set; }

    /// <summary>Bounds every decoded wire message must respect (untrusted input).</summary>
    public MoECluster.Wire.WireLimits WireLimits { get; set; } = new();

    /// <summary>The HTTP gateway of front-end silos: API keys and request limits ("MoECluster:Gateway").</summary>
    public GatewayOptions Gateway { get; init; } = new();

    /// <summary>Mutual TLS on every Orleans connection ("MoECluster:Tls"): on unless turned off explicitly.</summary>
    public Security.ClusterTlsOptions Tls { get; init; } = new();

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

/// <summary>
/// The "MoECluster:Gateway" section: who may call the gateway and how large a request may be. Every limit is
/// checked before anything is allocated from a size the request claims.
/// </summary>
public sealed class GatewayOptions
{
    public const int DefaultMaxRequestBytes = 64 << 20;
    public const int DefaultMaxTokensPerRequest = 8192;
    public const int DefaultMaxJsonDepth = 8;

    /// <summary>
    /// Accepted API keys (<c>MoECluster__Gateway__ApiKeys__0=...</c>). With any key configured (here or in
    /// <see cref="ApiKeysFile"/>), every endpoint but /health, /alive, /v2/health/live and /v2/health/ready needs one; with none, the gateway is open.
    /// </summary>
    public List<string> ApiKeys { get; init; } = [];

    /// <summary>A file with one API key per line (blank lines and lines starting with # are ignored), so keys need not sit in the environment or on a command line.</summary>
    public string? ApiKeysFile { get; set; }

    /// <summary>Largest request body, in bytes: 413 beyond (checked from Content-Length and while reading).</summary>
    public int MaxRequestBytes { get; set; } = DefaultMaxRequestBytes;

    /// <summary>Most hidden-state rows (tokens) one forward request may carry: 413 beyond.</summary>
    public int MaxTokensPerRequest { get; set; } = DefaultMaxTokensPerRequest;

    /// <summary>Deepest nesting of a JSON body (the body itself needs 3): 400 beyond.</summary>
    public int MaxJsonDepth { get; set; } = DefaultMaxJsonDepth;

    /// <summary>
    /// Most HTTP connections the silo holds at once (Kestrel's MaxConcurrentConnections); a connection beyond is closed
    /// as soon as it is accepted. Never more than three quarters of the process's open-file limit, so that connections
    /// cannot take the file handles the silo needs for itself.
    /// </summary>
    public int MaxConnections { get; set; } = 10_000;

    /// <summary>
    /// Most HTTP connections from one client address (IPv4 address, or /64 prefix of an IPv6 address); a connection
    /// beyond is closed as soon as it is accepted. 0 = no per-client limit (for a gateway behind a proxy, whose
    /// connections all come from the proxy's address).
    /// </summary>
    public int MaxConnectionsPerClient { get; set; } = 256;

    /// <summary>Most connections upgraded to another protocol (WebSockets; Kestrel's MaxConcurrentUpgradedConnections).</summary>
    public int MaxUpgradedConnections { get; set; } = 100;

    /// <summary>How long an idle keep-alive connection stays open (Kestrel's KeepAliveTimeout).</summary>
    public double KeepAliveTimeoutSeconds { get; set; } = 60;

    /// <summary>How long a client may take to send a request's headers (Kestrel's RequestHeadersTimeout).</summary>
    public double RequestHeadersTimeoutSeconds { get; set; } = 10;

    /// <summary>Most forward requests admitted at once (reading their body, queued for a router, or forwarded): 503 beyond.</summary>
    public int MaxRequestsInFlight { get; set; } = 512;

    /// <summary>
    /// Most request-body bytes held at once, over every forward request: a request reserves its Content-Length (a
    /// chunked one <see cref="MaxRequestBytes"/>) before its body is read, and gets 503 when the reservation does not fit.
    /// At least <see cref="MaxRequestBytes"/>.
    /// </summary>
    public long MaxBodyBytesInFlight { get; set; } = 256L << 20;

    /// <summary>How long reading one request's body may take (its budget is held meanwhile): 408 beyond.</summary>
    public double BodyReadTimeoutSeconds { get; set; } = 60;

    /// <summary>Most tokens the routers of this front-end forward at once; a request waits in the queue until its tokens fit. At least <see cref="MaxTokensPerRequest"/>.</summary>
    public int MaxTokensInFlight { get; set; } = DefaultMaxTokensPerRequest;

    /// <summary>Most tokens waiting in the queue in front of the routers: 503 for a request that does not fit.</summary>
    public int MaxQueuedTokens { get; set; } = DefaultMaxTokensPerRequest;

    /// <summary>How long a request may wait in the queue in front of the routers: 503 beyond.</summary>
    public double QueueTimeoutSeconds { get; set; } = 10;
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

/// <summary>
/// Hedging of shard calls ("MoECluster:ShardHedging"): when a shard call has not answered within a delay derived from
/// that shard's recent latency, the same (idempotent) request goes to the shard's alternate — the same experts, loaded
/// on demand by the alternates' grain service of the next expert silo — and the first answer wins; the shard then
/// prefers its alternate for a while. This bounds what a hung silo (alive to TCP, answering nothing) costs a request,
/// long before membership declares it dead.
/// </summary>
public sealed class ShardHedgingOptions
{
    /// <summary>Turns hedging off (calls then wait for membership to declare a hung silo dead).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// The hedge delay is this many times the shard's expected latency for the call's rows (its recent mean plus four
    /// deviations, scaled up for a batch larger than usual). A shard without a latency sample yet (its first call,
    /// which loads its weights) is not hedged.
    /// </summary>
    public double LatencyMultiplier { get; set; } = 4;

    /// <summary>Never hedge sooner than this (a GC pause or a busy core must not double the work).</summary>
    public double MinDelayMilliseconds { get; set; } = 1000;

    /// <summary>Never wait longer than this before hedging.</summary>
    public double MaxDelayMilliseconds { get; set; } = 30000;

    /// <summary>After its alternate answered an overdue call, a shard's calls go to the alternate first for this long.</summary>
    public double PreferAlternateSeconds { get; set; } = 10;

    /// <summary>An alternate that has served nothing for this long is dropped (its weights are freed).</summary>
    public double AlternateIdleSeconds { get; set; } = 60;
}

/// <summary>
/// Continuous batching at the expert shards ("MoECluster:ShardBatching", see Grains/ShardBatcher): requests that arrive
/// while a shard computes go into its next grouped pass together, up to these bounds. A lone request larger than them
/// still runs (alone; <see cref="Wire.WireLimits"/> bound one request). The queue itself is bounded too
/// (<see cref="MaxQueuedRequests"/>, <see cref="MaxQueuedBytes"/>): beyond, the shard refuses at once
/// (<see cref="Dispatch.ShardBusyException"/>, a 429 with Retry-After at the gateway) instead of holding the rows.
/// </summary>
public sealed class ShardBatchingOptions
{
    public const int DefaultMaxRows = 4096;

    public const long DefaultMaxBytes = 256L << 20;

    public const int DefaultMaxQueuedRequests = 256;

    public const long DefaultMaxQueuedBytes = 512L << 20;

    /// <summary>Most rows (tokens routed to the shard) in one pass.</summary>
    public int MaxRows { get; set; } = DefaultMaxRows;

    /// <summary>Most bytes one pass holds: 4 · width · (rows + routed pairs) — its fp32 rows and one expert output per pair.</summary>
    public long MaxBytes { get; set; } = DefaultMaxBytes;

    /// <summary>Most requests waiting for the next pass (the pass in progress not counted); an empty queue always takes one.</summary>
    public int MaxQueuedRequests { get; set; } = DefaultMaxQueuedRequests;

    /// <summary>Most bytes the waiting requests hold (4 · width · (rows + pairs) each, as <see cref="MaxBytes"/>).</summary>
    public long MaxQueuedBytes { get; set; } = DefaultMaxQueuedBytes;
}

/// <summary>
/// Batching at the front-end ("MoECluster:FrontEndBatching", see Requests/ForwardBatcher): concurrent requests for the same
/// model, layer (or the whole stack) and wire type that arrive while a forward of theirs runs share the next forward — one
/// gate, W_down, W_up and shared-expert GEMM over all their tokens, one message per shard carrying the rows of all of
/// them. A lone request starts at once. One forward per (model, layer or stack, wire) is in flight per front-end silo.
/// </summary>
public sealed class FrontEndBatchingOptions
{
    /// <summary>Off: every request runs its own forward and sends its own messages (as before front-end batching).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// Most tokens one forward merges; 0 (the default): MoECluster:Gateway:MaxTokensPerRequest. At most that limit, so that
    /// a batch's message to a shard is never larger than a lone request of the most tokens makes. A lone request larger
    /// than this still runs (alone).
    /// </summary>
    public int MaxTokens { get; set; }

    /// <summary>
    /// Most forwards of one (model, layer or stack, wire) in flight at once on a front-end silo (1 to 16; default 1). With 2 a
    /// request that arrives while one forward runs starts the second at once: one forward's gate and projections overlap the
    /// other's wait for the shards, at the cost of smaller batches.
    /// </summary>
    public int MaxBatchesInFlight { get; set; } = 1;

    /// <summary>The bound in effect: <see cref="MaxTokens"/>, or the gateway's token limit when it is 0.</summary>
    public int EffectiveMaxTokens(GatewayOptions gateway)
    {
        ArgumentNullException.ThrowIfNull(gateway);
        return MaxTokens > 0 ? MaxTokens : gateway.MaxTokensPerRequest;
    }
}

/// <summary>
/// Load-aware placement ("MoECluster:Balancing", see Balancing/ExpertPlacementGrain): from the tokens each expert
/// received over a sliding window, the replica planner chooses which experts to replicate and where; the new shards load
/// and warm before any router sends them rows, then every silo's routers switch to the new tables.
/// </summary>
public sealed class BalancingOptions
{
    /// <summary>Replicas beyond one per expert, per MoE layer (the memory budget, in experts); -1 (the default): an eighth of the layer's experts.</summary>
    public int RedundantExperts { get; set; } = -1;

    /// <summary>The window of measured routing the planner reads, in seconds (every router's tokens per expert over it).</summary>
    public double WindowSeconds { get; set; } = 60;

    /// <summary>A layer whose most loaded expert silo is within this factor of the mean is left as it is.</summary>
    public double LeaveAloneBelow { get; set; } = 1.10;

    /// <summary>How often each silo checks for a new placement of its models (the routers switch within it), in seconds.</summary>
    public double RefreshSeconds { get; set; } = 1;

    /// <summary>Re-plan every this many seconds on the front-end silos; 0 (the default): only on demand (POST /v1/admin/rebalance).</summary>
    public double PeriodSeconds { get; set; }

    /// <summary>
    /// The memory budget in bytes instead: each expert silo may hold this many bytes of replicas, spread evenly over the
    /// model's MoE layers (a layer gets ⌊budget ÷ layers ÷ one expert's bytes⌋ replicas per silo); 0 (the default): not
    /// set, <see cref="RedundantExperts"/> decides. Set one of the two.
    /// </summary>
    public long ReplicaBytesPerSilo { get; set; }

    /// <summary>The budget for a layer of <paramref name="experts"/> experts: <see cref="RedundantExperts"/>, or experts ÷ 8.</summary>
    public int EffectiveRedundantExperts(int experts) => RedundantExperts >= 0 ? RedundantExperts : experts / 8;

    /// <summary>
    /// The budget for one layer on <paramref name="silos"/> expert silos, in extra replicas: from <see cref="ReplicaBytesPerSilo"/>
    /// when set (replicas per silo from the bytes of one expert, <paramref name="expertBytes"/>, asked only then; the
    /// layer's share of the budget being 1 ÷ <paramref name="moeLayers"/>), otherwise <see cref="EffectiveRedundantExperts(int)"/>.
    /// </summary>
    public int EffectiveRedundantExperts(int experts, int silos, int moeLayers, Func<long> expertBytes)
    {
        ArgumentNullException.ThrowIfNull(expertBytes);
        if (ReplicaBytesPerSilo <= 0)
        {
            return EffectiveRedundantExperts(experts);
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(silos, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(moeLayers, 1);
        long bytes = expertBytes();
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1, nameof(expertBytes));
        long perSilo = ReplicaBytesPerSilo / moeLayers / bytes;
        return (int)Math.Min(perSilo * silos, (long)experts * (silos - 1));
    }
}

public sealed class ModelEntry
{
    public string Path { get; set; } = string.Empty;
}

using System.Globalization;
using Microsoft.Extensions.Options;
using MoECluster.Wire;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// Checks every key of the "MoECluster" section that can be wrong, once, when the silo starts (registered with
/// ValidateOnStart by <see cref="MoeClusterSiloExtensions.AddMoeCluster"/>): a bad key fails the start with one line per
/// key that names it (<c>MoECluster:ShardsPerLayer = 0: expected at least 1</c>) and what it allows, instead of failing
/// the first request. Pins are checked by their own validator.
/// </summary>
public sealed class MoeClusterOptionsValidator : IValidateOptions<MoeClusterOptions>
{
    /// <summary>The longest delay Polly's retry accepts (its base and its cap).</summary>
    private const double MaxRetryDelayMilliseconds = 86_400_000;

    public ValidateOptionsResult Validate(string? name, MoeClusterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var failures = new List<string>();

        void Require(bool ok, string key, object? value, string expected)
        {
            if (!ok)
            {
                failures.Add(string.Create(CultureInfo.InvariantCulture, $"{MoeClusterOptions.Section}:{key} = {Show(value)}: expected {expected}"));
            }
        }

        Require(options.ShardsPerLayer >= 1, nameof(options.ShardsPerLayer), options.ShardsPerLayer, "an integer of at least 1");
        Require(WireCodecs.TryParse(options.DefaultWire, out _), nameof(options.DefaultWire), options.DefaultWire, $"one of {WireCodecs.NameList}");
        Require(options.DefaultWireDispatch is null || WireCodecs.TryParse(options.DefaultWireDispatch, out _), nameof(options.DefaultWireDispatch), options.DefaultWireDispatch,
            $"one of {WireCodecs.NameList} (or unset: {nameof(options.DefaultWire)})");
        Require(options.DefaultWireCombine is null || WireCodecs.TryParse(options.DefaultWireCombine, out _), nameof(options.DefaultWireCombine), options.DefaultWireCombine,
            $"one of {WireCodecs.NameList} (or unset: {nameof(options.DefaultWire)})");
        Require(options.RequestTimeoutSeconds > 0 && double.IsFinite(options.RequestTimeoutSeconds), nameof(options.RequestTimeoutSeconds), options.RequestTimeoutSeconds, "seconds, more than 0");
        Require(options.ExpectedExpertSilos >= 0, nameof(options.ExpectedExpertSilos), options.ExpectedExpertSilos, "0 (not configured) or more");
        Require(ComputeBackends.IsKnown(options.Compute.Backend), "Compute:Backend", options.Compute.Backend, $"one of {string.Join(", ", ComputeBackends.Names)}");

        ValidateModels(options, Require);
        ValidateRetry(options.ShardRetry, Require);
        ValidateHedging(options.ShardHedging, Require);
        ValidateBatching(options.ShardBatching, Require);
        ValidateFrontEndBatching(options.FrontEndBatching, options.Gateway, Require);
        ValidateBalancing(options.Balancing, Require);
        ValidateWireLimits(options.WireLimits, Require);
        ValidateGateway(options.Gateway, Require);
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private delegate void Requirement(bool ok, string key, object? value, string expected);

    private static void ValidateModels(MoeClusterOptions options, Requirement require)
    {
        foreach (var (id, entry) in options.Models)
        {
            require(entry is not null && !string.IsNullOrWhiteSpace(entry.Path), $"Models:{id}:Path", entry?.Path, "the directory of the model (config.json and its safetensors)");
        }

        if (options.DefaultModel is string model)
        {
            require(options.Models.ContainsKey(model), nameof(options.DefaultModel), model,
                options.Models.Count == 0 ? "no default model while no model is configured (MoECluster:Models:<id>:Path)" : $"one of the configured models: {string.Join(", ", options.Models.Keys)}");
        }
    }

    private static void ValidateRetry(ShardRetryOptions retry, Requirement require)
    {
        const string Prefix = nameof(MoeClusterOptions.ShardRetry) + ":";
        require(retry.MaxAttempts >= 2, Prefix + nameof(retry.MaxAttempts), retry.MaxAttempts, "2 or more (the first call and at least one retry)");
        require(retry.BaseDelayMilliseconds is >= 0 and <= MaxRetryDelayMilliseconds, Prefix + nameof(retry.BaseDelayMilliseconds), retry.BaseDelayMilliseconds,
            "milliseconds, 0 to 86400000 (one day)");
        require(retry.MaxDelayMilliseconds >= retry.BaseDelayMilliseconds && retry.MaxDelayMilliseconds <= MaxRetryDelayMilliseconds, Prefix + nameof(retry.MaxDelayMilliseconds),
            retry.MaxDelayMilliseconds, string.Create(CultureInfo.InvariantCulture, $"milliseconds, at least {MoeClusterOptions.Section}:{Prefix}{nameof(retry.BaseDelayMilliseconds)} ({retry.BaseDelayMilliseconds}) and at most 86400000"));
    }

    private static void ValidateBatching(ShardBatchingOptions batching, Requirement require)
    {
        const string Prefix = nameof(MoeClusterOptions.ShardBatching) + ":";
        require(batching.MaxRows >= 1, Prefix + nameof(batching.MaxRows), batching.MaxRows, "rows, 1 or more (1: no two requests share a pass)");
        require(batching.MaxBytes >= 1 << 20, Prefix + nameof(batching.MaxBytes), batching.MaxBytes, "bytes, 1048576 (1 MiB) or more");
        require(batching.MaxQueuedRequests >= 1, Prefix + nameof(batching.MaxQueuedRequests), batching.MaxQueuedRequests, "requests, 1 or more (an empty queue always takes one)");
        require(batching.MaxQueuedBytes >= 1, Prefix + nameof(batching.MaxQueuedBytes), batching.MaxQueuedBytes, "bytes, 1 or more (an empty queue always takes one request, however large)");
    }

    private static void ValidateFrontEndBatching(FrontEndBatchingOptions batching, GatewayOptions gateway, Requirement require)
    {
        const string Prefix = nameof(MoeClusterOptions.FrontEndBatching) + ":";
        require(batching.MaxTokens == 0 || (batching.MaxTokens >= 1 && batching.MaxTokens <= gateway.MaxTokensPerRequest), Prefix + nameof(batching.MaxTokens), batching.MaxTokens,
            string.Create(CultureInfo.InvariantCulture,
                $"tokens, 0 (the gateway's limit) or 1 to {MoeClusterOptions.Section}:{nameof(MoeClusterOptions.Gateway)}:{nameof(GatewayOptions.MaxTokensPerRequest)} ({gateway.MaxTokensPerRequest}): a batch's message to a shard is never larger than a lone request of the most tokens makes"));
        require(batching.MaxBatchesInFlight is >= 1 and <= 16, Prefix + nameof(batching.MaxBatchesInFlight), batching.MaxBatchesInFlight, "forwards, 1 to 16");
    }

    private static void ValidateBalancing(BalancingOptions balancing, Requirement require)
    {
        const string Prefix = nameof(MoeClusterOptions.Balancing) + ":";
        require(balancing.RedundantExperts >= -1, Prefix + nameof(balancing.RedundantExperts), balancing.RedundantExperts, "experts per layer, 0 or more (-1: an eighth of the layer's experts)");
        require(balancing.ReplicaBytesPerSilo >= 0, Prefix + nameof(balancing.ReplicaBytesPerSilo), balancing.ReplicaBytesPerSilo, "bytes of replicas per expert silo, 0 or more (0: not set)");
        require(balancing.ReplicaBytesPerSilo == 0 || balancing.RedundantExperts < 0, Prefix + nameof(balancing.ReplicaBytesPerSilo), balancing.ReplicaBytesPerSilo,
            $"a budget in bytes or {Prefix}{nameof(balancing.RedundantExperts)} ({balancing.RedundantExperts.ToString(CultureInfo.InvariantCulture)}), not both");
        require(balancing.WindowSeconds is >= 1 and <= 86_400, Prefix + nameof(balancing.WindowSeconds), balancing.WindowSeconds, "seconds, 1 to 86400");
        require(balancing.LeaveAloneBelow is >= 1 and <= 100, Prefix + nameof(balancing.LeaveAloneBelow), balancing.LeaveAloneBelow, "a factor, 1 to 100");
        require(balancing.RefreshSeconds is >= 0.05 and <= 3_600, Prefix + nameof(balancing.RefreshSeconds), balancing.RefreshSeconds, "seconds, 0.05 to 3600");
        require(balancing.PeriodSeconds == 0 || balancing.PeriodSeconds is >= 1 and <= 86_400, Prefix + nameof(balancing.PeriodSeconds), balancing.PeriodSeconds, "seconds, 0 (on demand only) or 1 to 86400");
    }

    private static void ValidateHedging(ShardHedgingOptions hedging, Requirement require)
    {
        const string Prefix = nameof(MoeClusterOptions.ShardHedging) + ":";
        require(hedging.LatencyMultiplier > 0 && double.IsFinite(hedging.LatencyMultiplier), Prefix + nameof(hedging.LatencyMultiplier), hedging.LatencyMultiplier, "more than 0");
        require(hedging.MinDelayMilliseconds >= 0 && double.IsFinite(hedging.MinDelayMilliseconds), Prefix + nameof(hedging.MinDelayMilliseconds), hedging.MinDelayMilliseconds, "milliseconds, 0 or more");
        require(hedging.MaxDelayMilliseconds >= hedging.MinDelayMilliseconds && double.IsFinite(hedging.MaxDelayMilliseconds), Prefix + nameof(hedging.MaxDelayMilliseconds),
            hedging.MaxDelayMilliseconds, string.Create(CultureInfo.InvariantCulture, $"milliseconds, at least {MoeClusterOptions.Section}:{Prefix}{nameof(hedging.MinDelayMilliseconds)} ({hedging.MinDelayMilliseconds})"));
        require(hedging.PreferAlternateSeconds >= 0 && double.IsFinite(hedging.PreferAlternateSeconds), Prefix + nameof(hedging.PreferAlternateSeconds), hedging.PreferAlternateSeconds, "seconds, 0 or more");
        require(hedging.AlternateIdleSeconds > 0 && double.IsFinite(hedging.AlternateIdleSeconds), Prefix + nameof(hedging.AlternateIdleSeconds), hedging.AlternateIdleSeconds, "seconds, more than 0");
    }

    private static void ValidateWireLimits(WireLimits limits, Requirement require)
    {
        const string Prefix = nameof(MoeClusterOptions.WireLimits) + ":";
        require(limits.MaxMessageBytes >= 1, Prefix + nameof(limits.MaxMessageBytes), limits.MaxMessageBytes, "at least 1");
        require(limits.MaxRows >= 1, Prefix + nameof(limits.MaxRows), limits.MaxRows, "at least 1");
        require(limits.MaxWidth >= 1, Prefix + nameof(limits.MaxWidth), limits.MaxWidth, "at least 1");
        require(limits.MaxExperts >= 1, Prefix + nameof(limits.MaxExperts), limits.MaxExperts, "at least 1");
        require(limits.MaxPairsPerRow is >= 1 and <= 255, Prefix + nameof(limits.MaxPairsPerRow), limits.MaxPairsPerRow, "1 to 255 (the count is one byte)");
    }

    private static void ValidateGateway(GatewayOptions g, Requirement require)
    {
        const string Prefix = nameof(MoeClusterOptions.Gateway) + ":";
        string K(string key) => Prefix + key;
        string Full(string key) => $"{MoeClusterOptions.Section}:{Prefix}{key}";
        require(g.MaxRequestBytes >= 1, K(nameof(g.MaxRequestBytes)), g.MaxRequestBytes, "at least 1");
        require(g.MaxTokensPerRequest >= 1, K(nameof(g.MaxTokensPerRequest)), g.MaxTokensPerRequest, "at least 1");
        require(g.MaxJsonDepth >= 3, K(nameof(g.MaxJsonDepth)), g.MaxJsonDepth, "at least 3 (the request body itself needs 3)");
        require(g.MaxConnections >= 1, K(nameof(g.MaxConnections)), g.MaxConnections, "at least 1");
        require(g.MaxConnectionsPerClient >= 0, K(nameof(g.MaxConnectionsPerClient)), g.MaxConnectionsPerClient, "0 (no limit) or more");
        require(g.MaxUpgradedConnections >= 0, K(nameof(g.MaxUpgradedConnections)), g.MaxUpgradedConnections, "0 or more");
        require(g.KeepAliveTimeoutSeconds > 0 && double.IsFinite(g.KeepAliveTimeoutSeconds), K(nameof(g.KeepAliveTimeoutSeconds)), g.KeepAliveTimeoutSeconds, "seconds, more than 0");
        require(g.RequestHeadersTimeoutSeconds > 0 && double.IsFinite(g.RequestHeadersTimeoutSeconds), K(nameof(g.RequestHeadersTimeoutSeconds)), g.RequestHeadersTimeoutSeconds, "seconds, more than 0");
        require(g.MaxRequestsInFlight >= 1, K(nameof(g.MaxRequestsInFlight)), g.MaxRequestsInFlight, "at least 1");
        require(g.MaxBodyBytesInFlight >= g.MaxRequestBytes, K(nameof(g.MaxBodyBytesInFlight)), g.MaxBodyBytesInFlight,
            string.Create(CultureInfo.InvariantCulture, $"at least {Full(nameof(g.MaxRequestBytes))} ({g.MaxRequestBytes}): a request of the largest size must be admissible"));
        require(g.BodyReadTimeoutSeconds > 0 && double.IsFinite(g.BodyReadTimeoutSeconds), K(nameof(g.BodyReadTimeoutSeconds)), g.BodyReadTimeoutSeconds, "seconds, more than 0");
        require(g.MaxTokensInFlight >= g.MaxTokensPerRequest, K(nameof(g.MaxTokensInFlight)), g.MaxTokensInFlight,
            string.Create(CultureInfo.InvariantCulture, $"at least {Full(nameof(g.MaxTokensPerRequest))} ({g.MaxTokensPerRequest}): a request of the most tokens must be forwardable"));
        require(g.MaxQueuedTokens >= 0, K(nameof(g.MaxQueuedTokens)), g.MaxQueuedTokens, "0 or more");
        require(g.QueueTimeoutSeconds > 0 && double.IsFinite(g.QueueTimeoutSeconds), K(nameof(g.QueueTimeoutSeconds)), g.QueueTimeoutSeconds, "seconds, more than 0");
    }

    private static string Show(object? value) => value switch
    {
        null => "(empty)",
        string s when string.IsNullOrWhiteSpace(s) => "(empty)",
        string s => s.Length <= 64 ? s : s[..64] + "...",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? string.Empty,
    };
}

using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Routing;
using MoECluster.Cluster.Telemetry;
using MoECluster.Wire;
using Orleans.Concurrency;

namespace MoECluster.Cluster.Grains;

/// <summary>
/// The router of one model (key = model id): identity and the request deadline; the work is
/// <see cref="DistributedMoeLayer"/>'s. A reentrant stateless worker: each front-end silo runs local activations,
/// and one activation interleaves requests while they wait for shards.
/// </summary>
[StatelessWorker]
[Reentrant]
public sealed class MoeRouterGrain(ModelCatalog catalog, IOptions<MoeClusterOptions> options, TrafficLedger ledger, ShardCallHedging hedging, IShardAlternateClient alternates, ILocalSiloDetails silo, ILogger<MoeRouterGrain> logger) : Grain, IMoeRouterGrain
{
    private DistributedMoeLayer? _layer;

    public async Task<ForwardReply> Forward(ForwardCall call, CancellationToken cancellationToken = default)
    {
        string modelId = this.GetPrimaryKeyString();
        var model = catalog.Get(modelId);
        int d = model.Config.HiddenSize;
        if (call?.Hidden is null || call.Wire is null)
        {
            throw new ArgumentException("a forward call needs hidden states and a wire type");
        }

        // An Orleans client holding the cluster's certificate is authenticated, not trusted with unbounded work: the
        // router enforces the gateway's limits itself.
        int maxTokens = options.Value.Gateway.MaxTokensPerRequest;
        if (call.Tokens > maxTokens)
        {
            throw new ArgumentException($"{call.Tokens} tokens exceed MoECluster:Gateway:MaxTokensPerRequest ({maxTokens})");
        }

        if (call.Tokens < 1 || call.Hidden.Length != (long)call.Tokens * d)
        {
            throw new ArgumentException($"hidden states must be [tokens >= 1, {d}]; got {call.Hidden.Length} values for {call.Tokens} tokens");
        }

        int bad = Array.FindIndex(call.Hidden, v => !float.IsFinite(v));
        if (bad >= 0)
        {
            throw new ArgumentException($"hidden_states[{bad / d}][{bad % d}] is not a finite number");
        }

        if (!WireDTypes.TryParse(call.Wire, out WireDType wire))
        {
            throw new ArgumentException($"wire '{call.Wire}' is not one of fp32, bf16, fp16");
        }

        if (call.Layer is int l && !model.Config.MoeLayers.Contains(l))
        {
            throw new ArgumentException($"layer {l} is not an MoE layer of {modelId}; MoE layers: {string.Join(", ", model.Config.MoeLayers)}");
        }

        _layer ??= new DistributedMoeLayer(modelId, catalog, GrainFactory, ledger, silo.SiloAddress.ToString(), new ShardCallRetry(options.Value.ShardRetry, logger), hedging, alternates, options.Value.WireLimits);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(options.Value.RequestTimeoutSeconds));
        try
        {
            if (call.Layer is int layer)
            {
                var (y, traffic) = await _layer.ForwardLayerAsync(layer, call.Hidden, call.Tokens, wire, deadline.Token);
                return new ForwardReply(y, [traffic]);
            }

            var (stack, layers) = await _layer.ForwardStackAsync(call.Hidden, call.Tokens, wire, deadline.Token);
            return new ForwardReply(stack, layers);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"request to {modelId} exceeded its deadline of {options.Value.RequestTimeoutSeconds} s");
        }
    }
}

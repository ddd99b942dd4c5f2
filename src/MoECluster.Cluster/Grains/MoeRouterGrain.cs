using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Layers;
using MoECluster.Wire;
using Orleans.Concurrency;

namespace MoECluster.Cluster.Grains;

/// <summary>
/// The router of one model (key = model id): identity, the request's checks and its deadline; the work is the model
/// library's one pipeline (<see cref="MoeModel.ForwardLayerAsync"/>, <see cref="MoeModel.ForwardStackAsync"/>) with the
/// cluster's <see cref="OrleansExpertDispatcher"/>. A reentrant stateless worker: each front-end silo runs local
/// activations, and one activation interleaves requests while they wait for shards.
/// </summary>
[StatelessWorker]
[Reentrant]
public sealed class MoeRouterGrain(ModelCatalog catalog, ShardCalls shards) : Grain, IMoeRouterGrain
{
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
        int maxTokens = catalog.Options.Gateway.MaxTokensPerRequest;
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

        var dispatcher = shards.Dispatcher(modelId, wire);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(catalog.Options.RequestTimeoutSeconds));
        try
        {
            // The math runs on the thread pool, off this activation's scheduler; the shard calls are made from there.
            float[] y = await Task.Run(
                () => call.Layer is int layer
                    ? model.ForwardLayerAsync(layer, call.Hidden, call.Tokens, dispatcher, deadline.Token)
                    : model.ForwardStackAsync(call.Hidden, call.Tokens, dispatcher, cancellationToken: deadline.Token),
                deadline.Token);
            return new ForwardReply(y, dispatcher.Traffic);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"request to {modelId} exceeded its deadline of {catalog.Options.RequestTimeoutSeconds} s");
        }
    }
}

using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Hosting;
using MoECluster.Cluster.Requests;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using Orleans.Concurrency;

namespace MoECluster.Cluster.Grains;

/// <summary>
/// The router of one model (key = model id): identity, the request's checks and its deadline; the work is the model
/// library's one pipeline (<see cref="MoeModel.ForwardLayerAsync"/>, <see cref="MoeModel.ForwardStackAsync"/>) with the
/// cluster's <see cref="OrleansExpertDispatcher"/>, run by the silo's <see cref="FrontEndBatcher"/>: concurrent requests for
/// the same layer (or stack) and wire type share one forward. A reentrant stateless worker: each front-end silo runs local
/// activations, and one activation interleaves requests while they wait for shards.
/// </summary>
[StatelessWorker]
[Reentrant]
public sealed partial class MoeRouterGrain(ModelCatalog catalog, IOptions<MoeClusterOptions> options, FrontEndBatcher batcher, ILogger<MoeRouterGrain> logger) : Grain, IMoeRouterGrain
{
    public async Task<ForwardReply> Forward(ForwardCall call, CancellationToken cancellationToken = default)
    {
        string modelId = this.GetPrimaryKeyString();
        if (call?.Hidden is null)
        {
            throw new ForwardRequestException("a forward call needs hidden states");
        }

        var model = catalog.Get(modelId);

        // An Orleans client holding the cluster's certificate is authenticated, not trusted with unbounded work: the
        // router checks what the gateway checks, with the same validator and messages.
        ForwardRequestValidator.Validate(modelId, model.Config, call.Layer, call.Hidden, call.Tokens, call.WireDispatch, call.WireCombine, options.Value.Gateway.MaxTokensPerRequest);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(options.Value.RequestTimeoutSeconds));
        try
        {
            // The math runs on the thread pool, off this activation's scheduler; the shard calls are made from there.
            return await batcher.ForwardAsync(modelId, call, deadline.Token);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            LogTimeout(modelId, LayerName(call.Layer), call.Tokens, options.Value.RequestTimeoutSeconds);
            throw new TimeoutException($"request to {modelId} exceeded its deadline of {options.Value.RequestTimeoutSeconds} s");
        }
        catch (ShardFailureException e)
        {
            LogShardFailure(e, modelId, LayerName(call.Layer), call.Tokens);
            throw;
        }
        catch (Exception e) when (!IsExpected(e))
        {
            LogUnexpected(e, modelId, LayerName(call.Layer), call.Tokens);
            throw;
        }
    }

    /// <summary>What is no bug of the router: the client's input (refused or too large), cancellation, the cluster's own state (Orleans).</summary>
    internal static bool IsExpected(Exception e) =>
        e is ForwardRequestException or ForwardOverflowException or ShardBusyException || ShardCallRetry.IsCancellationOrClusterState(e);

    private static string LayerName(int? layer) => layer is int l ? l.ToString(System.Globalization.CultureInfo.InvariantCulture) : "stack";

    [LoggerMessage(Level = LogLevel.Warning, Message = "forward on {Model} (layer {Layer}, {Tokens} tokens) exceeded its deadline of {Seconds} s")]
    private partial void LogTimeout(string model, string layer, int tokens, double seconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "forward on {Model} (layer {Layer}, {Tokens} tokens) failed at an expert shard, retries spent")]
    private partial void LogShardFailure(Exception exception, string model, string layer, int tokens);

    [LoggerMessage(Level = LogLevel.Error, Message = "forward on {Model} (layer {Layer}, {Tokens} tokens) failed unexpectedly in the router")]
    private partial void LogUnexpected(Exception exception, string model, string layer, int tokens);
}

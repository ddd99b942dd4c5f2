using System.Globalization;
using MoECluster.Cluster.Contracts;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;
using MoECluster.Wire;

namespace MoECluster.Cluster.Grains;

/// <summary>
/// What an expert shard does with one request, wherever it runs (its grain, or its alternate in
/// <see cref="ShardAlternateService"/>): decode and validate the ShardRequest against the shard, compute the partial
/// sums with the model library — through the shard's <see cref="ShardBatcher"/>, so that requests queued at the shard share
/// one grouped pass — and encode this caller's ShardResponse (its RequestId and response dtype; ComputeMicroseconds is the
/// pass's). Decoding and checks stay per request: a bad request fails only its caller. Bad input is an <see cref="ArgumentException"/> naming the shard;
/// a result outside float32 or the reply's element type a <see cref="ForwardOverflowException"/>; a full queue a
/// <see cref="Dispatch.ShardBusyException"/>, before the request is decoded when the queue is already at a bound.
/// </summary>
internal static class ShardComputation
{
    /// <summary>The shard's batcher over its experts' grouped pass, with the bounds of MoECluster:ShardBatching.</summary>
    public static ShardBatcher Batcher(GroupedExperts experts, Hosting.ShardBatchingOptions bounds, Action<ShardBatch>? batched) =>
        new(experts.Width, (z, pairs) => experts.ComputePartials(z, pairs), bounds, batched);

    public static async Task<WireBytes> ComputeAsync(ExpertShard shard, ShardBatcher batcher, WireBytes request, WireLimits limits, string silo, CancellationToken cancellationToken)
    {
        // A full queue refuses before the request is decoded (the batcher checks again, exactly, before queueing).
        batcher.ThrowIfFull();
        ShardRequest r;
        try
        {
            r = WireFormat.DecodeRequest(request.Bytes, limits);
        }
        catch (WireFormatException e)
        {
            throw new ArgumentException($"shard {shard.Key}: {e.Message}");
        }

        int[] addressed = WireFormat.ReadShardExperts(r);
        if (r.Model != shard.Model || r.Layer != shard.Layer || !shard.Experts.AsSpan().SequenceEqual(addressed))
        {
            throw new ArgumentException(
                $"shard {shard.Key} holds experts {shard.Experts} of {shard.Model} layer {shard.Layer}; the request addresses experts {ExpertSet.Of(addressed)} of {r.Model} layer {r.Layer}");
        }

        if (batcher.Width != r.Rows.Width)
        {
            throw new ArgumentException($"shard {shard.Key}: rows are {r.Rows.Width} wide, the experts take {batcher.Width}");
        }

        int bad = r.Rows.FindNonFinite();
        if (bad >= 0)
        {
            throw new ArgumentException($"shard {shard.Key}: row {bad / r.Rows.Width} has a non-finite value at column {bad % r.Rows.Width}");
        }

        float[] z = r.Rows.Decode();

        int rows = r.Rows.Rows;
        RoutedPairs pairs = WireFormat.ReadPairs(r);
        var batch = await batcher.ComputeAsync(z, pairs, cancellationToken);
        float[] partials = batch.Partials;
        var encoded = ActivationBlock.Encode(partials, rows, batcher.Width, r.ResponseDType);
        if (encoded.FindNonFinite() >= 0)
        {
            // The partial sums are finite (ComputePartials checked them): they do not fit the reply's element type.
            throw new ForwardOverflowException(string.Create(CultureInfo.InvariantCulture,
                $"layer {shard.Layer}: the experts' partial sums reach {FloatRange.MaxAbs(partials):G3}, beyond the range of the {WireCodecs.Get(r.ResponseDType).Name} wire ({WireCodecs.Get(r.ResponseDType).Range})"));
        }

        var response = new ShardResponse
        {
            Partials = encoded,
            Silo = silo,
            RequestId = r.RequestId,
            ComputeMicroseconds = batch.Batch.Microseconds,
        };
        return new WireBytes(WireFormat.Serialize(response));
    }
}

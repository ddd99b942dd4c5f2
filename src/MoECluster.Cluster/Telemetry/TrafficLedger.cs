using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Hosting;
using MoECluster.Model.Balancing;
using MoECluster.Wire;
using TagList = System.Diagnostics.TagList;

namespace MoECluster.Cluster.Telemetry;

/// <summary>
/// This silo's byte accounting. Routers record the payload they send (dispatch) and receive (combine) per layer,
/// mode and silo pair; a MeterListener records what Orleans itself put on the socket (the
/// <c>orleans-messaging-sent-messages-size</c> histogram of this silo's meter Microsoft.Orleans, silo-to-silo, plus the
/// 8-byte length frame Orleans writes before each message), and a connection middleware beneath TLS counts the
/// bytes Orleans' connections actually wrote to TCP (<see cref="TcpByteCounting"/>: TLS records and handshakes
/// included). Everything is also published as metrics on the meter <c>MoECluster</c>.
/// </summary>
public sealed class TrafficLedger : IDisposable
{
    public const string MeterName = "MoECluster";
    public const string OrleansMeterName = "Microsoft.Orleans";
    public const string OrleansSentSizeInstrument = "orleans-messaging-sent-messages-size";

    /// <summary>Orleans frames every message with two 4-byte lengths (header, body) that its size histogram leaves out.</summary>
    public const int OrleansFrameBytes = 8;

    private readonly object _gate = new();
    private readonly Dictionary<(string Model, string Mode, int Layer, string Direction, string From, string To, string Wire), long[]> _payload = [];
    private readonly Dictionary<(string Model, int Layer), LayerState> _layers = [];
    private readonly Dictionary<(string To, string Direction), long[]> _socket = [];
    private readonly Dictionary<string, ShardDescription> _shards = [];
    private readonly Dictionary<string, long[]> _tcp = [];
    private readonly Dictionary<string, long[]> _shardBatches = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Model, string Target, WirePair Wire), long[]> _frontEndBatches = [];
    private readonly MeterListener _listener;
    private readonly Counter<long> _payloadBytes;
    private readonly Counter<long> _messageBytes;
    private readonly Counter<long> _predictedBytes;
    private readonly Counter<long> _tokens;
    private readonly Counter<long> _socketBytes;
    private readonly Counter<long> _tcpBytes;
    private readonly Histogram<int> _batchRequests;
    private readonly Histogram<int> _batchRows;
    private readonly Histogram<int> _frontEndRequests;
    private readonly Histogram<int> _frontEndTokens;
    private readonly Histogram<double> _forwardDuration;
    private readonly Histogram<double> _shardCallDuration;
    private readonly Histogram<double> _shardPassDuration;

    private readonly TimeSpan _loadWindow;
    private readonly long _started = System.Diagnostics.Stopwatch.GetTimestamp();

    public TrafficLedger(IMeterFactory meters, IOptions<SiloIdentity> identity, IOptions<MoeClusterOptions>? options = null)
    {
        Identity = identity.Value;
        _loadWindow = TimeSpan.FromSeconds((options?.Value ?? new MoeClusterOptions()).Balancing.WindowSeconds);
        Meter meter = meters.Create(MeterName);
        _payloadBytes = meter.CreateCounter<long>("moecluster.routed.payload.bytes", "By", "Activation payload bytes routed, by model, mode, layer, direction, silo pair and the direction's wire type");
        _messageBytes = meter.CreateCounter<long>("moecluster.routed.message.bytes", "By", "Encoded MessagePack message bytes routed (payload + envelope)");
        _predictedBytes = meter.CreateCounter<long>("moecluster.routed.predicted.bytes", "By", "Payload bytes predicted from the routing plans (rows x width x element size)");
        _tokens = meter.CreateCounter<long>("moecluster.tokens", "{token}", "Tokens served per model and layer");
        _socketBytes = meter.CreateCounter<long>("moecluster.orleans.socket.bytes", "By", "Silo-to-silo bytes Orleans sent (message + 8-byte frame), by remote silo");
        _tcpBytes = meter.CreateCounter<long>("moecluster.tcp.bytes", "By", "Bytes Orleans' connections wrote to TCP (beneath TLS: records and handshakes included), by connection kind (silo, gateway)");

        _batchRequests = meter.CreateHistogram("moecluster.shard.batch.requests", "{request}", "Requests merged into one grouped pass of an expert shard (continuous batching), by model and layer", advice: SizeBuckets);
        _batchRows = meter.CreateHistogram("moecluster.shard.batch.rows", "{row}", "Rows of one grouped pass of an expert shard, by model and layer", advice: SizeBuckets);
        _frontEndRequests = meter.CreateHistogram("moecluster.frontend.batch.requests", "{request}", "Requests merged into one forward at a front-end router (front-end batching), by model and target (layer or stack)", advice: SizeBuckets);
        _frontEndTokens = meter.CreateHistogram("moecluster.frontend.batch.tokens", "{token}", "Tokens of one forward at a front-end router, by model and target (layer or stack)", advice: SizeBuckets);
        _forwardDuration = meter.CreateHistogram("moecluster.forward.duration", "s", "Duration of one forward at a front-end router (a batch of requests under front-end batching), by model, mode and target (layer or stack)", advice: DurationBuckets);
        _shardCallDuration = meter.CreateHistogram("moecluster.shard.call.duration", "s", "Latency of one router-to-shard call (request sent to partial sums received, retries and hedges included), by model, mode, layer and the shard's silo", advice: DurationBuckets);
        _shardPassDuration = meter.CreateHistogram("moecluster.shard.pass.duration", "s", "Compute time of one grouped pass of an expert shard, by model and layer", advice: DurationBuckets);

        // Tokens per expert, from the same tallies /stats reports (models[].layers[].expert_tokens): one series per
        // expert that received a token, observed at collection, so the hot path adds nothing per routed pair.
        meter.CreateObservableCounter("moecluster.expert.tokens", ObserveExpertTokens, "{token}", "Tokens routed to each expert (one per token and chosen expert), by model, mode, layer and expert");

        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                // Only this silo's Orleans meter (Orleans creates it with the silo's IMeterFactory): a process that hosts
                // several silos (a test cluster) must not count its neighbours' messages as its own.
                if (instrument.Meter.Name == OrleansMeterName && instrument.Name == OrleansSentSizeInstrument && instrument.Meter.Scope == meters)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        _listener.SetMeasurementEventCallback<int>(OnOrleansMessageSent);
        _listener.Start();
    }

    /// <summary>The instrument of the tokens per expert: one series per (model, layer, expert) that received a token.</summary>
    public const string ExpertTokensInstrument = "moecluster.expert.tokens";

    /// <summary>
    /// Series <see cref="ExpertTokensInstrument"/> may have (OpenTelemetry's default of 2000 per metric is less than one
    /// Nemotron-3 Super's 40 MoE layers × 512 experts).
    /// </summary>
    public const int ExpertTokensCardinalityLimit = 65_536;

    /// <summary>Bucket bounds of the batch-size histograms (requests, rows, tokens): powers of two up to 65,536.</summary>
    private static readonly InstrumentAdvice<int> SizeBuckets = new() { HistogramBucketBoundaries = [.. Enumerable.Range(0, 17).Select(i => 1 << i)] };

    /// <summary>Bucket bounds of the duration histograms, in seconds: 0.5 ms to 60 s.</summary>
    private static readonly InstrumentAdvice<double> DurationBuckets = new()
    {
        HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    };

    public SiloIdentity Identity { get; }

    /// <summary>
    /// Records one answered layer batch at once: its tokens, routing (expert counts, predicted bytes) and the payload of
    /// every shard call (dispatch and combine). A snapshot therefore never sees a batch half counted, so measured and
    /// predicted bytes per token agree at every instant, also while requests are in flight.
    /// </summary>
    public void RecordBatch(LayerBatch batch, ReadOnlySpan<int> experts, IReadOnlyList<ShardCallTraffic> calls)
    {
        var layerTags = new TagList { { "model", batch.Model }, { "mode", batch.Mode }, { "layer", batch.Layer } };
        _predictedBytes.Add(batch.PredictedPayloadBytes, layerTags);
        _tokens.Add(batch.Tokens, layerTags);
        foreach (var call in calls)
        {
            AddPayloadMetrics(batch, "dispatch", call.From, call.To, batch.Wire.Dispatch.Name, call.DispatchPayloadBytes, call.DispatchMessageBytes);
            AddPayloadMetrics(batch, "combine", call.To, call.From, batch.Wire.Combine.Name, call.CombinePayloadBytes, call.CombineMessageBytes);
            _shardCallDuration.Record(call.Seconds, new TagList { { "model", batch.Model }, { "mode", batch.Mode }, { "layer", batch.Layer }, { "silo", call.To } });
        }

        lock (_gate)
        {
            if (!_layers.TryGetValue((batch.Model, batch.Layer), out LayerState? state))
            {
                _layers[(batch.Model, batch.Layer)] = state = new LayerState(batch.Mode, batch.HiddenSize, batch.Width, batch.TopK, new long[batch.ExpertCount])
                {
                    Window = new ExpertLoadWindow(batch.ExpertCount, _loadWindow),
                };
            }

            state.Window.Add(experts, System.Diagnostics.Stopwatch.GetElapsedTime(_started));

            state.Tokens += batch.Tokens;
            state.Batches++;
            state.Predicted += batch.PredictedPayloadBytes;
            foreach (int e in experts)
            {
                state.ExpertTokens[e]++;
            }

            foreach (var call in calls)
            {
                AddPayload(batch, "dispatch", call.From, call.To, batch.Wire.Dispatch.Name, call.DispatchPayloadBytes, call.DispatchMessageBytes, call.Rows);
                AddPayload(batch, "combine", call.To, call.From, batch.Wire.Combine.Name, call.CombinePayloadBytes, call.CombineMessageBytes, call.Rows);
            }
        }
    }

    /// <summary>An Orleans connection of this silo opened (<see cref="TcpByteCounting.Silo"/> or <see cref="TcpByteCounting.Gateway"/>).</summary>
    public void TcpConnectionOpened(string kind)
    {
        lock (_gate)
        {
            Tcp(kind)[1]++;
        }
    }

    /// <summary>Bytes an Orleans connection of this silo handed to the TCP transport.</summary>
    public void TcpBytesWritten(string kind, long bytes)
    {
        _tcpBytes.Add(bytes, new KeyValuePair<string, object?>("kind", kind));
        lock (_gate)
        {
            Tcp(kind)[0] += bytes;
        }
    }

    /// <summary>
    /// One grouped pass of an expert shard (or of an alternate, by its alternate key) ran: how many requests it merged and
    /// their rows (continuous batching, <see cref="ShardBatcher"/>).
    /// </summary>
    public void RecordShardBatch(string shardKey, string model, int layer, ShardBatch batch)
    {
        var tags = new TagList { { "model", model }, { "layer", layer } };
        _batchRequests.Record(batch.Requests, tags);
        _batchRows.Record(batch.Rows, tags);
        _shardPassDuration.Record(batch.Microseconds / 1e6, tags);
        lock (_gate)
        {
            if (!_shardBatches.TryGetValue(shardKey, out long[]? v))
            {
                _shardBatches[shardKey] = v = new long[8];
            }

            v[0]++;
            v[1] += batch.Requests;
            v[2] += batch.Rows;
            v[3] += batch.Requests > 1 ? 1 : 0;
            v[4] = Math.Max(v[4], batch.Requests);
            v[5] = Math.Max(v[5], batch.Rows);
            v[6] += batch.Microseconds;
            v[7] += batch.Pairs;
        }
    }

    /// <summary>
    /// One forward at this front-end ran for <paramref name="model"/>'s <paramref name="target"/> (a layer index or "stack")
    /// in <paramref name="wire"/>: how many requests it merged and their tokens (front-end batching, Requests/ForwardBatcher).
    /// </summary>
    public void RecordFrontEndBatch(string model, string target, WirePair wire, Requests.FrontEndBatch batch, string? mode = null)
    {
        ArgumentNullException.ThrowIfNull(wire);
        var tags = new TagList { { "model", model }, { "target", target } };
        _frontEndRequests.Record(batch.Requests, tags);
        _frontEndTokens.Record(batch.Tokens, tags);
        if (mode is not null)
        {
            RecordForward(model, mode, target, batch.Microseconds / 1e6);
        }

        lock (_gate)
        {
            if (!_frontEndBatches.TryGetValue((model, target, wire), out long[]? v))
            {
                _frontEndBatches[(model, target, wire)] = v = new long[6];
            }

            v[0]++;
            v[1] += batch.Requests;
            v[2] += batch.Tokens;
            v[3] += batch.Requests > 1 ? 1 : 0;
            v[4] = Math.Max(v[4], batch.Requests);
            v[5] = Math.Max(v[5], batch.Tokens);
        }
    }

    /// <summary>One forward at this front-end (under front-end batching, one batch of requests) took <paramref name="seconds"/>.</summary>
    public void RecordForward(string model, string mode, string target, double seconds) =>
        _forwardDuration.Record(seconds, new TagList { { "model", model }, { "mode", mode }, { "target", target } });

    /// <summary>
    /// Tokens per expert of each MoE layer of <paramref name="model"/> this silo's routers sent over the last
    /// MoECluster:Balancing:WindowSeconds: what the replica planner reads.
    /// </summary>
    public IReadOnlyList<LayerExpertLoad> ExpertLoads(string model)
    {
        var now = System.Diagnostics.Stopwatch.GetElapsedTime(_started);
        lock (_gate)
        {
            return [.. _layers.Where(l => l.Key.Model == model).OrderBy(l => l.Key.Layer).Select(l => new LayerExpertLoad(l.Key.Layer, l.Value.Window.Sum(now)))];
        }
    }

    /// <summary>The keys of the shards (and alternates) active on this silo.</summary>
    public IReadOnlyList<string> ActiveShards()
    {
        lock (_gate)
        {
            return [.. _shards.Keys];
        }
    }

    public void ShardActivated(ShardDescription shard)
    {
        lock (_gate)
        {
            _shards[shard.Key] = shard;
        }
    }

    public void ShardDeactivated(string key)
    {
        lock (_gate)
        {
            _shards.Remove(key);
        }
    }

    public SiloTraffic Snapshot(string silo)
    {
        lock (_gate)
        {
            return new SiloTraffic(
                silo,
                Identity.Name,
                Identity.Role,
                [.. _payload.Select(p => new PayloadTraffic(p.Key.Model, p.Key.Mode, p.Key.Layer, p.Key.Direction, p.Key.From, p.Key.To, p.Value[0], p.Value[1], p.Value[2], p.Value[3], p.Key.Wire))],
                [.. _layers.Select(l => new LayerTotals(l.Key.Model, l.Value.Mode, l.Key.Layer, l.Value.HiddenSize, l.Value.Width, l.Value.TopK, l.Value.Tokens, l.Value.Batches, l.Value.Predicted, [.. l.Value.ExpertTokens]))],
                [.. _socket.Select(s => new SocketTraffic(silo, s.Key.To, s.Key.Direction, s.Value[0], s.Value[1], s.Value[0] * OrleansFrameBytes))],
                [.. _shards.Values],
                [.. _tcp.Select(t => new TcpTraffic(silo, t.Key, t.Value[1], t.Value[0], Identity.Tls))],
                [.. _shardBatches.Select(b => new ShardBatchTotals(b.Key, silo, b.Value[0], b.Value[1], b.Value[2], b.Value[3], b.Value[4], b.Value[5], b.Value[6], b.Value[7]))],
                [.. _frontEndBatches.Select(b => new FrontEndBatchTotals(b.Key.Model, b.Key.Target, b.Key.Wire.Text, silo, b.Value[0], b.Value[1], b.Value[2], b.Value[3], b.Value[4], b.Value[5], b.Key.Wire.Dispatch.Name, b.Key.Wire.Combine.Name))]);
        }
    }

    /// <summary>The counters of one connection kind; the caller holds the lock.</summary>
    private long[] Tcp(string kind)
    {
        if (!_tcp.TryGetValue(kind, out long[]? v))
        {
            _tcp[kind] = v = new long[2];
        }

        return v;
    }

    private void OnOrleansMessageSent(Instrument instrument, int bytes, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
    {
        string? connection = null, remote = null, direction = null;
        foreach (var tag in tags)
        {
            switch (tag.Key)
            {
                case "ConnectionDirection":
                    connection = tag.Value?.ToString();
                    break;
                case "silo":
                    remote = tag.Value?.ToString();
                    break;
                case "MessageDirection":
                    direction = tag.Value?.ToString();
                    break;
            }
        }

        if (connection != "SiloToSilo" || remote is null)
        {
            return;
        }

        _socketBytes.Add(bytes + OrleansFrameBytes, new TagList { { "to", remote }, { "message_direction", direction } });
        lock (_gate)
        {
            var key = (remote, direction ?? "?");
            if (!_socket.TryGetValue(key, out long[]? v))
            {
                _socket[key] = v = new long[2];
            }

            v[0]++;
            v[1] += bytes;
        }
    }

    public void Dispose() => _listener.Dispose();

    private List<Measurement<long>> ObserveExpertTokens()
    {
        var measurements = new List<Measurement<long>>();
        lock (_gate)
        {
            foreach (var ((model, layer), state) in _layers)
            {
                for (int e = 0; e < state.ExpertTokens.Length; e++)
                {
                    if (state.ExpertTokens[e] > 0)
                    {
                        measurements.Add(new Measurement<long>(state.ExpertTokens[e], new TagList { { "model", model }, { "mode", state.Mode }, { "layer", layer }, { "expert", e } }));
                    }
                }
            }
        }

        return measurements;
    }

    private void AddPayloadMetrics(LayerBatch batch, string direction, string from, string to, string wire, long payloadBytes, long messageBytes)
    {
        var tags = new TagList
        {
            { "model", batch.Model }, { "mode", batch.Mode }, { "layer", batch.Layer }, { "direction", direction }, { "from", from }, { "to", to }, { "wire", wire },
        };
        _payloadBytes.Add(payloadBytes, tags);
        _messageBytes.Add(messageBytes, tags);
    }

    /// <summary>Adds one direction of a shard call to the payload table; the caller holds the lock.</summary>
    private void AddPayload(LayerBatch batch, string direction, string from, string to, string wire, long payloadBytes, long messageBytes, int rows)
    {
        var key = (batch.Model, batch.Mode, batch.Layer, direction, from, to, wire);
        if (!_payload.TryGetValue(key, out long[]? v))
        {
            _payload[key] = v = new long[4];
        }

        v[0] += payloadBytes;
        v[1] += messageBytes;
        v[2]++;
        v[3] += rows;
    }

    private sealed class LayerState(string mode, int hiddenSize, int width, int topK, long[] expertTokens)
    {
        public string Mode { get; } = mode;

        public int HiddenSize { get; } = hiddenSize;

        public int Width { get; } = width;

        public int TopK { get; } = topK;

        public long[] ExpertTokens { get; } = expertTokens;

        public required ExpertLoadWindow Window { get; init; }

        public long Tokens { get; set; }

        public long Batches { get; set; }

        public long Predicted { get; set; }
    }
}

/// <summary>
/// One layer batch of one model as the router planned it: tokens, widths, the payload bytes its plan predicts, and the wire
/// type of each direction (the payload table and metrics tag each direction's bytes with its own).
/// </summary>
public sealed record LayerBatch(string Model, string Mode, int Layer, int HiddenSize, int Width, int TopK, int ExpertCount, int Tokens, long PredictedPayloadBytes, WirePair Wire);

/// <summary>One answered shard call of a batch: the router's silo (From), the shard's silo (To), the bytes each way, the rows, the call's latency.</summary>
public readonly record struct ShardCallTraffic(string From, string To, long DispatchPayloadBytes, long DispatchMessageBytes, long CombinePayloadBytes, long CombineMessageBytes, int Rows, double Seconds = 0);

/// <summary>This silo's name and role, as configured (Orleans:Name, Orleans:Metadata:moecluster-role), and whether its Orleans connections use TLS.</summary>
public sealed class SiloIdentity
{
    public bool Tls { get; set; }

    public string Name { get; set; } = Environment.MachineName;

    public string Role { get; set; } = SiloRoles.Frontend;
}

using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Grains;
using MoECluster.Cluster.Requests;
using MoECluster.Model.Configuration;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;
using MoECluster.Wire;
using Orleans.Serialization;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The forward request's one validator (gateway and router), the refusal that crosses the grain boundary as its own
/// type, the gateway's answer to what a router throws, and the traffic record's one mapping.
/// </summary>
public sealed class ForwardRequestTests
{
    private const string Model = "lat";
    private const int MaxTokens = 8;

    private static readonly MoeModelConfig Config = ModelPresets.Get("tiny").Build();

    private static ForwardRequestException Refuse(int? layer, float[] hidden, int tokens, WireDType wire = WireDType.F32) =>
        Assert.Throws<ForwardRequestException>(() => ForwardRequestValidator.Validate(Model, Config, layer, hidden, tokens, wire, MaxTokens));

    private static float[] Rows(int tokens) => [.. Enumerable.Range(0, tokens * Config.HiddenSize).Select(i => MathF.Sin(i + 1))];

    [Fact]
    public void A_well_formed_request_passes_for_a_layer_and_for_the_stack()
    {
        foreach (var codec in WireCodecs.All)
        {
            ForwardRequestValidator.Validate(Model, Config, Config.MoeLayers[0], Rows(3), 3, codec.Id, MaxTokens);
            ForwardRequestValidator.Validate(Model, Config, null, Rows(MaxTokens), MaxTokens, codec.Id, MaxTokens);
        }
    }

    [Fact]
    public void Each_problem_is_refused_with_its_kind_and_message()
    {
        int d = Config.HiddenSize;
        int notMoe = Enumerable.Range(0, Config.NumHiddenLayers).First(l => !Config.MoeLayers.Contains(l));
        var e = Refuse(notMoe, Rows(1), 1);
        Assert.Equal(ForwardRequestProblem.UnknownLayer, e.Problem);
        Assert.Equal($"layer {notMoe} is not an MoE layer of {Model}; MoE layers: {string.Join(", ", Config.MoeLayers)}", e.Message);

        e = Refuse(null, Rows(MaxTokens + 1), MaxTokens + 1);
        Assert.Equal(ForwardRequestProblem.TooLarge, e.Problem);
        Assert.Equal($"hidden_states has {MaxTokens + 1} rows: a request may carry at most {MaxTokens} tokens (MoECluster:Gateway:MaxTokensPerRequest)", e.Message);

        e = Refuse(null, [], 0);
        Assert.Equal(ForwardRequestProblem.Invalid, e.Problem);
        Assert.Equal("hidden_states has 0 rows: a request carries at least one token", e.Message);

        e = Refuse(null, new float[2 * (d - 1)], 2);
        Assert.Equal($"hidden_states rows are {d - 1} wide; model {Model} has hidden_size {d}", e.Message);

        e = Refuse(null, new float[(2 * d) + 1], 2);
        Assert.Equal($"hidden_states holds {(2 * d) + 1} values, not 2 rows of hidden_size {d}", e.Message);

        e = Refuse(null, Rows(2), 2, (WireDType)200);
        Assert.Equal($"wire undefined dtype 200 is not one of {WireCodecs.NameList}", e.Message);

        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            float[] x = Rows(3);
            x[(2 * d) + 5] = bad;
            e = Refuse(null, x, 3);
            Assert.Equal(ForwardRequestProblem.Invalid, e.Problem);
            Assert.Equal("hidden_states[2][5] is not finite", e.Message);
        }
    }

    [Theory]
    [InlineData(ForwardRequestProblem.Invalid, 400)]
    [InlineData(ForwardRequestProblem.TooLarge, 413)]
    [InlineData(ForwardRequestProblem.UnknownLayer, 404)]
    public void A_refused_request_crosses_the_grain_boundary_as_itself_and_the_gateway_answers_its_status(ForwardRequestProblem problem, int status)
    {
        var serializer = new ServiceCollection().AddSerializer().BuildServiceProvider().GetRequiredService<Serializer>();
        Exception sent = new ForwardRequestException(problem, "hidden_states[0][1] is not finite");
        var received = Assert.IsType<ForwardRequestException>(serializer.Deserialize<Exception>(serializer.SerializeToArray(sent)));
        Assert.Equal(problem, received.Problem);
        Assert.Equal(sent.Message, received.Message);
        Assert.Equal((status, sent.Message), GatewayEndpoints.RouterError(received));
    }

    [Fact]
    public void The_wire_crosses_the_grain_boundary_typed()
    {
        var serializer = new ServiceCollection().AddSerializer().BuildServiceProvider().GetRequiredService<Serializer>();
        foreach (var dispatch in WireCodecs.All)
        {
            foreach (var combine in WireCodecs.All)
            {
                var call = new ForwardCall(3, [1f, 2f], 1, new WirePair(dispatch, combine));
                var received = serializer.Deserialize<ForwardCall>(serializer.SerializeToArray(call));
                Assert.NotNull(received);
                Assert.Equal((dispatch.Id, combine.Id), (received.WireDispatch, received.WireCombine));
                Assert.Equal(new WirePair(dispatch, combine), received.Wire);
                Assert.Equal(call.Hidden, received.Hidden);
            }
        }
    }

    [Fact]
    public void An_internal_ArgumentException_is_a_500_not_a_400()
    {
        var (status, message) = GatewayEndpoints.RouterError(new ArgumentException("ShardsPerLayer must be at least 1"));
        Assert.Equal(500, status);
        Assert.Contains("ShardsPerLayer must be at least 1", message, StringComparison.Ordinal);
        Assert.Equal(500, GatewayEndpoints.RouterError(new InvalidOperationException("bug")).Status);
        Assert.Equal(500, GatewayEndpoints.RouterError(new ArgumentOutOfRangeException("x")).Status);
    }

    [Fact]
    public void The_router_failures_keep_their_statuses()
    {
        Assert.Equal(422, GatewayEndpoints.RouterError(new ForwardOverflowException("too large", null, null)).Status);
        Assert.Equal(502, GatewayEndpoints.RouterError(new ShardFailureException("shard broke")).Status);
        Assert.Equal(504, GatewayEndpoints.RouterError(new TimeoutException("deadline")).Status);
        Assert.Equal(503, GatewayEndpoints.RouterError(new SiloUnavailableException("gone")).Status);
    }

    [Fact]
    public void The_gateways_traffic_record_has_every_field_of_the_routers_and_the_mapping_copies_each()
    {
        var source = typeof(LayerTraffic).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.Name != "EqualityContract").ToArray();
        var target = typeof(GatewayLayerTraffic).GetProperties(BindingFlags.Public | BindingFlags.Instance).ToArray();
        Assert.Equal(source.Select(p => p.Name).Order(), target.Select(p => p.Name).Order());

        // Distinct values in every field, built through the record's constructor (whatever fields it has).
        var constructor = typeof(LayerTraffic).GetConstructors().Single(c => c.GetParameters().Length == source.Length);
        int next = 1;
        object[] args = [.. constructor.GetParameters().Select(p => Value(p.ParameterType, next++))];
        var traffic = (LayerTraffic)constructor.Invoke(args);
        var mapped = GatewayTraffic.From(traffic);
        foreach (var property in source)
        {
            var copied = target.Single(p => p.Name == property.Name);
            Assert.Equal(property.PropertyType, copied.PropertyType);
            Assert.Equal(property.GetValue(traffic), copied.GetValue(mapped));
        }
    }

    private static readonly Dictionary<Type, Func<int, object>> Values = new()
    {
        [typeof(string)] = seed => "s" + seed,
        [typeof(int)] = seed => seed,
        [typeof(long)] = seed => 1000L + seed,
        [typeof(double)] = seed => seed + 0.5,
    };

    private static object Value(Type type, int seed) =>
        Values.TryGetValue(type, out var make) ? make(seed) : throw new InvalidOperationException($"no test value for {type}: extend Values");
}

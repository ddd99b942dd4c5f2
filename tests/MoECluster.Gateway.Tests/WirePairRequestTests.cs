using System.Text;
using MoECluster.Gateway.KServe;
using MoECluster.Wire;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// The wire fields of a forward request (v1 JSON, v1 MessagePack, KServe v2 parameters): <c>wire</c> sets both directions,
/// <c>wire_dispatch</c> and <c>wire_combine</c> override theirs, the silo's default fills a direction none names, unknown
/// names are refused with the registry's message, each field at most once.
/// </summary>
public sealed class WirePairRequestTests
{
    private static readonly GatewayBodyLimits Limits = new(MaxTokens: 4, MaxJsonDepth: 8, new WireLimits(MaxWidth: 16));

    /// <summary>A silo default that is neither the request's nor bf16 both ways, so a direction taken from it shows.</summary>
    private static readonly WirePair SiloDefault = WirePair.Of(WireDType.F16, WireDType.F32);

    private static ForwardInput Json(string fields) =>
        GatewayRequestParser.ParseJson(Encoding.UTF8.GetBytes($$"""{{{fields}}"hidden_states":[[1,2]]}"""), Limits);

    private static ForwardInput MessagePack(string? wire, string? dispatch, string? combine) =>
        GatewayRequestParser.ParseMessagePack(WireFormat.Serialize(new GatewayForwardRequest
        {
            Wire = wire,
            WireDispatch = dispatch,
            WireCombine = combine,
            HiddenStates = ActivationBlock.Encode([1f, 2f], 1, 2, WireDType.F32),
        }), Limits);

    private static ForwardInput KServe(string parameters) =>
        KServeInferParser.Parse(Encoding.UTF8.GetBytes($$"""{"parameters":{{{parameters}}},"inputs":[{"name":"hidden_states","datatype":"FP32","shape":[1,2],"data":[1,2]}]}"""), null, "lat", Limits).Input;

    private static WirePair Resolved(ForwardInput input)
    {
        Assert.True(input.TryResolveWire(SiloDefault, out var pair, out string? error), error);
        return pair;
    }

    public static TheoryData<string, string, string?, string?, string?> Cases() => new()
    {
        // JSON fields, expected pair, and the same request as MessagePack fields (wire, dispatch, combine).
        { string.Empty, "fp16/fp32", null, null, null },
        { "\"wire\":\"bf16\",", "bf16/bf16", "bf16", null, null },
        { "\"wire_dispatch\":\"fp32\",", "fp32/fp32", null, "fp32", null },
        { "\"wire_combine\":\"bf16\",", "fp16/bf16", null, null, "bf16" },
        { "\"wire\":\"bf16\",\"wire_dispatch\":\"fp32\",", "fp32/bf16", "bf16", "fp32", null },
        { "\"wire_combine\":\"fp16\",\"wire\":\"bf16\",", "bf16/fp16", "bf16", null, "fp16" },
        { "\"wire\":\"fp32\",\"wire_dispatch\":\"bf16\",\"wire_combine\":\"fp16\",", "bf16/fp16", "fp32", "bf16", "fp16" },
        { "\"wire_dispatch\":null,\"wire_combine\":\"F16\",", "fp16/fp16", null, null, "fp16" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_specific_field_overrides_wire_and_the_silo_default_fills_the_rest_in_every_body(string json, string expected, string? wire, string? dispatch, string? combine)
    {
        Assert.Equal(expected, Resolved(Json(json)).Text);
        Assert.Equal(expected, Resolved(MessagePack(wire, dispatch, combine)).Text);
        Assert.Equal(expected, Resolved(KServe(json.TrimEnd(','))).Text);
    }

    [Fact]
    public void The_fields_are_read_as_sent()
    {
        var input = Json("\"wire\":\"bf16\",\"wire_dispatch\":\"fp32\",\"wire_combine\":\"fp16\",");
        Assert.Equal(("bf16", "fp32", "fp16"), (input.Wire, input.WireDispatch, input.WireCombine));
        input = MessagePack(null, "fp32", null);
        Assert.Equal((null, "fp32", null), (input.Wire, input.WireDispatch, input.WireCombine));
    }

    [Theory]
    [InlineData("\"wire\":\"fp8\",", "wire 'fp8' is not one of ")]
    [InlineData("\"wire_dispatch\":\"fp8\",", "wire_dispatch: wire 'fp8' is not one of ")]
    [InlineData("\"wire_combine\":\"int4\",", "wire_combine: wire 'int4' is not one of ")]
    [InlineData("\"wire\":\"fp8\",\"wire_dispatch\":\"fp32\",\"wire_combine\":\"fp32\",", "wire 'fp8' is not one of ")]
    public void An_unknown_name_is_refused_with_the_registrys_message(string json, string message)
    {
        foreach (var input in new[] { Json(json), KServe(json.TrimEnd(',')) })
        {
            Assert.False(input.TryResolveWire(SiloDefault, out var pair, out string? error));
            Assert.Null(pair);
            Assert.Equal(message + WireCodecs.NameList, error);
        }

        Assert.False(MessagePack(null, null, "int4").TryResolveWire(SiloDefault, out _, out string? e));
        Assert.Equal("wire_combine: " + WireCodecs.NotAWire("int4"), e);
    }

    [Theory]
    [InlineData("wire_dispatch")]
    [InlineData("wire_combine")]
    public void Each_field_is_allowed_once(string field)
    {
        var e = Assert.Throws<GatewayRequestException>(() => Json($"\"{field}\":\"fp32\",\"{field}\":\"bf16\","));
        Assert.Equal(400, e.StatusCode);
        Assert.Contains($"duplicate key '{field}'", e.Message, StringComparison.Ordinal);

        e = Assert.Throws<GatewayRequestException>(() => KServe($"\"{field}\":\"fp32\",\"{field}\":\"bf16\""));
        Assert.Equal(400, e.StatusCode);
        Assert.Contains($"parameters.{field}", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("wire_dispatch")]
    [InlineData("wire_combine")]
    public void A_field_that_is_not_a_string_is_refused(string field)
    {
        var e = Assert.Throws<GatewayRequestException>(() => Json($"\"{field}\":5,"));
        Assert.Equal(400, e.StatusCode);
        Assert.Contains(field, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_duplicate_messagepack_key_is_refused()
    {
        // {"wire_dispatch": "fp32", "wire_dispatch": "bf16", "hidden_states": ...}: the bounded decoder refuses duplicate keys.
        byte[] good = WireFormat.Serialize(new GatewayForwardRequest { WireDispatch = "fp32", WireCombine = "bf16", HiddenStates = ActivationBlock.Encode([1f, 2f], 1, 2, WireDType.F32) });
        byte[] combineKey = Encoding.UTF8.GetBytes("wire_combine");
        byte[] dispatchKey = Encoding.UTF8.GetBytes("wire_dispatch");
        int at = good.AsSpan().IndexOf(combineKey);
        Assert.True(at > 0);

        // Same length keys are needed to rewrite in place: "wire_combine" (12) vs "wire_dispatch" (13), so rename the
        // combine key's string header and bytes by rebuilding the body.
        var body = new List<byte>(good[..(at - 1)]);
        body.Add((byte)(0xA0 | dispatchKey.Length));
        body.AddRange(dispatchKey);
        body.AddRange(good[(at + combineKey.Length)..]);
        var e = Assert.Throws<GatewayRequestException>(() => GatewayRequestParser.ParseMessagePack(body.ToArray(), Limits));
        Assert.Equal(400, e.StatusCode);
        Assert.Contains("wire_dispatch", e.Message, StringComparison.Ordinal);
    }
}

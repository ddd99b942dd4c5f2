using System.Text;
using MoECluster.Wire;

namespace MoECluster.Gateway.Tests;

/// <summary>Forward request bodies from the network: every refusal is a GatewayRequestException with a 4xx naming the problem and the limit.</summary>
public sealed class GatewayRequestParserTests
{
    private static readonly GatewayBodyLimits Limits = new(MaxTokens: 4, MaxJsonDepth: 8, new WireLimits(MaxWidth: 16));

    private static GatewayRequestException Refuse(string json) =>
        Assert.Throws<GatewayRequestException>(() => GatewayRequestParser.ParseJson(Encoding.UTF8.GetBytes(json), Limits));

    [Fact]
    public void A_valid_body_is_read_row_major_with_any_member_order_and_case()
    {
        var input = GatewayRequestParser.ParseJson("{\"extra\":{\"x\":[1]},\"HIDDEN_STATES\":[[1,2.5],[-3,4e-2]],\"wire\":null,\"Model\":\"lat\"}"u8, Limits);
        Assert.Equal("lat", input.Model);
        Assert.Null(input.Wire);
        Assert.Equal(2, input.Tokens);
        Assert.Equal(2, input.Width);
        Assert.Equal([1f, 2.5f, -3f, 0.04f], input.Hidden);
    }

    [Theory]
    [InlineData("{\"hidden_states\":[]}", 400, "hidden_states is missing or empty")]
    [InlineData("{\"model\":\"lat\"}", 400, "hidden_states is missing or empty")]
    [InlineData("{\"hidden_states\":[[]]}", 400, "hidden_states[0] is empty")]
    [InlineData("{\"hidden_states\":[[1,2],[3]]}", 400, "hidden_states[1] has 1 values; row 0 has 2")]
    [InlineData("{\"hidden_states\":[[1,2],[3,4,5]]}", 400, "hidden_states[1] has more than 2 values; row 0 has 2")]
    [InlineData("{\"hidden_states\":[[1,\"2\"]]}", 400, "hidden_states[0][1] is a string, expected a number")]
    [InlineData("{\"hidden_states\":[[1,1e39]]}", 400, "hidden_states[0][1] is not finite")]
    [InlineData("{\"hidden_states\":[[1],[2],[3],[4],[5]]}", 413, "at most 4 tokens (MoECluster:Gateway:MaxTokensPerRequest)")]
    [InlineData("{\"hidden_states\":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]]}", 400, "MoECluster:WireLimits:MaxWidth = 16")]
    [InlineData("{\"hidden_states\":\"abc\"}", 400, "hidden_states must be an array of rows")]
    [InlineData("{\"hidden_states\":[1,2]}", 400, "hidden_states[0] must be an array of numbers")]
    [InlineData("{\"model\":5,\"hidden_states\":[[1]]}", 400, "model must be a string or null")]
    [InlineData("{\"model\":\"a\",\"model\":\"b\",\"hidden_states\":[[1]]}", 400, "duplicate key 'model'")]
    [InlineData("{\"hidden_states\":[[1]],\"hidden_states\":[[1]]}", 400, "duplicate key 'hidden_states'")]
    [InlineData("[[1]]", 400, "must be an object")]
    [InlineData("{not json", 400, "malformed JSON body")]
    [InlineData("{\"hidden_states\":[[1]]} x", 400, "malformed JSON body")]
    [InlineData("{\"hidden_states\":[[1]],\"x\":[[[[[[[[[1]]]]]]]]]}", 400, "nests deeper than the limit of 8 levels (MoECluster:Gateway:MaxJsonDepth)")]
    [InlineData("{\"model\":\"\\ud800\",\"hidden_states\":[[1]]}", 400, "malformed JSON body")]
    public void Bad_bodies_get_a_4xx_naming_the_problem(string json, int status, string message)
    {
        var error = Refuse(json);
        Assert.Equal(status, error.StatusCode);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Regression (found in review): the JSON body used to be deserialized whole and then copied into a buffer of
    /// rows × (width of row 0) floats before the other rows were checked, so one wide row followed by many empty ones
    /// asked for terabytes. Rows are now checked as they arrive and the buffer grows with the values read.
    /// </summary>
    [Fact]
    public void A_wide_first_row_and_many_empty_rows_are_refused_without_allocating_rows_times_width()
    {
        var limits = new GatewayBodyLimits(MaxTokens: 1 << 20, MaxJsonDepth: 8, new WireLimits());
        var json = new StringBuilder("{\"hidden_states\":[[");
        json.AppendJoin(',', Enumerable.Repeat("1", 60_000)).Append(']');
        for (int i = 0; i < 200_000; i++)
        {
            json.Append(",[]");
        }

        byte[] body = Encoding.UTF8.GetBytes(json.Append("]}").ToString());
        long before = GC.GetAllocatedBytesForCurrentThread();
        var error = Assert.Throws<GatewayRequestException>(() => GatewayRequestParser.ParseJson(body, limits));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(400, error.StatusCode);
        Assert.Contains("hidden_states[1] has 0 values; row 0 has 60000", error.Message, StringComparison.Ordinal);
        Assert.True(allocated < 8L * body.Length, $"a {body.Length}-byte body allocated {allocated} bytes");
    }

    [Fact]
    public void MessagePack_bodies_are_bounded_by_the_token_limit_and_the_wire_limits()
    {
        float[] values = new float[5 * 2];
        byte[] five = WireFormat.Serialize(new GatewayForwardRequest { HiddenStates = ActivationBlock.Encode(values, 5, 2, WireDType.BF16) });
        var tooMany = Assert.Throws<GatewayRequestException>(() => GatewayRequestParser.ParseMessagePack(five, Limits));
        Assert.Equal(413, tooMany.StatusCode);
        Assert.Contains("hidden_states has 5 rows: a request may carry at most 4 tokens", tooMany.Message, StringComparison.Ordinal);

        byte[] wide = WireFormat.Serialize(new GatewayForwardRequest { HiddenStates = ActivationBlock.Encode(new float[17], 1, 17, WireDType.F32) });
        var tooWide = Assert.Throws<GatewayRequestException>(() => GatewayRequestParser.ParseMessagePack(wide, Limits));
        Assert.Equal(400, tooWide.StatusCode);
        Assert.Contains("hidden_states.Width: expected 1..16, got 17", tooWide.Message, StringComparison.Ordinal);

        var empty = Assert.Throws<GatewayRequestException>(() => GatewayRequestParser.ParseMessagePack(
            WireFormat.Serialize(new GatewayForwardRequest { HiddenStates = new ActivationBlock { Rows = 0, Width = 2, Data = [] } }), Limits));
        Assert.Equal(400, empty.StatusCode);
        Assert.Contains("hidden_states.Rows: expected 1..", empty.Message, StringComparison.Ordinal);

        var input = GatewayRequestParser.ParseMessagePack(WireFormat.Serialize(new GatewayForwardRequest { Model = "m", HiddenStates = ActivationBlock.Encode([1f, 2f, 3f, 4f], 2, 2, WireDType.F32) }), Limits);
        Assert.Equal(("m", 2, 2), (input.Model, input.Tokens, input.Width));
        Assert.Equal([1f, 2f, 3f, 4f], input.Hidden);
    }
}

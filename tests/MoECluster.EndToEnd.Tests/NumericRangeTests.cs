using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using MoECluster.Gateway;
using MoECluster.Model.Layers;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// Numbers that stay numbers, through the real three-process cluster: finite inputs whose forward leaves the float32
/// range (or the range of the wire's element type) get a 422 naming the layer, the step and the input's magnitude, in
/// JSON and MessagePack alike — never a 500, never a 200 carrying NaN — and count as rejected, not failed; the stack,
/// whose RMSNorm scales any finite input down, answers them correctly.
/// </summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class NumericRangeTests(ProcessClusterFixture cluster)
{
    private const int Width = 64;

    public static TheoryData<string, float, bool> Inputs() => new()
    {
        { "lat", 1e20f, false },
        { "lat", 1e20f, true },
        { "lat", 3.4e38f, false },
        { "lat", 3.4e38f, true },
        { "std", 1e20f, false },
        { "std", 3.4e38f, true },
    };

    [Theory]
    [MemberData(nameof(Inputs))]
    public async Task A_layer_forward_that_overflows_float32_gets_a_422_naming_the_cause_and_counts_as_rejected(string model, float magnitude, bool json)
    {
        float[] x = Scaled(2, magnitude);
        var (rejected, failed) = await CountersAsync();
        var (status, body) = await PostAsync($"/v1/layers/1/forward", model, "bf16", x, 2, json);
        string error = Error(body);
        Assert.True(status == 422, $"{model} {magnitude:G3} {(json ? "JSON" : "MessagePack")}: expected 422, got {status}: {error}");
        Assert.StartsWith("layer 1: ", error, StringComparison.Ordinal);
        Assert.Contains("float32", error, StringComparison.Ordinal);
        Assert.Contains($"largest magnitude is {magnitude.ToString("G3", CultureInfo.InvariantCulture)}", error, StringComparison.Ordinal);
        Assert.DoesNotContain(model + "/1/", error, StringComparison.Ordinal); // no internal shard key offered as the cause
        var (rejectedAfter, failedAfter) = await CountersAsync();
        Assert.Equal(failed, failedAfter);
        Assert.True(rejectedAfter > rejected, "the 422 was not counted as rejected");
    }

    [Theory]
    [MemberData(nameof(Inputs))]
    public async Task The_stack_answers_inputs_of_any_finite_size_with_the_in_process_result(string model, float magnitude, bool json)
    {
        float[] x = Scaled(3, magnitude);
        var (status, body) = await PostAsync("/v1/forward", model, "bf16", x, 3, json);
        Assert.True(status == 200, $"{model} {magnitude:G3}: expected 200, got {status}: {Encoding.UTF8.GetString(body)}");
        float[] y = json ? JsonRows(body) : GatewayWire.DecodeResponse(body, new WireLimits()).HiddenStates.Decode();
        Assert.All(y, v => Assert.True(float.IsFinite(v)));
        using var reference = MoeModel.Open(model == "lat" ? cluster.LatentPath : cluster.StandardPath);
        double error = Metrics.RelativeError(y, [.. reference.ForwardStack(x, 3).Select(v => (double)v)]);
        Assert.True(error <= 1e-6, $"stack at {magnitude:G3}: relative error {error:E2} against the in-process forward");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Rows_beyond_the_fp16_range_get_a_422_naming_the_wire_and_pass_on_bf16(bool json)
    {
        float[] x = Scaled(2, 1e6f);
        var (status, body) = await PostAsync("/v1/layers/1/forward", "lat", "fp16", x, 2, json);
        string error = Error(body);
        Assert.True(status == 422, $"expected 422, got {status}: {error}");
        Assert.Contains("fp16", error, StringComparison.Ordinal);
        Assert.Contains("65504", error, StringComparison.Ordinal);

        // The same rows on the bf16 wire are in range, and the answer is the in-process one.
        var (ok, answer) = await PostAsync("/v1/layers/1/forward", "lat", "bf16", x, 2, json);
        Assert.True(ok == 200, $"bf16: expected 200, got {ok}: {Error(answer)}");
        float[] y = json ? JsonRows(answer) : GatewayWire.DecodeResponse(answer, new WireLimits()).HiddenStates.Decode();
        using var reference = MoeModel.Open(cluster.LatentPath);
        double relative = Metrics.RelativeError(y, [.. reference.ForwardLayer(1, x, 2).Select(v => (double)v)]);
        Assert.True(relative <= 1e-2, $"bf16 wire vs in-process: {relative:E2}");
    }

    /// <summary>Fresh random rows whose largest |value| is exactly <paramref name="magnitude"/>.</summary>
    private static float[] Scaled(int tokens, float magnitude)
    {
        var rng = new Random();
        float[] x = [.. Enumerable.Range(0, tokens * Width).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
        float peak = x.Max(MathF.Abs);
        return [.. x.Select(v => v / peak * magnitude)];
    }

    private async Task<(long Rejected, long Failed)> CountersAsync()
    {
        var requests = (await cluster.Client.StatsAsync())["gateway"]!["requests"]!;
        return (requests["rejected"]!.GetValue<long>(), requests["failed"]!.GetValue<long>());
    }

    private async Task<(int Status, byte[] Body)> PostAsync(string path, string model, string wire, float[] x, int tokens, bool json)
    {
        HttpContent content;
        if (json)
        {
            var rows = Enumerable.Range(0, tokens).Select(t => "[" + string.Join(",", x.Skip(t * Width).Take(Width).Select(v => v.ToString("R", CultureInfo.InvariantCulture))) + "]");
            content = new StringContent($"{{\"model\":\"{model}\",\"wire\":\"{wire}\",\"hidden_states\":[{string.Join(",", rows)}]}}", Encoding.UTF8, "application/json");
        }
        else
        {
            content = new ByteArrayContent(WireFormat.Serialize(new GatewayForwardRequest { Model = model, Wire = wire, HiddenStates = ActivationBlock.Encode(x, tokens, Width, WireDType.F32) }));
            content.Headers.ContentType = new MediaTypeHeaderValue(GatewayEndpoints.MessagePackContentType);
        }

        using (content)
        {
            using var response = await cluster.Http.PostAsync(path, content);
            return ((int)response.StatusCode, await response.Content.ReadAsByteArrayAsync());
        }
    }

    private static string Error(byte[] body)
    {
        try
        {
            return JsonNode.Parse(body)?["error"]?.GetValue<string>() ?? Encoding.UTF8.GetString(body);
        }
        catch (System.Text.Json.JsonException)
        {
            return Encoding.UTF8.GetString(body);
        }
    }

    private static float[] JsonRows(byte[] body) =>
        [.. JsonNode.Parse(body)!["hidden_states"]!.AsArray().SelectMany(row => row!.AsArray().Select(v => v!.GetValue<float>()))];
}

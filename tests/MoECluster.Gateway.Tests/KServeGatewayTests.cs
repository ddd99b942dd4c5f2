using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using MoECluster.Cluster.Dispatch;
using MoECluster.Cluster.Requests;
using MoECluster.Gateway.KServe;
using MoECluster.Gateway.Live;
using MoECluster.Gateway.Security;
using MoECluster.Model.Numerics;
using MoECluster.ServiceDefaults;
using MoECluster.Wire;

namespace MoECluster.Gateway.Tests;

/// <summary>
/// KServe's Open Inference Protocol v2 on the gateway, against our own /v1 endpoints on the same server: the same
/// answers (number for number, in JSON and in binary tensors), the same refusals and statuses, API keys, health and
/// model metadata; /v1/models in the OpenAI list shape; the OpenAPI document naming every route.
/// </summary>
[Collection(KServeGatewayGroup.Name)]
public sealed class KServeGatewayTests(KServeGatewayFixture gateway)
{
    private HttpClient Http => gateway.Http;

    [Theory]
    [InlineData(KServeGatewayFixture.Latent, false)]
    [InlineData(KServeGatewayFixture.Standard, false)]
    [InlineData(KServeGatewayFixture.Latent, true)]
    public async Task V2_infer_with_a_layer_answers_exactly_what_v1_layer_forward_answers(string model, bool nested)
    {
        var reference = gateway.Reference(model);
        int d = reference.Config.HiddenSize;
        var rng = new Random();
        foreach (int layer in reference.Config.MoeLayers)
        {
            int tokens = rng.Next(2, 20);
            float[] x = Gaussian(tokens * d, rng);
            string[] v1 = await V1NumbersAsync($"/v1/layers/{layer}/forward", model, x, tokens, d);
            gateway.Calls.Clear();
            using var response = await PostJsonAsync($"/v2/models/{model}/infer", V2Body(x, tokens, d, layer.ToString(CultureInfo.InvariantCulture), nested));
            var answer = await JsonAsync(response, HttpStatusCode.OK);
            var output = Assert.Single(answer.RootElement.GetProperty("outputs").EnumerateArray());
            Assert.Equal(model, answer.RootElement.GetProperty("model_name").GetString());
            Assert.Equal(KServeInferParser.TensorName, output.GetProperty("name").GetString());
            Assert.Equal("FP32", output.GetProperty("datatype").GetString());
            Assert.Equal(new[] { tokens, d }, output.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()));
            Assert.Equal(v1, output.GetProperty("data").EnumerateArray().Select(e => e.GetRawText()));

            // The router was asked for that layer (not the stack), with the input as sent.
            var (calledModel, call) = Assert.Single(gateway.Calls);
            Assert.Equal((model, (int?)layer, tokens), (calledModel, call.Layer, call.Tokens));
            Assert.Equal(x, call.Hidden);
        }
    }

    [Fact]
    public async Task V2_infer_without_a_layer_answers_exactly_what_v1_forward_answers_for_the_whole_stack()
    {
        var reference = gateway.Reference(KServeGatewayFixture.Latent);
        int d = reference.Config.HiddenSize;
        float[] x = Gaussian(9 * d, new Random());
        string[] v1 = await V1NumbersAsync("/v1/forward", KServeGatewayFixture.Latent, x, 9, d);
        gateway.Calls.Clear();
        using var response = await PostJsonAsync("/v2/models/latent/infer", V2Body(x, 9, d, layer: null, nested: false));
        var answer = await JsonAsync(response, HttpStatusCode.OK);
        var output = answer.RootElement.GetProperty("outputs")[0];
        Assert.Equal(v1, output.GetProperty("data").EnumerateArray().Select(e => e.GetRawText()));
        Assert.Null(Assert.Single(gateway.Calls).Call.Layer);

        // And it is not what one layer answers: the layer parameter is what selects.
        string[] layer = await V1NumbersAsync($"/v1/layers/{reference.Config.MoeLayers[0]}/forward", KServeGatewayFixture.Latent, x, 9, d);
        Assert.NotEqual(layer, v1);
    }

    [Fact]
    public async Task Binary_tensors_in_and_out_carry_exactly_the_json_answer()
    {
        var reference = gateway.Reference(KServeGatewayFixture.Latent);
        int d = reference.Config.HiddenSize;
        int layer = reference.Config.MoeLayers[^1];
        int tokens = 13;
        float[] x = Gaussian(tokens * d, new Random());
        using var json = await PostJsonAsync("/v2/models/latent/infer", V2Body(x, tokens, d, layer.ToString(CultureInfo.InvariantCulture), nested: false));
        float[] expected = [.. (await JsonAsync(json, HttpStatusCode.OK)).RootElement.GetProperty("outputs")[0].GetProperty("data").EnumerateArray().Select(e => e.GetSingle())];

        byte[] data = MemoryMarshal.AsBytes(x.AsSpan()).ToArray();
        string header = $$$"""{"id":"req-7","parameters":{"layer":{{{layer}}}},"inputs":[{"name":"hidden_states","shape":[{{{tokens}}},{{{d}}}],"datatype":"FP32","parameters":{"binary_data_size":{{{data.Length}}}}}],"outputs":[{"name":"hidden_states","parameters":{"binary_data":true}}]}""";
        using var binary = await PostBinaryAsync("/v2/models/latent/infer", header, data);
        var (answer, bytes) = await BinaryAnswerAsync(binary);
        Assert.Equal("req-7", answer.RootElement.GetProperty("id").GetString());
        var output = answer.RootElement.GetProperty("outputs")[0];
        Assert.False(output.TryGetProperty("data", out _));
        Assert.Equal(tokens * d * 4, output.GetProperty("parameters").GetProperty("binary_data_size").GetInt32());
        Assert.Equal(expected, MemoryMarshal.Cast<byte, float>(bytes).ToArray());

        // Binary input, JSON output: the same numbers again.
        string jsonOut = header.Replace("\"binary_data\":true", "\"binary_data\":false", StringComparison.Ordinal);
        using var mixed = await PostBinaryAsync("/v2/models/latent/infer", jsonOut, data);
        Assert.Equal(expected, (await JsonAsync(mixed, HttpStatusCode.OK)).RootElement.GetProperty("outputs")[0].GetProperty("data").EnumerateArray().Select(e => e.GetSingle()));
    }

    [Theory]
    [InlineData("BF16", WireDType.BF16)]
    [InlineData("FP16", WireDType.F16)]
    public async Task A_16_bit_binary_input_answers_what_v1_answers_for_the_same_16_bit_block(string datatype, WireDType dtype)
    {
        var reference = gateway.Reference(KServeGatewayFixture.Standard);
        int d = reference.Config.HiddenSize;
        int layer = reference.Config.MoeLayers[0];
        float[] x = Gaussian(5 * d, new Random());
        var block = ActivationBlock.Encode(x, 5, d, dtype);

        var request = new GatewayForwardRequest { Model = KServeGatewayFixture.Standard, HiddenStates = block };
        using var v1Content = new ByteArrayContent(WireFormat.Serialize(request));
        v1Content.Headers.ContentType = new MediaTypeHeaderValue(GatewayEndpoints.MessagePackContentType);
        using var v1 = await Http.PostAsync($"/v1/layers/{layer}/forward", v1Content);
        Assert.Equal(HttpStatusCode.OK, v1.StatusCode);
        float[] expected = GatewayWire.DecodeResponse(await v1.Content.ReadAsByteArrayAsync(), new WireLimits()).HiddenStates.Decode();

        string header = $$$"""{"parameters":{"layer":{{{layer}}},"binary_data_output":true},"inputs":[{"name":"hidden_states","shape":[5,{{{d}}}],"datatype":"{{{datatype}}}","parameters":{"binary_data_size":{{{block.Data.Length}}}}}]}""";
        using var v2 = await PostBinaryAsync("/v2/models/standard/infer", header, block.Data);
        var (_, bytes) = await BinaryAnswerAsync(v2);
        Assert.Equal(expected, MemoryMarshal.Cast<byte, float>(bytes).ToArray());
    }

    [Fact]
    public async Task Bad_tensors_are_refused_with_a_400_that_names_the_problem()
    {
        int d = gateway.Reference(KServeGatewayFixture.Latent).Config.HiddenSize;
        float[] x = Gaussian(3 * d, new Random());
        string data = string.Join(",", x.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));
        string Input(string datatype, string shape, string rest = "") =>
            $$"""{"inputs":[{"name":"hidden_states","shape":{{shape}},"datatype":"{{datatype}}"{{rest}}}]}""";

        var cases = new (string Body, string Message)[]
        {
            (Input("INT32", $"[3,{d}]", $",\"data\":[{data}]"), "datatype 'INT32' is not supported"),
            (Input("FP16", $"[3,{d}]", $",\"data\":[{data}]"), "accepted only as binary data"),
            (Input("FP32", $"[4,{d}]", $",\"data\":[{data}]"), $"holds {3 * d} values; shape [4, {d}] needs {4 * d}"),
            (Input("FP32", $"[{d},3]", $",\"data\":[{data}]"), ForwardRequestValidator.WrongWidth(3, KServeGatewayFixture.Latent, d)),
            (Input("FP32", $"[3,{d},1]", $",\"data\":[{data}]"), "has 3 dimensions"),
            (Input("FP32", $"[3,{d}]"), "neither data nor parameters.binary_data_size"),
            (Input("FP32", $"[3,{d}]", $",\"data\":[[{data}]]"), $"nested as [1, {3 * d}]"),
            (Input("FP32", $"[3,{d}]", ",\"data\":[1,[2]]"), "not a mix"),
            (Input("FP32", $"[3,{d}]", ",\"data\":[\"1\"]"), "is a string"),
            (Input("FP32", $"[3,{d}]", $",\"parameters\":{{\"binary_data_size\":{3 * d * 4}}}"), "has no Inference-Header-Content-Length header"),
            ($$"""{"inputs":[{"name":"x","shape":[3,{{d}}],"datatype":"FP32","data":[{{data}}]}]}""", "the model's one input is 'hidden_states'"),
            ($$"""{"inputs":[{"name":"hidden_states","shape":[3,{{d}}],"datatype":"FP32","data":[{{data}}]}],"outputs":[{"name":"logits"}]}""", "the model's one output is 'hidden_states'"),
            ("""{"inputs":[]}""", "inputs is missing or empty"),
            ("[1,2]", "must be an inference request object"),
            ("{\"inputs\":", "malformed JSON body"),
        };
        foreach (var (body, message) in cases)
        {
            using var response = await PostJsonAsync("/v2/models/latent/infer", body);
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{body[..Math.Min(body.Length, 120)]}: {response.StatusCode}");
            Assert.Contains(message, await ErrorAsync(response), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Binary_lengths_that_disagree_with_the_header_or_the_shape_are_400s()
    {
        int d = gateway.Reference(KServeGatewayFixture.Latent).Config.HiddenSize;
        byte[] data = MemoryMarshal.AsBytes(Gaussian(3 * d, new Random()).AsSpan()).ToArray();
        string Header(long size, string datatype = "FP32") =>
            $$$"""{"inputs":[{"name":"hidden_states","shape":[3,{{{d}}}],"datatype":"{{{datatype}}}","parameters":{"binary_data_size":{{{size}}}}}]}""";

        // The declared size is the shape's but fewer bytes came; the declared size is not the shape's; a huge claim.
        await ExpectBinary400Async(Header(data.Length), data[..^4], $"the body holds {data.Length - 4} bytes after its");
        await ExpectBinary400Async(Header(data.Length - 4), data[..^4], $"binary_data_size is {data.Length - 4}, but shape [3, {d}] of FP32 needs {data.Length} bytes");
        await ExpectBinary400Async(Header(1L << 40), data, "binary_data_size is 1099511627776");
        await ExpectBinary400Async(Header(data.Length, "BF16"), data, $"of BF16 needs {data.Length / 2} bytes");

        // Bytes after a JSON header that claims none; a header length past the body; a header length that is no number.
        string json = $$"""{"inputs":[{"name":"hidden_states","shape":[3,{{d}}],"datatype":"FP32","data":[{{string.Join(",", Enumerable.Repeat("0.5", 3 * d))}}]}]}""";
        await ExpectBinary400Async(json, [1, 2, 3, 4], "holds 4 bytes after its JSON header, but no input has parameters.binary_data_size");
        using (var content = new ByteArrayContent(Encoding.UTF8.GetBytes(Header(data.Length))))
        {
            content.Headers.Add(KServeInferParser.HeaderContentLength, "999999");
            using var response = await Http.PostAsync("/v2/models/latent/infer", content);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("Inference-Header-Content-Length is 999999, but the body holds", await ErrorAsync(response), StringComparison.Ordinal);
        }

        using (var content = new ByteArrayContent(data))
        {
            content.Headers.Add(KServeInferParser.HeaderContentLength, "-1");
            using var response = await Http.PostAsync("/v2/models/latent/infer", content);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("'-1' is not a byte count", await ErrorAsync(response), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Unknown_models_and_layers_are_404s_and_limits_answer_as_on_v1()
    {
        int d = gateway.Reference(KServeGatewayFixture.Latent).Config.HiddenSize;
        float[] x = Gaussian(2 * d, new Random());
        foreach (string path in new[] { "/v2/models/nope/infer", "/v2/models/nope", "/v2/models/nope/ready" })
        {
            using var response = path.EndsWith("/infer", StringComparison.Ordinal)
                ? await PostJsonAsync(path, V2Body(x, 2, d, layer: null, nested: false))
                : await Http.GetAsync(path);
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Contains("unknown model 'nope'", await ErrorAsync(response), StringComparison.Ordinal);
        }

        // A layer that is no MoE layer, and one that is no integer: 404 with v1's message for the same layer.
        foreach (var (layer, parameter) in new[] { ("999", "999"), ("999", "\"999\""), ("first", "\"first\"") })
        {
            using var v1 = await PostJsonAsync($"/v1/layers/{layer}/forward", V1Body(KServeGatewayFixture.Latent, x, 2, d));
            using var v2 = await PostJsonAsync("/v2/models/latent/infer", V2Body(x, 2, d, parameter, nested: false));
            Assert.Equal(HttpStatusCode.NotFound, v2.StatusCode);
            Assert.Equal((v1.StatusCode, await ErrorAsync(v1)), (v2.StatusCode, await ErrorAsync(v2)));
        }

        // Too many tokens: 413 on both; a wire that does not exist: 400 on both; a content type neither reads: 415.
        int tokens = KServeGatewayFixture.MaxTokens + 1;
        float[] many = Gaussian(tokens * d, new Random());
        using (var v2 = await PostJsonAsync("/v2/models/latent/infer", V2Body(many, tokens, d, layer: null, nested: false)))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, v2.StatusCode);
            Assert.Contains("MaxTokensPerRequest", await ErrorAsync(v2), StringComparison.Ordinal);
        }

        string wired = V2Body(x, 2, d, layer: null, nested: false).Replace("\"wire\":\"fp32\"", "\"wire\":\"fp7\"", StringComparison.Ordinal);
        using (var v2 = await PostJsonAsync("/v2/models/latent/infer", wired))
        {
            Assert.Equal(HttpStatusCode.BadRequest, v2.StatusCode);
            Assert.Equal(WireCodecs.NotAWire("fp7"), await ErrorAsync(v2));
        }

        using var form = new StringContent(V2Body(x, 2, d, layer: null, nested: false), Encoding.UTF8, "text/plain");
        using (var v2 = await Http.PostAsync("/v2/models/latent/infer", form))
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, v2.StatusCode);
        }
    }

    [Fact]
    public async Task Router_failures_get_the_same_status_and_message_on_v2_as_on_v1()
    {
        int d = gateway.Reference(KServeGatewayFixture.Latent).Config.HiddenSize;
        float[] x = Gaussian(2 * d, new Random());
        var failures = new (Func<Exception> Make, HttpStatusCode Status)[]
        {
            (() => new ShardBusyException("the expert shard's queue is full; retry after 3 s", 3), HttpStatusCode.TooManyRequests),
            (() => new ShardFailureException("expert shard lat/1/s0 failed"), (HttpStatusCode)502),
            (() => new TimeoutException("the forward took longer than 30 s"), HttpStatusCode.GatewayTimeout),
            (() => new ForwardOverflowException("layer 1 overflowed float32"), (HttpStatusCode)422),
        };
        try
        {
            foreach (var (make, status) in failures)
            {
                gateway.Fail = make;
                using var v1 = await PostJsonAsync("/v1/forward", V1Body(KServeGatewayFixture.Latent, x, 2, d));
                using var v2 = await PostJsonAsync("/v2/models/latent/infer", V2Body(x, 2, d, layer: null, nested: false));
                Assert.Equal(status, v2.StatusCode);
                Assert.Equal((v1.StatusCode, await ErrorAsync(v1)), (v2.StatusCode, await ErrorAsync(v2)));
                Assert.Equal(v1.Headers.RetryAfter?.Delta, v2.Headers.RetryAfter?.Delta);
            }
        }
        finally
        {
            gateway.Fail = null;
        }
    }

    [Fact]
    public async Task V2_needs_an_api_key_like_v1_but_its_health_probes_stay_open()
    {
        using var anonymous = new HttpClient { BaseAddress = gateway.Url };
        int d = gateway.Reference(KServeGatewayFixture.Latent).Config.HiddenSize;
        string body = V2Body(Gaussian(d, new Random()), 1, d, layer: null, nested: false);
        foreach (var (method, path) in new[] { ("POST", "/v2/models/latent/infer"), ("POST", "/v1/forward"), ("GET", "/v2/models/latent"), ("GET", "/v2/models/latent/ready"), ("GET", "/v2"), ("GET", "/openapi/v1.json"), ("GET", "/v1/models") })
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path);
            if (method == "POST")
            {
                request.Content = new StringContent(body, Encoding.UTF8, "application/json");
            }

            using var response = await anonymous.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{method} {path}: {response.StatusCode}");
            Assert.Contains("an API key is required", await ErrorAsync(response), StringComparison.Ordinal);
        }

        using var wrong = new HttpRequestMessage(HttpMethod.Post, "/v2/models/latent/infer") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "not-the-key");
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.SendAsync(wrong)).StatusCode);

        foreach (string path in new[] { "/v2/health/live", "/v2/health/ready" })
        {
            Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync(path)).StatusCode);
        }
    }

    [Fact]
    public async Task V2_infer_is_counted_as_a_forward_request()
    {
        var statistics = gateway.Services.GetRequiredService<GatewayRequestStatistics>();
        int d = gateway.Reference(KServeGatewayFixture.Latent).Config.HiddenSize;
        long answered = statistics.Snapshot().PerModel.Where(m => m.Model == KServeGatewayFixture.Latent).Sum(m => m.Answered);
        using var response = await PostJsonAsync("/v2/models/latent/infer", V2Body(Gaussian(4 * d, new Random()), 4, d, layer: null, nested: false));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(answered + 1, statistics.Snapshot().PerModel.Where(m => m.Model == KServeGatewayFixture.Latent).Sum(m => m.Answered));
        Assert.True(GatewayRequestGuard.IsForwardPath("/v2/models/latent/infer"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v2/models/latent/ready"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v2/models/a/b/infer"));
        Assert.True(GatewayRequestGuard.IsForwardPath("/v2/models/latent/versions/1/infer"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v2/models/latent/versions//infer"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v2/models/latent/versions/1/2/infer"));
        Assert.False(GatewayRequestGuard.IsForwardPath("/v2/models//versions/1/infer"));
    }

    [Fact]
    public async Task Version_1_of_a_model_is_the_model_and_any_other_version_is_a_404()
    {
        var reference = gateway.Reference(KServeGatewayFixture.Latent);
        int d = reference.Config.HiddenSize;
        string layer = reference.Config.MoeLayers[0].ToString(CultureInfo.InvariantCulture);
        float[] x = Gaussian(6 * d, new Random());
        using var plain = await PostJsonAsync("/v2/models/latent/infer", V2Body(x, 6, d, layer, nested: false));
        using var versioned = await PostJsonAsync("/v2/models/latent/versions/1/infer", V2Body(x, 6, d, layer, nested: false));
        Assert.Equal(
            (await JsonAsync(plain, HttpStatusCode.OK)).RootElement.GetProperty("outputs")[0].GetProperty("data").GetRawText(),
            (await JsonAsync(versioned, HttpStatusCode.OK)).RootElement.GetProperty("outputs")[0].GetProperty("data").GetRawText());
        Assert.Equal("latent", (await JsonAsync(await Http.GetAsync("/v2/models/latent/versions/1"), HttpStatusCode.OK)).RootElement.GetProperty("name").GetString());
        Assert.True((await JsonAsync(await Http.GetAsync("/v2/models/latent/versions/1/ready"), HttpStatusCode.OK)).RootElement.GetProperty("ready").GetBoolean());

        using var other = await PostJsonAsync("/v2/models/latent/versions/2/infer", V2Body(x, 6, d, layer, nested: false));
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        Assert.Equal("model latent has no version '2'; its one version is 1", await ErrorAsync(other));
        foreach (string path in new[] { "/v2/models/latent/versions/2", "/v2/models/latent/versions/2/ready", "/v2/models/nope/versions/1" })
        {
            Assert.Equal(HttpStatusCode.NotFound, (await Http.GetAsync(path)).StatusCode);
        }
    }

    [Fact]
    public async Task Readiness_follows_the_health_checks_and_liveness_the_live_ones()
    {
        Assert.Equal(ServiceDefaultsExtensions.LiveTag, KServeEndpoints.LiveTag);
        try
        {
            gateway.Ready = true;
            Assert.True((await JsonAsync(await Http.GetAsync("/v2/health/ready"), HttpStatusCode.OK)).RootElement.GetProperty("ready").GetBoolean());
            var model = await JsonAsync(await Http.GetAsync("/v2/models/latent/ready"), HttpStatusCode.OK);
            Assert.Equal(("latent", true), (model.RootElement.GetProperty("name").GetString(), model.RootElement.GetProperty("ready").GetBoolean()));

            gateway.Ready = false;
            var notReady = await JsonAsync(await Http.GetAsync("/v2/health/ready"), HttpStatusCode.ServiceUnavailable);
            Assert.False(notReady.RootElement.GetProperty("ready").GetBoolean());
            Assert.Equal("waiting for expert silos", notReady.RootElement.GetProperty("error").GetString());
            Assert.False((await JsonAsync(await Http.GetAsync("/v2/models/latent/ready"), HttpStatusCode.ServiceUnavailable)).RootElement.GetProperty("ready").GetBoolean());
            Assert.True((await JsonAsync(await Http.GetAsync("/v2/health/live"), HttpStatusCode.OK)).RootElement.GetProperty("live").GetBoolean());
        }
        finally
        {
            gateway.Ready = true;
        }
    }

    [Fact]
    public async Task Model_metadata_names_one_fp32_tensor_of_width_d_in_and_out()
    {
        var config = gateway.Reference(KServeGatewayFixture.Standard).Config;
        var metadata = (await JsonAsync(await Http.GetAsync("/v2/models/standard"), HttpStatusCode.OK)).RootElement;
        Assert.Equal("standard", metadata.GetProperty("name").GetString());
        Assert.Equal(new[] { KServeEndpoints.ModelVersion }, metadata.GetProperty("versions").EnumerateArray().Select(v => v.GetString()));
        Assert.Equal(KServeEndpoints.Platform, metadata.GetProperty("platform").GetString());
        foreach (string side in new[] { "inputs", "outputs" })
        {
            var tensor = Assert.Single(metadata.GetProperty(side).EnumerateArray());
            Assert.Equal(("hidden_states", "FP32"), (tensor.GetProperty("name").GetString(), tensor.GetProperty("datatype").GetString()));
            Assert.Equal(new[] { -1L, config.HiddenSize }, tensor.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        }

        Assert.Equal(string.Join(",", config.MoeLayers), metadata.GetProperty("parameters").GetProperty("moe_layers").GetString());
        var server = (await JsonAsync(await Http.GetAsync("/v2"), HttpStatusCode.OK)).RootElement;
        Assert.Contains("binary_tensor_data", server.GetProperty("extensions").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task V1_models_is_an_openai_style_list_that_keeps_our_fields_and_the_client_reads()
    {
        var page = (await JsonAsync(await Http.GetAsync("/v1/models"), HttpStatusCode.OK)).RootElement;
        Assert.Equal("list", page.GetProperty("object").GetString());
        var data = page.GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(new[] { KServeGatewayFixture.Latent, KServeGatewayFixture.Standard }, data.Select(m => m.GetProperty("id").GetString()));
        long created = new DateTimeOffset(File.GetLastWriteTimeUtc(Path.Combine(gateway.PathOf(KServeGatewayFixture.Latent), "config.json"))).ToUnixTimeSeconds();
        var latent = data[0];
        Assert.Equal(("model", created, "moecluster"), (latent.GetProperty("object").GetString(), latent.GetProperty("created").GetInt64(), latent.GetProperty("owned_by").GetString()));
        Assert.Equal(("latent", 64, true), (latent.GetProperty("mode").GetString(), latent.GetProperty("hidden_size").GetInt32(), latent.GetProperty("is_default").GetBoolean()));
        Assert.False(data[1].GetProperty("is_default").GetBoolean());

        var served = await new GatewayClient(Http).ModelsAsync();
        Assert.Equal(new[] { KServeGatewayFixture.Latent, KServeGatewayFixture.Standard }, served.Select(m => m.Id));
        Assert.Equal(gateway.Reference(KServeGatewayFixture.Standard).Config.MoeLayers, served[1].MoeLayers);
        Assert.Equal((16, true), (served[0].LatentSize ?? 0, served[0].IsDefault));
    }

    [Fact]
    public async Task The_openapi_document_lists_every_mapped_api_route_with_its_method()
    {
        var document = (await JsonAsync(await Http.GetAsync("/openapi/v1.json"), HttpStatusCode.OK)).RootElement;
        var paths = document.GetProperty("paths");
        var routes = gateway.App.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.RoutePattern.RawText is { } raw && raw != GatewayEndpoints.OpenApiPath)
            .SelectMany(e => (e.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods ?? []).Select(m => ("/" + e.RoutePattern.RawText!.TrimStart('/'), m.ToLowerInvariant())))
            .ToList();
        string[] expected =
        [
            "/v1/layers/{layer}/forward", "/v1/forward", "/v1/models", "/stats", "/v2", "/v2/health/live", "/v2/health/ready",
            "/v2/models/{model}", "/v2/models/{model}/ready", "/v2/models/{model}/infer",
            "/v2/models/{model}/versions/{version}", "/v2/models/{model}/versions/{version}/ready", "/v2/models/{model}/versions/{version}/infer",
            "/v1/admin/rebalance", "/v1/admin/placement",
        ];
        Assert.Equal(expected.Order(), routes.Select(r => r.Item1).Distinct().Order());
        foreach (var (path, method) in routes)
        {
            Assert.True(paths.TryGetProperty(path, out var item), $"{path} is not in the OpenAPI document");
            Assert.True(item.TryGetProperty(method, out _), $"{method.ToUpperInvariant()} {path} is not in the OpenAPI document");
        }
    }

    private static float[] Gaussian(int count, Random rng) =>
        [.. Enumerable.Range(0, count).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())))];

    private static string Numbers(ReadOnlySpan<float> values)
    {
        var text = new StringBuilder();
        for (int i = 0; i < values.Length; i++)
        {
            text.Append(i == 0 ? string.Empty : ",").Append(values[i].ToString("R", CultureInfo.InvariantCulture));
        }

        return text.ToString();
    }

    private static string V1Body(string model, float[] x, int tokens, int d) =>
        $$"""{"model":"{{model}}","wire":"fp32","hidden_states":[{{string.Join(",", Enumerable.Range(0, tokens).Select(t => "[" + Numbers(x.AsSpan(t * d, d)) + "]"))}}]}""";

    /// <summary>A v2 JSON request; <paramref name="layer"/> is the layer parameter's JSON text (null: none, the whole stack).</summary>
    private static string V2Body(float[] x, int tokens, int d, string? layer, bool nested)
    {
        string data = nested
            ? string.Join(",", Enumerable.Range(0, tokens).Select(t => "[" + Numbers(x.AsSpan(t * d, d)) + "]"))
            : Numbers(x);
        string parameters = layer is null ? "\"wire\":\"fp32\"" : $"\"wire\":\"fp32\",\"layer\":{layer}";
        return $$"""{"id":"t","parameters":{{{parameters}}},"inputs":[{"name":"hidden_states","shape":[{{tokens}},{{d}}],"datatype":"FP32","data":[{{data}}]}],"outputs":[{"name":"hidden_states"}]}""";
    }

    /// <summary>The numbers of a v1 JSON answer's hidden_states, row after row, as the gateway wrote them.</summary>
    private async Task<string[]> V1NumbersAsync(string path, string model, float[] x, int tokens, int d)
    {
        using var response = await PostJsonAsync(path, V1Body(model, x, tokens, d));
        var answer = await JsonAsync(response, HttpStatusCode.OK);
        var rows = answer.RootElement.GetProperty("hidden_states").EnumerateArray().ToList();
        Assert.Equal(tokens, rows.Count);
        Assert.All(rows, r => Assert.Equal(d, r.GetArrayLength()));
        return [.. rows.SelectMany(r => r.EnumerateArray()).Select(e => e.GetRawText())];
    }

    private Task<HttpResponseMessage> PostJsonAsync(string path, string body) =>
        Http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));

    private Task<HttpResponseMessage> PostBinaryAsync(string path, string header, byte[] data)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        var content = new ByteArrayContent([.. json, .. data]);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        content.Headers.Add(KServeInferParser.HeaderContentLength, json.Length.ToString(CultureInfo.InvariantCulture));
        return Http.PostAsync(path, content);
    }

    private async Task ExpectBinary400Async(string header, byte[] data, string message)
    {
        using var response = await PostBinaryAsync("/v2/models/latent/infer", header, data);
        string error = await ErrorAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{response.StatusCode}: {error}");
        Assert.Contains(message, error, StringComparison.Ordinal);
    }

    private static async Task<(JsonDocument Header, byte[] Data)> BinaryAnswerAsync(HttpResponseMessage response)
    {
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, Encoding.UTF8.GetString(body));
        Assert.Equal("application/octet-stream", response.Content.Headers.ContentType?.MediaType);
        int length = int.Parse(response.Headers.GetValues(KServeInferParser.HeaderContentLength).Single(), CultureInfo.InvariantCulture);
        return (JsonDocument.Parse(body.AsMemory(0, length)), body[length..]);
    }

    private static async Task<JsonDocument> JsonAsync(HttpResponseMessage response, HttpStatusCode status)
    {
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {status}, got {response.StatusCode}: {text[..Math.Min(text.Length, 500)]}");
        return JsonDocument.Parse(text);
    }

    private static async Task<string> ErrorAsync(HttpResponseMessage response)
    {
        string text = await response.Content.ReadAsStringAsync();
        try
        {
            return JsonNode.Parse(text)?["error"]?.GetValue<string>() ?? text;
        }
        catch (JsonException)
        {
            return text;
        }
    }
}

using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using MoECluster.Gateway.KServe;
using MoECluster.Model.Layers;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// KServe v2 on a real cluster (front-end and two expert silos as processes): <c>POST /v2/models/{model}/infer</c>
/// answers exactly what <c>/v1/layers/{layer}/forward</c> and <c>/v1/forward</c> answer for the same input, in JSON and
/// in binary tensors, and the front-end serves its OpenAPI document.
/// </summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class KServeClusterTests(ProcessClusterFixture cluster)
{
    [Fact]
    public async Task V2_infer_answers_exactly_what_v1_answers_on_the_real_cluster()
    {
        using var reference = MoeModel.Open(cluster.LatentPath);
        int d = reference.Config.HiddenSize;
        int layer = reference.Config.MoeLayers[0];
        var rng = new Random();
        int tokens = rng.Next(3, 24);
        float[] x = [.. Enumerable.Range(0, tokens * d).Select(_ => (float)(rng.NextDouble() * 4 - 2))];
        string rows = string.Join(",", Enumerable.Range(0, tokens).Select(t => "[" + Numbers(x.AsSpan(t * d, d)) + "]"));

        foreach (int? selected in new int?[] { layer, null })
        {
            string v1Path = selected is int l ? $"/v1/layers/{l}/forward" : "/v1/forward";
            using var v1 = await PostAsync(v1Path, $$"""{"model":"lat","wire":"fp32","hidden_states":[{{rows}}]}""");
            using var v1Answer = JsonDocument.Parse(await v1.Content.ReadAsStringAsync());
            Assert.Equal(HttpStatusCode.OK, v1.StatusCode);
            string[] expected = [.. v1Answer.RootElement.GetProperty("hidden_states").EnumerateArray().SelectMany(r => r.EnumerateArray()).Select(e => e.GetRawText())];

            string parameters = selected is int p ? $"\"wire\":\"fp32\",\"layer\":{p}" : "\"wire\":\"fp32\"";
            using var v2 = await PostAsync("/v2/models/lat/infer",
                $$"""{"parameters":{{{parameters}}},"inputs":[{"name":"hidden_states","shape":[{{tokens}},{{d}}],"datatype":"FP32","data":[{{Numbers(x)}}]}]}""");
            string text = await v2.Content.ReadAsStringAsync();
            Assert.True(v2.StatusCode == HttpStatusCode.OK, text);
            using var v2Answer = JsonDocument.Parse(text);
            Assert.Equal(expected, v2Answer.RootElement.GetProperty("outputs")[0].GetProperty("data").EnumerateArray().Select(e => e.GetRawText()));

            // The binary extension: the same float32 bits.
            byte[] data = MemoryMarshal.AsBytes(x.AsSpan()).ToArray();
            byte[] header = Encoding.UTF8.GetBytes(
                $$$"""{"parameters":{{{{parameters}}}},"inputs":[{"name":"hidden_states","shape":[{{{tokens}}},{{{d}}}],"datatype":"FP32","parameters":{"binary_data_size":{{{data.Length}}}}}],"outputs":[{"name":"hidden_states","parameters":{"binary_data":true}}]}""");
            using var content = new ByteArrayContent([.. header, .. data]);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            content.Headers.Add(KServeInferParser.HeaderContentLength, header.Length.ToString(CultureInfo.InvariantCulture));
            using var binary = await cluster.Http.PostAsync("/v2/models/lat/infer", content);
            byte[] body = await binary.Content.ReadAsByteArrayAsync();
            Assert.True(binary.StatusCode == HttpStatusCode.OK, Encoding.UTF8.GetString(body));
            int length = int.Parse(binary.Headers.GetValues(KServeInferParser.HeaderContentLength).Single(), CultureInfo.InvariantCulture);
            float[] floats = MemoryMarshal.Cast<byte, float>(body.AsSpan(length)).ToArray();
            Assert.Equal(expected.Select(e => float.Parse(e, CultureInfo.InvariantCulture)), floats);
        }
    }

    [Fact]
    public async Task The_front_end_serves_its_openapi_document_and_v2_readiness()
    {
        using var document = JsonDocument.Parse(await cluster.Http.GetStringAsync("/openapi/v1.json"));
        var paths = document.RootElement.GetProperty("paths");
        foreach (string path in new[] { "/v1/forward", "/v1/layers/{layer}/forward", "/v1/models", "/v2/models/{model}/infer", "/v2/health/ready" })
        {
            Assert.True(paths.TryGetProperty(path, out _), $"{path} is not in the OpenAPI document");
        }

        Assert.DoesNotContain(paths.EnumerateObject(), p => p.Name.StartsWith("/dashboard", StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.OK, (await cluster.Http.GetAsync("/v2/health/ready")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await cluster.Http.GetAsync("/v2/models/lat/ready")).StatusCode);
    }

    private static string Numbers(ReadOnlySpan<float> values)
    {
        var text = new StringBuilder();
        for (int i = 0; i < values.Length; i++)
        {
            text.Append(i == 0 ? string.Empty : ",").Append(values[i].ToString("R", CultureInfo.InvariantCulture));
        }

        return text.ToString();
    }

    private Task<HttpResponseMessage> PostAsync(string path, string json) =>
        cluster.Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
}

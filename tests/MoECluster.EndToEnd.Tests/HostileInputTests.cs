using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using MoECluster.Cluster.Hosting;
using MoECluster.Gateway;
using MoECluster.Wire;

namespace MoECluster.EndToEnd.Tests;

/// <summary>
/// A barrage of hostile requests at the real three-process cluster's gateway: every one is answered with the
/// expected 4xx and a JSON message naming the problem (and the limit, where one applies), each is counted in
/// /stats as rejected, and afterwards the cluster still answers a valid request with every silo up.
/// </summary>
[Collection(ProcessClusterGroup.Name)]
public sealed class HostileInputTests(ProcessClusterFixture cluster)
{
    private const int Width = 64;

    private sealed record Case(string Name, int Status, string Message, Func<Task<(int Status, string Body)>> Send);

    [Fact]
    public async Task Every_hostile_request_gets_its_4xx_is_counted_as_rejected_and_the_cluster_keeps_serving()
    {
        long rejectedBefore = await RejectedAsync();
        var results = new List<string>();
        foreach (Case c in Cases())
        {
            (int status, string body) = await c.Send();
            string error = ErrorOf(body);
            results.Add($"{c.Name}: {status} {error}");
            Assert.True(status == c.Status, $"{c.Name}: expected {c.Status}, got {status}: {body}");
            Assert.True(error.Contains(c.Message, StringComparison.Ordinal), $"{c.Name}: '{error}' does not mention '{c.Message}'");
        }

        // Every refusal was counted, and nothing else happened to the counter.
        long rejectedAfter = await RejectedAsync();
        Assert.True(rejectedAfter - rejectedBefore == Cases().Count, $"rejected grew by {rejectedAfter - rejectedBefore}, expected {Cases().Count}:\n{string.Join("\n", results)}");

        // The cluster keeps serving: every silo is up and a valid request gets its answer.
        Assert.All(cluster.Silos, s => Assert.False(s.HasExited, s.Output));
        var response = await cluster.Client.ForwardAsync("lat", 1, Values(3 * Width, 0.5f), 3, Width, "bf16");
        Assert.Equal(3, response.HiddenStates.Rows);
        Assert.Equal(-1, response.HiddenStates.FindNonFinite());
        using var json = await cluster.Http.PostAsync("/v1/layers/3/forward", Json("{\"model\":\"std\",\"hidden_states\":[" + Row(Width) + "]}"));
        Assert.Equal(HttpStatusCode.OK, json.StatusCode);
    }

    private List<Case> Cases()
    {
        int maxTokens = GatewayOptions.DefaultMaxTokensPerRequest;
        int maxBytes = GatewayOptions.DefaultMaxRequestBytes;
        return
        [
            new("malformed JSON", 400, "malformed JSON body", () => PostAsync("/v1/layers/1/forward", Json("{\"model\": \"lat\", \"hidden_states\": [[1, 2"))),
            new("JSON of the wrong shape", 400, "hidden_states must be an array of rows", () => PostAsync("/v1/forward", Json("{\"hidden_states\":\"abc\"}"))),
            new("JSON nested past MaxJsonDepth", 400, "MoECluster:Gateway:MaxJsonDepth", () => PostAsync("/v1/forward", Json("{\"x\":" + new string('[', 64) + new string(']', 64) + ",\"hidden_states\":[[1]]}"))),
            new("ragged JSON rows after a wide first row", 400, "hidden_states[1] has 0 values; row 0 has 4000", () => PostAsync("/v1/forward", Json("{\"hidden_states\":[" + Row(4000) + string.Concat(Enumerable.Repeat(",[]", 5000)) + "]}"))),
            new("malformed MessagePack", 400, "malformed MessagePack body", () => PostAsync("/v1/layers/1/forward", MessagePack([0xC1, 0x00, 0xFF]))),
            new("MessagePack type confusion", 400, "malformed MessagePack body", () => PostAsync("/v1/layers/1/forward", MessagePack([0x81, 0xAD, .. "hidden_states"u8, 0xA3, .. "abc"u8]))),
            new("MessagePack bin claiming 4 GiB", 400, "malformed MessagePack body", () => PostAsync("/v1/layers/1/forward", MessagePack([0x81, 0xAD, .. "hidden_states"u8, 0x94, 0x00, 0x01, 0x01, 0xC6, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]))),
            new("MessagePack trailing bytes", 400, "trailing bytes", () => PostAsync("/v1/layers/1/forward", MessagePack([.. Request("lat", null, Values(Width, 1f), 1, Width, WireDType.F32), 0xC0]))),
            new("wrong width (JSON)", 400, "hidden_states rows are 3 wide; model lat has hidden_size 64", () => PostAsync("/v1/layers/1/forward", Json("{\"model\":\"lat\",\"hidden_states\":[[1,2,3]]}"))),
            new("wrong width (MessagePack)", 400, "hidden_states rows are 32 wide; model lat has hidden_size 64", () => PostAsync("/v1/layers/1/forward", MessagePack(Request("lat", null, Values(32, 1f), 1, 32, WireDType.F32)))),
            new("NaN", 400, "hidden_states[1][7] is not finite", () => PostAsync("/v1/layers/1/forward", MessagePack(Request("lat", null, WithValue(Values(2 * Width, 1f), Width + 7, float.NaN), 2, Width, WireDType.F32)))),
            new("+Inf in bf16", 400, "hidden_states[0][3] is not finite", () => PostAsync("/v1/forward", MessagePack(Request("lat", null, WithValue(Values(Width, 1f), 3, float.PositiveInfinity), 1, Width, WireDType.BF16)))),
            new("a JSON number beyond float32", 400, "hidden_states[0][0] is not finite", () => PostAsync("/v1/forward", Json("{\"hidden_states\":[[1e39]]}"))),
            new("unknown model", 404, "unknown model 'nope'; served models: lat, std", () => PostAsync("/v1/forward", Json("{\"model\":\"nope\",\"hidden_states\":[" + Row(Width) + "]}"))),
            new("layer that is not an MoE layer", 404, "layer 2 is not an MoE layer of lat; MoE layers: 1, 3", () => PostAsync("/v1/layers/2/forward", Json("{\"model\":\"lat\",\"hidden_states\":[" + Row(Width) + "]}"))),
            new("layer that is no number", 404, "layer abc is not an MoE layer of lat", () => PostAsync("/v1/layers/abc/forward", Json("{\"model\":\"lat\",\"hidden_states\":[" + Row(Width) + "]}"))),
            new("layer past int32", 404, "layer 99999999999 is not an MoE layer of lat", () => PostAsync("/v1/layers/99999999999/forward", Json("{\"model\":\"lat\",\"hidden_states\":[" + Row(Width) + "]}"))),
            new("unknown wire dtype", 400, WireCodecs.NotAWire("fp7"), () => PostAsync("/v1/forward", Json("{\"wire\":\"fp7\",\"hidden_states\":[" + Row(Width) + "]}"))),
            new("empty batch (JSON)", 400, "hidden_states is missing or empty", () => PostAsync("/v1/forward", Json("{\"model\":\"lat\",\"hidden_states\":[]}"))),
            new("empty batch (MessagePack)", 400, "hidden_states.Rows: expected 1..", () => PostAsync("/v1/forward", MessagePack(WireFormat.Serialize(new GatewayForwardRequest { HiddenStates = new ActivationBlock { Rows = 0, Width = Width, Data = [] } })))),
            new("empty body", 400, "empty request body", () => PostAsync("/v1/forward", Json(string.Empty))),
            new("batch over MaxTokensPerRequest (MessagePack)", 413, $"at most {maxTokens} tokens (MoECluster:Gateway:MaxTokensPerRequest)", () => PostAsync("/v1/forward", MessagePack(Request("lat", null, new float[(maxTokens + 1) * Width], maxTokens + 1, Width, WireDType.BF16)))),
            new("batch over MaxTokensPerRequest (JSON)", 413, $"at most {maxTokens} tokens (MoECluster:Gateway:MaxTokensPerRequest)", () => PostAsync("/v1/forward", Json("{\"hidden_states\":[" + string.Join(",", Enumerable.Repeat("[0]", maxTokens + 1)) + "]}"))),
            new("Content-Length over MaxRequestBytes", 413, $"request body of {1L << 30} bytes exceeds the limit of {maxBytes} bytes (MoECluster:Gateway:MaxRequestBytes)", () => RawAsync("POST", "/v1/forward", "application/json", 1L << 30)),
            new("chunked body over MaxRequestBytes", 413, $"request body exceeds the limit of {maxBytes} bytes (MoECluster:Gateway:MaxRequestBytes)", () => PostAsync("/v1/forward", Chunked(maxBytes + 1L))),
            new("unsupported Content-Type", 415, "Content-Type 'text/plain; charset=utf-8' is not supported", () => PostAsync("/v1/forward", new StringContent("{}", Encoding.UTF8, "text/plain"))),
            new("no Content-Type", 415, "Content-Type none is not supported", () => PostAsync("/v1/forward", new ByteArrayContent("{}"u8.ToArray()))),
            new("JSON in another charset", 415, "Content-Type 'application/json; charset=iso-8859-1' is not supported", () => PostAsync("/v1/forward", new StringContent("{}", Encoding.Latin1, "application/json"))),
            new("GET on a forward endpoint", 405, "method GET is not allowed on /v1/forward", () => SendAsync(new HttpRequestMessage(HttpMethod.Get, "/v1/forward"))),
            new("PUT on a layer endpoint", 405, "method PUT is not allowed on /v1/layers/1/forward", () => SendAsync(new HttpRequestMessage(HttpMethod.Put, "/v1/layers/1/forward") { Content = Json("{}") })),
        ];
    }

    /// <summary>The <c>error</c> of a <c>{"error": ...}</c> body; the body itself when it is not one.</summary>
    private static string ErrorOf(string body)
    {
        try
        {
            return JsonNode.Parse(body)?["error"]?.GetValue<string>() ?? body;
        }
        catch (System.Text.Json.JsonException)
        {
            return body;
        }
    }

    private async Task<long> RejectedAsync() => (await cluster.Client.StatsAsync())["gateway"]!["requests"]!["rejected"]!.GetValue<long>();

    private Task<(int, string)> PostAsync(string path, HttpContent content) => SendAsync(new HttpRequestMessage(HttpMethod.Post, path) { Content = content });

    private async Task<(int, string)> SendAsync(HttpRequestMessage request)
    {
        using (request)
        {
            using var response = await cluster.Http.SendAsync(request);
            return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
        }
    }

    /// <summary>A request written on a raw socket: it declares <paramref name="declaredLength"/> body bytes and sends none.</summary>
    private async Task<(int, string)> RawAsync(string method, string path, string contentType, long declaredLength)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, new Uri(cluster.Url).Port);
        using var stream = client.GetStream();
        string head = string.Create(CultureInfo.InvariantCulture, $"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {contentType}\r\nContent-Length: {declaredLength}\r\nConnection: close\r\n\r\n");
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var received = new MemoryStream();
        var buffer = new byte[4096];
        while (true)
        {
            int read = await stream.ReadAsync(buffer, timeout.Token);
            if (read == 0)
            {
                break;
            }

            received.Write(buffer, 0, read);
            if (Complete(Encoding.UTF8.GetString(received.ToArray())) is not null)
            {
                break;
            }
        }

        string response = Encoding.UTF8.GetString(received.ToArray());
        int status = int.Parse(response.Split(' ')[1], CultureInfo.InvariantCulture);
        return (status, Complete(response) ?? response);
    }

    /// <summary>The body of an HTTP/1.1 response once all of it is there (Content-Length or chunked), else null.</summary>
    private static string? Complete(string response)
    {
        int end = response.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (end < 0)
        {
            return null;
        }

        string head = response[..end];
        string rest = response[(end + 4)..];
        int length = head.IndexOf("\r\nContent-Length: ", StringComparison.OrdinalIgnoreCase);
        if (length >= 0)
        {
            int start = length + "\r\nContent-Length: ".Length;
            int bodyLength = int.Parse(head[start..(head.IndexOf('\r', start) is int e and >= 0 ? e : head.Length)], CultureInfo.InvariantCulture);
            return rest.Length >= bodyLength ? rest[..bodyLength] : null;
        }

        // Chunked: size line, data, CRLF, ..., a zero-size chunk.
        var body = new StringBuilder();
        int at = 0;
        while (true)
        {
            int line = rest.IndexOf("\r\n", at, StringComparison.Ordinal);
            if (line < 0)
            {
                return null;
            }

            int size = int.Parse(rest[at..line], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (size == 0)
            {
                return body.ToString();
            }

            if (rest.Length < line + 2 + size + 2)
            {
                return null;
            }

            body.Append(rest, line + 2, size);
            at = line + 2 + size + 2;
        }
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static ByteArrayContent MessagePack(byte[] body)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue(GatewayEndpoints.MessagePackContentType);
        return content;
    }

    /// <summary>A JSON-typed body of <paramref name="length"/> bytes sent chunked (no Content-Length), generated as it is sent.</summary>
    private static StreamContent Chunked(long length)
    {
        var content = new StreamContent(new ZeroStream(length), 1 << 20);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return content;
    }

    private static byte[] Request(string? model, string? wire, float[] values, int rows, int width, WireDType dtype) =>
        WireFormat.Serialize(new GatewayForwardRequest { Model = model, Wire = wire, HiddenStates = ActivationBlock.Encode(values, rows, width, dtype) });

    private static float[] Values(int count, float value) => Enumerable.Repeat(value, count).ToArray();

    private static float[] WithValue(float[] values, int index, float value)
    {
        values[index] = value;
        return values;
    }

    private static string Row(int width) => "[" + string.Join(",", Enumerable.Range(0, width).Select(i => ((i % 7) * 0.125).ToString(CultureInfo.InvariantCulture))) + "]";

    /// <summary>A read-only, non-seekable stream of <c>length</c> spaces (so HttpClient sends it chunked).</summary>
    private sealed class ZeroStream(long length) : Stream
    {
        private long _left = length;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = (int)Math.Min(count, _left);
            buffer.AsSpan(offset, n).Fill((byte)' ');
            _left -= n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

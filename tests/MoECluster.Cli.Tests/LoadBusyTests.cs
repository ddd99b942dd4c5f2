using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using MoECluster.Cli.Load;
using MoECluster.Testing;
using MoECluster.Wire;

namespace MoECluster.Cli.Tests;

/// <summary>
/// <c>moecluster load</c> and a gateway that answers 429 (an expert shard's queue full): the 429s are counted apart as
/// busy, never as failed, in the summary, the JSON and the HTML report; a closed-loop worker honours Retry-After.
/// </summary>
public sealed class LoadBusyTests : IDisposable
{
    private const int Width = 8;

    private readonly TempDirectory _dir = new("moecluster-load-busy-");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_429_is_counted_as_busy_not_failed_and_a_closed_loop_worker_waits_its_Retry_After()
    {
        // Every other forward is refused with 429 and Retry-After: 1; the others are answered.
        using var gateway = new StandInGateway(busyEvery: 2);
        string json = _dir.File("load.json"), html = _dir.File("load.html");
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exit = await Task.Run(() => CliApp.Run(
            ["load", "--url", gateway.Url, "--mode", "closed", "--concurrency", "1", "--duration", "2.5", "--warmup", "0", "--tokens", "1", "--json", json, "--html", html],
            output, error));
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");

        var requests = JsonNode.Parse(File.ReadAllText(json))!["requests"]!;
        long sent = requests["sent"]!.GetValue<long>(), ok = requests["ok"]!.GetValue<long>(), busy = requests["busy"]!.GetValue<long>();
        Assert.Equal(0, requests["failed"]!.GetValue<long>());
        Assert.Equal(0, requests["overloaded"]!.GetValue<long>());
        Assert.True(busy >= 1, $"busy {busy}");
        Assert.Equal(sent, ok + busy);

        // Retry-After honoured: one worker, 1 s after each 429, so about one 429 per second of the 2.5 s (not thousands).
        Assert.InRange(busy, 1, 4);
        Assert.Equal(gateway.Forwards, sent);

        string summary = output.ToString();
        string header = summary.Split('\n').First(l => l.StartsWith("model", StringComparison.Ordinal));
        Assert.Contains(" busy ", header, StringComparison.Ordinal);
        Assert.Contains("requests busy (429", File.ReadAllText(html), StringComparison.Ordinal);
    }

    [Fact]
    public void A_sweep_step_with_a_429_does_not_meet_the_slo()
    {
        var step = new SweepStep(4, 400, 40, 5, 9, 10, 15, Sent: 101, Ok: 100, Failed: 0, Overloaded: 0, Busy: 1);
        Assert.False(step.Meets(50));
        Assert.True((step with { Busy = 0, Sent = 100 }).Meets(50));
        Assert.Equal(1, SweepReport.Step(step, LoadSettings.Closed)["requests"]!["busy"]!.GetValue<long>());
    }

    /// <summary>A gateway on loopback: one model, forwards answered (a [1, 8] zero block) or refused with 429 in turn.</summary>
    private sealed class StandInGateway : IDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly int _busyEvery;
        private readonly Task _serving;
        private long _forwards;

        public StandInGateway(int busyEvery)
        {
            _busyEvery = busyEvery;
            int port = FreePorts.Take(1)[0];
            Url = $"http://127.0.0.1:{port}";
            _listener.Prefixes.Add(Url + "/");
            _listener.Start();
            _serving = Task.Run(ServeAsync);
        }

        public string Url { get; }

        public long Forwards => Interlocked.Read(ref _forwards);

        private async Task ServeAsync()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext context;
                try
                {
                    context = await _listener.GetContextAsync();
                }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
                {
                    return;
                }

                Answer(context);
            }
        }

        private void Answer(HttpListenerContext context)
        {
            var response = context.Response;
            string path = context.Request.Url!.AbsolutePath;
            byte[] body;
            if (path == "/v1/models")
            {
                response.ContentType = "application/json";
                body = Encoding.UTF8.GetBytes($"{{\"object\":\"list\",\"data\":[{{\"id\":\"lat\",\"object\":\"model\",\"created\":0,\"owned_by\":\"moecluster\",\"mode\":\"latent\",\"hidden_size\":{Width},\"latent_size\":4,\"experts\":4,\"top_k\":2,\"moe_layers\":[1],\"shards_per_layer\":1,\"is_default\":true}}]}}");
            }
            else if (path.EndsWith("/forward", StringComparison.Ordinal))
            {
                context.Request.InputStream.CopyTo(Stream.Null);
                long n = Interlocked.Increment(ref _forwards);
                if (n % _busyEvery == 0)
                {
                    response.StatusCode = 429;
                    response.Headers["Retry-After"] = "1";
                    response.ContentType = "application/json";
                    body = Encoding.UTF8.GetBytes("{\"error\":\"the expert shard's queue is full; retry after 1 s\"}");
                }
                else
                {
                    response.ContentType = "application/x-msgpack";
                    body = WireFormat.Serialize(new GatewayForwardResponse { Model = "lat", HiddenStates = ActivationBlock.Encode(new float[Width], 1, Width, WireDType.F32) });
                }
            }
            else
            {
                response.ContentType = "application/json";
                body = "{}"u8.ToArray();
            }

            response.ContentLength64 = body.Length;
            response.OutputStream.Write(body);
            response.Close();
        }

        public void Dispose()
        {
            _listener.Stop();
            _listener.Close();
            try
            {
                _serving.Wait(TimeSpan.FromSeconds(5));
            }
            catch (AggregateException)
            {
            }
        }
    }
}

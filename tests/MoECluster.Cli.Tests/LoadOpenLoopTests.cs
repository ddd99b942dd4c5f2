using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using MoECluster.Cli.Commands;
using MoECluster.Cli.Load;
using MoECluster.Gateway;
using MoECluster.Testing;

namespace MoECluster.Cli.Tests;

/// <summary>
/// <c>moecluster load</c> against a stand-in gateway on a real port (<see cref="LoadStandInGateway"/>):
/// <c>--max-concurrency</c>, <c>--header</c>, <c>--records</c>, API keys and 401 counting, the models list shape, and
/// the result JSON checked against docs/schemas/load-result.schema.json.
/// </summary>
public sealed class LoadOpenLoopTests : IDisposable
{
    private const string Key = "load-key-0123456789abcdef";

    private readonly TempDirectory _dir = new("moecluster-load-open-");

    public void Dispose() => _dir.Dispose();

    private static async Task<(int Exit, string Output, string Error)> LoadAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exit = await Task.Run(() => CliApp.Run(["load", .. args], output, error));
        return (exit, output.ToString(), error.ToString());
    }

    private static JsonNode Read(string path) => JsonNode.Parse(File.ReadAllText(path))!;

    private static long L(JsonNode? n) => n!.GetValue<long>();

    [Fact]
    public async Task Max_concurrency_caps_the_requests_in_flight_and_counts_those_that_waited_and_started_late()
    {
        // 80 requests/s of 150 ms each would keep about 12 in flight; the cap allows 2.
        await using var gateway = await LoadStandInGateway.StartAsync(forwardDelay: TimeSpan.FromMilliseconds(150));
        string json = _dir.File("cap.json");
        var (exit, output, error) = await LoadAsync("--url", gateway.Url, "--mode", "open", "--rate", "80", "--max-concurrency", "2",
            "--duration", "1.5", "--warmup", "0", "--tokens", "1", "--timeout", "10", "--json", json);
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");

        Assert.InRange(gateway.PeakInFlight, 1, 2);
        var report = Read(json);
        var starts = report["starts"]!;
        long sent = L(report["requests"]!["sent"]);
        Assert.InRange(L(starts["peak_in_flight"]), 1, 2);
        Assert.True(L(starts["waited_for_cap"]) > sent / 2, $"{starts["waited_for_cap"]} of {sent} waited for the cap");
        Assert.True(L(starts["late"]) > 0 && L(starts["late_by_cap"]) == L(starts["late"]) - L(starts["late_by_client"]), starts.ToJsonString());
        Assert.True(L(starts["late_by_cap"]) > 0, starts.ToJsonString());
        Assert.Equal(2, L(report["arrivals"]!["max_concurrency"]));
        Assert.Contains("waited for the --max-concurrency cap", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_a_cap_the_same_load_has_more_in_flight()
    {
        // The counterpart of the capped run: the stand-in does see more than 2 at once when nothing caps them.
        await using var gateway = await LoadStandInGateway.StartAsync(forwardDelay: TimeSpan.FromMilliseconds(150));
        string json = _dir.File("uncapped.json");
        var (exit, _, error) = await LoadAsync("--url", gateway.Url, "--mode", "open", "--rate", "80", "--duration", "1", "--warmup", "0", "--tokens", "1", "--json", json);
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");
        Assert.True(gateway.PeakInFlight > 2, $"peak {gateway.PeakInFlight}");
        Assert.Equal(0, L(Read(json)["starts"]!["waited_for_cap"]));
    }

    [Fact]
    public async Task Headers_reach_the_server_on_every_request_and_their_values_stay_out_of_the_report()
    {
        await using var gateway = await LoadStandInGateway.StartAsync();
        string json = _dir.File("headers.json");
        var (exit, output, error) = await LoadAsync("--url", gateway.Url, "--mode", "closed", "--concurrency", "1", "--duration", "0.5", "--warmup", "0",
            "--tokens", "1", "--header", "X-Tenant=blue team", "--header=X-Secret=s3cr3t-value", "--label", "header run", "--json", json);
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");

        Assert.True(gateway.Forwards > 0);
        Assert.Equal(gateway.Forwards, gateway.ForwardHeaders.Count);
        Assert.All(gateway.ForwardHeaders, h =>
        {
            Assert.Equal("blue team", h.GetValueOrDefault("x-tenant"));
            Assert.Equal("s3cr3t-value", h.GetValueOrDefault("x-secret"));
        });
        string text = File.ReadAllText(json);
        Assert.DoesNotContain("s3cr3t-value", text, StringComparison.Ordinal);
        Assert.DoesNotContain("blue team", text, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cr3t-value", output + error, StringComparison.Ordinal);
        var metadata = Read(json)["metadata"]!;
        Assert.Equal(["X-Tenant", "X-Secret"], metadata["headers"]!.AsArray().Select(n => n!.GetValue<string>()));
        Assert.Equal("header run", metadata["label"]!.GetValue<string>());
        string command = Read(json)["command"]!.GetValue<string>();
        Assert.Contains("--header X-Tenant=***", command, StringComparison.Ordinal);
        Assert.Contains("X-Secret=***", command, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("X-A=one\rtwo", "control character")]
    [InlineData("X-A=one\ntwo", "control character")]
    [InlineData("X-A=one\0", "control character")]
    [InlineData("X A=1", "HTTP token")]
    [InlineData("X:A=1", "HTTP token")]
    [InlineData("=1", "HTTP token")]
    [InlineData("NoValue", "HTTP token")]
    [InlineData("Host=example", "cannot set")]
    [InlineData("Content-Type=text/plain", "cannot set")]
    public void Bad_headers_are_refused(string header, string message)
    {
        var e = Assert.Throws<UsageException>(() => LoadSettings.ParseHeaders([header], apiKey: false));
        Assert.Contains(message, e.Message.Replace("the load client can set", "cannot set", StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public void An_Authorization_header_is_refused_beside_an_api_key_and_taken_without_one()
    {
        Assert.Throws<UsageException>(() => LoadSettings.ParseHeaders(["authorization=Bearer x"], apiKey: true));
        var headers = LoadSettings.ParseHeaders(["Authorization=Bearer x", "X-Empty="], apiKey: false);
        Assert.Equal([new("Authorization", "Bearer x"), new("X-Empty", string.Empty)], headers);
    }

    [Fact]
    public async Task Records_have_one_well_formed_line_per_request_none_starting_before_its_intended_time()
    {
        await using var gateway = await LoadStandInGateway.StartAsync(forwardDelay: TimeSpan.FromMilliseconds(20));
        string json = _dir.File("records.json"), records = _dir.File("records.jsonl");
        var before = DateTimeOffset.UtcNow;
        var (exit, _, error) = await LoadAsync("--url", gateway.Url, "--mode", "open", "--rate", "60", "--burstiness", "0.5", "--max-concurrency", "3",
            "--duration", "1", "--warmup", "0.3", "--tokens", "1", "--json", json, "--records", records);
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");

        var report = Read(json);
        long sent = L(report["requests"]!["sent"]) + L(report["warmup"]!["requests"]!["sent"]);
        string[] lines = File.ReadAllLines(records);
        Assert.Equal(sent, lines.Length);
        Assert.Equal(gateway.Forwards, lines.Length);
        var seqs = new HashSet<long>();
        int measured = 0;
        foreach (string line in lines)
        {
            var r = JsonNode.Parse(line)!.AsObject();
            Assert.Equal(["seq", "phase", "model", "tokens", "intended_ms", "start_ms", "end_ms", "start_utc", "latency_ms", "waited_for_cap", "status", "outcome", "error"], r.Select(kv => kv.Key));
            Assert.True(seqs.Add(L(r["seq"])), $"seq repeated: {line}");
            double intended = r["intended_ms"]!.GetValue<double>(), start = r["start_ms"]!.GetValue<double>(), end = r["end_ms"]!.GetValue<double>();
            Assert.True(start >= intended, $"started before its intended time: {line}");
            Assert.True(end >= start, line);
            Assert.Equal(end - intended, r["latency_ms"]!.GetValue<double>(), 0.002);
            Assert.Equal(LoadStandInGateway.ModelId, r["model"]!.GetValue<string>());
            Assert.Equal(1, L(r["tokens"]));
            Assert.Equal(200, L(r["status"]));
            Assert.Equal("ok", r["outcome"]!.GetValue<string>());
            Assert.Null(r["error"]);
            var utc = DateTimeOffset.Parse(r["start_utc"]!.GetValue<string>(), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
            Assert.InRange(utc, before.AddSeconds(-1), DateTimeOffset.UtcNow.AddSeconds(1));
            string phase = r["phase"]!.GetValue<string>();
            Assert.Equal(intended < 300 ? "warmup" : "measured", phase);
            measured += phase == "measured" ? 1 : 0;
        }

        Assert.Equal(L(report["requests"]!["sent"]), measured);
    }

    [Fact]
    public async Task With_the_api_key_nothing_fails_and_without_it_every_request_is_counted_as_a_401()
    {
        await using var gateway = await LoadStandInGateway.StartAsync(apiKey: Key);
        string keyed = _dir.File("keyed.json"), unkeyed = _dir.File("unkeyed.json"), records = _dir.File("unkeyed.jsonl");

        var (exit, output, error) = await LoadAsync("--url", gateway.Url, "--api-key", Key, "--mode", "closed", "--concurrency", "2",
            "--duration", "0.6", "--warmup", "0", "--tokens", "1", "--json", keyed);
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");
        var withKey = Read(keyed);
        Assert.True(L(withKey["requests"]!["ok"]) > 0);
        Assert.Equal(0, L(withKey["requests"]!["failed"]));
        Assert.Equal(0, L(withKey["errors"]!["unauthorized"]));
        Assert.DoesNotContain(Key, File.ReadAllText(keyed) + output + error, StringComparison.Ordinal);

        (exit, output, error) = await LoadAsync("--url", gateway.Url, "--mode", "open", "--rate", "40",
            "--duration", "0.6", "--warmup", "0", "--tokens", "1", "--json", unkeyed, "--records", records);
        Assert.Equal(CliApp.ExitFailure, exit);
        var withoutKey = Read(unkeyed);
        long sent = L(withoutKey["requests"]!["sent"]);
        Assert.True(sent > 5, $"sent {sent}");
        Assert.Equal(0, L(withoutKey["requests"]!["ok"]));
        Assert.Equal(sent, L(withoutKey["requests"]!["failed"]));
        Assert.Equal(sent, L(withoutKey["errors"]!["unauthorized"]));
        Assert.Equal(sent, L(withoutKey["errors"]!["by_status"]!["401"]));
        Assert.Equal(0, L(withoutKey["errors"]!["client_errors"]) + L(withoutKey["errors"]!["other"]) + L(withoutKey["errors"]!["connection_errors"]));
        Assert.Null(withoutKey["metadata"]!["cluster"]!["models"]);
        Assert.All(File.ReadAllLines(records), line =>
        {
            var r = JsonNode.Parse(line)!;
            Assert.Equal(401, L(r["status"]));
            Assert.Equal("unauthorized", r["outcome"]!.GetValue<string>());
            Assert.Contains("API key", r["error"]!.GetValue<string>(), StringComparison.Ordinal);
        });
        Assert.Contains($"401 unauthorized {sent},", output, StringComparison.Ordinal);
        Assert.Contains(ApiKeyOption.Hint, error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_result_records_the_cluster_and_moecluster_from_a_models_list_of_the_OpenAI_shape()
    {
        await using var gateway = await LoadStandInGateway.StartAsync(listShape: true);
        string json = _dir.File("list.json");
        var (exit, _, error) = await LoadAsync("--url", gateway.Url, "--mode", "closed", "--concurrency", "1", "--duration", "0.4", "--warmup", "0", "--tokens", "1", "--json", json);
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");
        var metadata = Read(json)["metadata"]!;
        var model = Assert.Single(metadata["cluster"]!["models"]!.AsArray())!;
        Assert.Equal(LoadStandInGateway.ModelId, model["id"]!.GetValue<string>());
        Assert.Equal(8, L(model["hidden_size"]));
        Assert.Equal(["frontend", "expert-1"], metadata["cluster"]!["silos"]!.AsArray().Select(s => s!["name"]!.GetValue<string>()));
        Assert.Equal(1, L(metadata["cluster"]!["silos"]![1]!["shards"]));
        Assert.Equal(RunMetadata.Moecluster().Version, metadata["moecluster"]!["version"]!.GetValue<string>());
        var stamp = DateTimeOffset.Parse(metadata["timestamp_utc"]!.GetValue<string>(), CultureInfo.InvariantCulture);
        Assert.InRange(stamp, DateTimeOffset.UtcNow.AddMinutes(-2), DateTimeOffset.UtcNow);
    }

    [Fact]
    public void Both_shapes_of_the_models_list_give_the_same_models()
    {
        const string Model = "{\"id\":\"m\",\"mode\":\"standard\",\"hidden_size\":16,\"latent_size\":null,\"experts\":8,\"top_k\":2,\"moe_layers\":[1,3],\"shards_per_layer\":2,\"is_default\":true}";
        var bare = RunMetadata.ServedModels(JsonNode.Parse($"[{Model}]"));
        var list = RunMetadata.ServedModels(JsonNode.Parse($"{{\"object\":\"list\",\"data\":[{Model}]}}"));
        static string Text(ServedModel m) => $"{m.Id} {m.Mode} {m.HiddenSize} {m.LatentSize} {m.Experts} {m.TopK} [{string.Join(',', m.MoeLayers)}] {m.ShardsPerLayer} {m.IsDefault}";
        Assert.Equal("m standard 16  8 2 [1,3] 2 True", Text(Assert.Single(bare)));
        Assert.Equal(Text(bare[0]), Text(Assert.Single(list)));
        Assert.Throws<JsonException>(() => RunMetadata.ServedModels(JsonNode.Parse("{\"models\":[]}")));
    }

    [Fact]
    public void The_version_is_the_informational_version_split_at_the_commit()
    {
        var (version, commit) = RunMetadata.Moecluster();
        Assert.Matches(@"^\d+\.\d+\.\d+", version);
        Assert.DoesNotContain('+', version);
        if (commit is not null)
        {
            Assert.Matches("^[0-9a-f]{7,40}$", commit);
        }
    }

    [Theory]
    [InlineData(401, "unauthorized")]
    [InlineData(429, "busy")]
    [InlineData(503, "overloaded")]
    [InlineData(500, "server_error")]
    [InlineData(502, "server_error")]
    [InlineData(400, "client_error")]
    [InlineData(403, "client_error")]
    public void Gateway_errors_are_classified_by_status(int status, string kind)
    {
        var error = RequestError.Of(new GatewayException(status, "x"));
        Assert.Equal(kind, error.Name);
        Assert.Equal(status, error.Status);
    }

    [Fact]
    public void Timeouts_and_connection_errors_are_told_apart()
    {
        Assert.Equal(RequestErrorKind.Timeout, RequestError.Of(new TaskCanceledException()).Kind);
        Assert.Equal(RequestErrorKind.Connection, RequestError.Of(new HttpRequestException(HttpRequestError.ConnectionError, "refused")).Kind);
        Assert.Equal(RequestErrorKind.Other, RequestError.Of(new InvalidDataException("bad block")).Kind);
        var counts = new ErrorCounts();
        counts.Add(RequestError.Of(new GatewayException(503, "x")));
        counts.Add(RequestError.Of(new GatewayException(500, "x")));
        counts.Add(RequestError.Of(new TaskCanceledException()));
        var json = counts.ToJson();
        Assert.Equal(2, L(json["server_errors"]));
        Assert.Equal(1, L(json["overloaded"]));
        Assert.Equal(1, L(json["timeouts"]));
        Assert.Equal(1, L(json["by_status"]!["503"]));
        Assert.Equal(1, L(json["by_status"]!["500"]));
    }

    [Fact]
    public async Task A_real_result_validates_against_the_checked_in_schema_and_a_broken_one_does_not()
    {
        var schema = Schema();
        await using var gateway = await LoadStandInGateway.StartAsync(forwardDelay: TimeSpan.FromMilliseconds(5));
        string json = _dir.File("schema.json");
        var (exit, _, error) = await LoadAsync("--url", gateway.Url, "--mode", "open", "--ramp-up-strategy", "linear", "--ramp-up-start-rps", "10", "--ramp-up-end-rps", "60",
            "--max-concurrency", "4", "--duration", "1", "--warmup", "0.2", "--tokens", "1", "--label", "schema", "--header", "X-Run=1", "--json", json);
        Assert.True(exit == CliApp.ExitOk, $"exit {exit}: {error}");

        string text = File.ReadAllText(json);
        AssertValid(schema, text, true);
        var report = JsonNode.Parse(text)!;
        Assert.Equal("linear", report["arrivals"]!["ramp_up"]!["strategy"]!.GetValue<string>());

        // The schema is strict enough to fail: a field missing, a count of the wrong type, an unknown field.
        var missing = JsonNode.Parse(text)!.AsObject();
        missing.Remove("errors");
        AssertValid(schema, missing.ToJsonString(), false);
        var wrongType = JsonNode.Parse(text)!;
        wrongType["requests"]!["failed"] = "none";
        AssertValid(schema, wrongType.ToJsonString(), false);
        var extra = JsonNode.Parse(text)!;
        extra["starts"]!["surprise"] = 1;
        AssertValid(schema, extra.ToJsonString(), false);
    }

    [Fact]
    public void The_checked_in_result_of_a_real_cluster_validates_against_the_schema()
    {
        // docs/load-ramp-tiny.json: moecluster load against the tiny pair of `moecluster run` (docs/LOAD.md).
        var schema = Schema();
        string text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "schemas", "load-ramp-tiny.json"));
        AssertValid(schema, text, true);
        Assert.Equal(2, JsonNode.Parse(text)!["metadata"]!["cluster"]!["models"]!.AsArray().Count);
    }

    [Theory]
    [InlineData("plain", "plain")]
    [InlineData("two words", "'two words'")]
    [InlineData("it's", "'it'\\''s'")]
    [InlineData("", "''")]
    public void The_recorded_command_line_quotes_what_a_shell_would_split(string token, string recorded) => Assert.Equal(recorded, LoadCommand.Quoted(token));

    /// <summary>The checked-in schema, built in a registry of its own (the library's global one refuses the same $id twice).</summary>
    private static JsonSchema Schema() =>
        JsonSchema.FromFile(Path.Combine(AppContext.BaseDirectory, "schemas", "load-result.schema.json"), new BuildOptions { SchemaRegistry = new SchemaRegistry() });

    private static void AssertValid(JsonSchema schema, string json, bool valid)
    {
        using var document = JsonDocument.Parse(json);
        var result = schema.Evaluate(document.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
        string details = string.Join("; ", (result.Details ?? []).Where(d => d.Errors is { Count: > 0 }).Select(d => $"{d.InstanceLocation}: {string.Join(", ", d.Errors!.Values)}"));
        Assert.True(result.IsValid == valid, $"expected valid = {valid}: {details}");
    }
}

using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoECluster.Gateway;

namespace MoECluster.Cli.Load;

/// <summary>
/// The <c>metadata</c> of a load result: when it ran (UTC), which moecluster (version and git commit, from the
/// assembly's informational version <c>VERSION+COMMIT</c> that the SDK stamps from the build's git checkout), the
/// <c>--label</c>, the request headers' names (never their values), and the cluster as the gateway showed it before the
/// run: its models (<c>GET /v1/models</c>) and silos (<c>GET /stats</c>).
/// </summary>
internal static class RunMetadata
{
    /// <summary>moecluster's version and commit; the commit null when the build did not record one.</summary>
    public static (string Version, string? Commit) Moecluster()
    {
        var assembly = typeof(RunMetadata).Assembly;
        string informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? assembly.GetName().Version?.ToString() ?? "unknown";
        int plus = informational.IndexOf('+', StringComparison.Ordinal);
        return plus < 0 ? (informational, null) : (informational[..plus], informational[(plus + 1)..]);
    }

    /// <summary>
    /// The models of a <c>GET /v1/models</c> document, whichever shape it has: a bare array of models, or the OpenAI list
    /// <c>{"object":"list","data":[...]}</c>; each model keeps the gateway's fields (id, mode, hidden_size, ...).
    /// </summary>
    public static JsonArray ModelItems(JsonNode? document) => document switch
    {
        JsonArray array => array,
        JsonObject list when list["data"] is JsonArray data => data,
        _ => throw new JsonException("GET /v1/models answered neither a list of models nor {\"object\":\"list\",\"data\":[...]}"),
    };

    /// <summary>The served models of a <c>GET /v1/models</c> document of either shape.</summary>
    public static IReadOnlyList<ServedModel> ServedModels(JsonNode? document) =>
        [.. ModelItems(document).Select(m => m.Deserialize<ServedModel>(GatewayEndpoints.Json) ?? throw new JsonException("GET /v1/models: a model is null"))];

    /// <summary>The cluster as <c>/v1/models</c> and <c>/stats</c> showed it (each null when it could not be read).</summary>
    public static JsonObject Cluster(string url, JsonNode? models, JsonNode? stats)
    {
        JsonArray? silos = stats?["silos"] is JsonArray s
            ? new JsonArray([.. s.OfType<JsonObject>().Select(silo => (JsonNode)new JsonObject
            {
                ["name"] = silo["name"]?.DeepClone(),
                ["role"] = silo["role"]?.DeepClone(),
                ["address"] = silo["address"]?.DeepClone(),
                ["shards"] = silo["shards"] is JsonArray shards ? shards.Count : 0,
            })])
            : null;
        JsonArray? served = null;
        if (models is not null)
        {
            try
            {
                served = (JsonArray)ModelItems(models).DeepClone();
            }
            catch (JsonException)
            {
            }
        }

        return new JsonObject
        {
            ["url"] = url,
            ["models"] = served,
            ["silos"] = silos,
            ["tls"] = stats?["totals"]?["tls"]?.DeepClone(),
        };
    }

    public static JsonObject Build(LoadSettings settings, DateTimeOffset startUtc, JsonNode? models, JsonNode? stats)
    {
        var (version, commit) = Moecluster();
        return new JsonObject
        {
            ["timestamp_utc"] = startUtc.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture),
            ["label"] = settings.Label,
            ["moecluster"] = new JsonObject { ["version"] = version, ["commit"] = commit },
            ["client"] = new JsonObject { ["processors"] = Environment.ProcessorCount, ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription },
            ["headers"] = new JsonArray([.. settings.Headers.Select(h => (JsonNode)JsonValue.Create(h.Key))]),
            ["cluster"] = Cluster(settings.Url, models, stats),
        };
    }
}

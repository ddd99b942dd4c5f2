using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Contracts;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Gateway.Admin;

/// <summary>
/// Load-aware placement over HTTP, behind the API keys like every other path: <c>POST /v1/admin/rebalance</c> re-plans
/// a model's experts from the routing measured over the window and applies the plan live (the report: each layer's
/// silo imbalance before and after, replicas, new shards, how long loading and switching took); <c>GET
/// /v1/admin/placement</c> is the placement now and its history. Both take <c>?model=</c> (default: the default model).
/// </summary>
public static class PlacementEndpoints
{
    /// <summary>The largest body <c>POST /v1/admin/rebalance</c> reads.</summary>
    public const int MaxBodyBytes = 4096;

    public static IEndpointRouteBuilder MapPlacement(this IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        endpoints.MapPost("/v1/admin/rebalance", (Delegate)RebalanceAsync)
            .WithName("rebalance").WithSummary("Re-plans a model's expert placement from measured routing (replicas of hot experts) and applies it live").WithTags("admin");
        endpoints.MapGet("/v1/admin/placement", (Delegate)PlacementAsync)
            .WithName("placement").WithSummary("A model's expert placement now: epoch, each layer's shards, the history of re-plans").WithTags("admin");
        return endpoints;
    }

    private static async Task<IResult> RebalanceAsync(HttpContext http)
    {
        if (!TryModel(http, out string model, out IResult? refused))
        {
            return refused;
        }

        RebalanceRequest request;
        try
        {
            request = await ReadRequestAsync(http.Request, http.RequestAborted);
        }
        catch (Exception e) when (e is JsonException or InvalidDataException)
        {
            return GatewayEndpoints.Error(StatusCodes.Status400BadRequest, $"rebalance body: {e.Message} (expected {{\"redundant_experts\": n, \"dry_run\": false}}, both optional)");
        }

        try
        {
            var report = await http.RequestServices.GetRequiredService<IGrainFactory>().GetGrain<IExpertPlacementGrain>(model).Rebalance(request);
            return Results.Json(report, GatewayEndpoints.Json);
        }
        catch (ArgumentException e)
        {
            return GatewayEndpoints.Error(StatusCodes.Status400BadRequest, e.Message);
        }
        catch (InvalidOperationException e)
        {
            return GatewayEndpoints.Error(StatusCodes.Status409Conflict, e.Message);
        }
    }

    private static async Task<IResult> PlacementAsync(HttpContext http)
    {
        if (!TryModel(http, out string model, out IResult? refused))
        {
            return refused;
        }

        var placement = await http.RequestServices.GetRequiredService<IGrainFactory>().GetGrain<IExpertPlacementGrain>(model).Get();
        return Results.Json(placement, GatewayEndpoints.Json);
    }

    private static bool TryModel(HttpContext http, out string model, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out IResult? refused)
    {
        var options = http.RequestServices.GetRequiredService<IOptions<MoeClusterOptions>>().Value;
        string? requested = http.Request.Query["model"].Count > 0 ? http.Request.Query["model"].ToString() : null;
        try
        {
            model = options.ResolveModel(requested);
            refused = null;
            return true;
        }
        catch (ArgumentException e)
        {
            model = "";
            refused = GatewayEndpoints.Error(StatusCodes.Status404NotFound, e.Message);
            return false;
        }
    }

    private static async Task<RebalanceRequest> ReadRequestAsync(HttpRequest request, CancellationToken cancel)
    {
        if (request.ContentLength is 0 || (request.ContentLength is null && request.Headers.TransferEncoding.Count == 0))
        {
            return new RebalanceRequest();
        }

        var buffer = new byte[MaxBodyBytes + 1];
        int read = 0, n;
        while (read < buffer.Length && (n = await request.Body.ReadAsync(buffer.AsMemory(read), cancel)) > 0)
        {
            read += n;
        }

        if (read > MaxBodyBytes)
        {
            throw new InvalidDataException($"more than {MaxBodyBytes} bytes");
        }

        if (read == 0)
        {
            return new RebalanceRequest();
        }

        using var document = JsonDocument.Parse(buffer.AsMemory(0, read), new JsonDocumentOptions { MaxDepth = 4 });
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException("not a JSON object");
        }

        int? redundant = null;
        bool dryRun = false;
        foreach (var property in document.RootElement.EnumerateObject())
        {
            switch (property.Name)
            {
                case "redundant_experts" when property.Value.ValueKind == JsonValueKind.Number && property.Value.TryGetInt32(out int r) && r >= 0:
                    redundant = r;
                    break;
                case "dry_run" when property.Value.ValueKind is JsonValueKind.True or JsonValueKind.False:
                    dryRun = property.Value.GetBoolean();
                    break;
                default:
                    throw new InvalidDataException($"'{property.Name}' is not a field of a rebalance request, or its value is not {(property.Name == "dry_run" ? "true or false" : "an integer of at least 0")}");
            }
        }

        return new RebalanceRequest(redundant, dryRun);
    }
}

using MoECluster.AppHost.Model;

namespace MoECluster.AppHost.Orchestration;

/// <summary>Runs the health checks of one instance: HTTP ones here, others through their own delegate.</summary>
internal sealed class HealthProbes(HttpClient http)
{
    public static string Describe(ResourceInstance instance)
    {
        var parts = new List<string>();
        foreach (var a in instance.Resource.Annotations)
        {
            switch (a)
            {
                case HttpHealthCheckAnnotation h:
                    parts.Add($"health {instance.Endpoint(h.EndpointName).Address}{h.Path}");
                    break;
                case HealthCheckAnnotation c:
                    parts.Add(c.Describe(instance));
                    break;
            }
        }

        return string.Join(", ", parts);
    }

    public static bool HasChecks(IResource resource) => resource.Annotations.Any(a => a is HttpHealthCheckAnnotation or HealthCheckAnnotation);

    /// <summary>Every check once; healthy when all are. The detail says what the last unhealthy one answered.</summary>
    public async Task<HealthCheckResult> CheckAsync(ResourceInstance instance, CancellationToken cancel)
    {
        foreach (var a in instance.Resource.Annotations)
        {
            var result = a switch
            {
                HttpHealthCheckAnnotation h => await HttpAsync(instance.Endpoint(h.EndpointName).Address + h.Path, h.StatusCode, cancel),
                HealthCheckAnnotation c => await c.Check(instance, cancel),
                _ => null,
            };
            if (result is { IsHealthy: false })
            {
                return result;
            }
        }

        return HealthCheckResult.Healthy("healthy");
    }

    private async Task<HealthCheckResult> HttpAsync(string url, int expected, CancellationToken cancel)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(TimeSpan.FromSeconds(5));
        try
        {
            using var response = await http.GetAsync(new Uri(url), timeout.Token);
            int status = (int)response.StatusCode;
            return status == expected ? HealthCheckResult.Healthy($"{url}: {status}") : HealthCheckResult.Unhealthy($"{url}: {status}");
        }
        catch (HttpRequestException e)
        {
            return HealthCheckResult.Unhealthy($"{url}: {e.Message}");
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            return HealthCheckResult.Unhealthy($"{url}: no answer within 5 s");
        }
    }
}

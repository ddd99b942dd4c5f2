using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Model.Compute;
using MoECluster.Model.Layers;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// The models this silo can open, by id, each opened (memory-mapped) once per process on first use and shared
/// by every grain of the silo. Routers take the router half of a layer; shards load only their own experts. A model
/// that fails to open is not cached: the next use tries again (a model directory may appear after the silo started).
/// </summary>
public sealed partial class ModelCatalog(IOptions<MoeClusterOptions> options, ILogger<ModelCatalog> logger) : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<MoeModel>> _models = new();
    private readonly Lazy<IComputeBackend> _backend = new(() =>
    {
        var backend = ComputeBackends.Create(options.Value.Compute.Backend, out string note);
        LogBackend(logger, note);
        return backend;
    });

    /// <summary>The compute backend of this silo (MoECluster:Compute:Backend), created on first use.</summary>
    public IComputeBackend Backend => _backend.Value;

    public MoeModel Get(string id)
    {
        if (!options.Value.Models.TryGetValue(id, out ModelEntry? entry))
        {
            throw new ArgumentException($"unknown model '{id}'; served models: {string.Join(", ", options.Value.Models.Keys)}");
        }

        var model = _models.GetOrAdd(id, _ => new Lazy<MoeModel>(() => MoeModel.Open(entry.Path, Backend)));
        try
        {
            return model.Value;
        }
        catch (Exception e)
        {
            // A model that cannot be opened now (its directory not written yet, a file being copied) is tried again on the
            // next use, not remembered as broken: forget this attempt (only this one, should another have replaced it).
            _models.TryRemove(new KeyValuePair<string, Lazy<MoeModel>>(id, model));
            LogOpenFailed(logger, id, entry.Path, e.Message);
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var model in _models.Values.Where(m => m.IsValueCreated))
        {
            model.Value.Dispose();
        }

        if (_backend.IsValueCreated && _backend.Value is IDisposable disposable)
        {
            disposable.Dispose();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Model {Id} at {Path} cannot be opened (tried again on next use): {Reason}")]
    private static partial void LogOpenFailed(ILogger logger, string id, string path, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Compute: {Note}")]
    private static partial void LogBackend(ILogger logger, string note);
}

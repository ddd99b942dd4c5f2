using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Configuration;

namespace MoECluster.Cluster.Hosting;

/// <summary>
/// Opens every served model when the silo starts, before Orleans does: a checkpoint that lacks a tensor of an MoE layer
/// its config declares (or holds one in a wrong shape), or whose config.json or safetensors header is invalid, fails the
/// start with an <see cref="InvalidDataException"/> naming the model, its key and the tensors — instead of answering its
/// first request with a 500. A model whose directory (or a file of it) is not there yet is left for its first use, as
/// before (a deployment may move it in after the silo started; <c>/health</c> says so meanwhile).
/// </summary>
public sealed partial class ModelCheckpointCheck(ModelCatalog catalog, IOptions<MoeClusterOptions> options, ILogger<ModelCheckpointCheck> logger) : IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken)
    {
        var failures = new List<string>();
        foreach (var (id, entry) in options.Value.Models)
        {
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                _ = catalog.Get(id);
            }
            catch (Exception e) when (e is InvalidDataException or ModelConfigException or SafetensorsFormatException)
            {
                failures.Add($"model {id} ({ConfigurationKeys.ModelPath(id)} = {entry.Path}) cannot be served: {e.Message}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                LogNotYet(logger, id, entry.Path, e.Message);
            }
        }

        if (failures.Count > 0)
        {
            throw new InvalidDataException(string.Join(" | ", failures));
        }

        return Task.CompletedTask;
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Model {Id} at {Path} is not there yet; it is opened on first use: {Reason}")]
    private static partial void LogNotYet(ILogger logger, string id, string path, string reason);
}

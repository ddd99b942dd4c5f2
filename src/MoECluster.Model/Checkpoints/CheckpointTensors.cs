using System.Collections.ObjectModel;
using System.Globalization;
using System.Text.Json;

namespace MoECluster.Model.Checkpoints;

/// <summary>
/// The tensors of a checkpoint directory as one collection: either a single <c>model.safetensors</c>, or
/// <c>model.safetensors.index.json</c> with the shards its weight_map names. A directory holding both is read
/// from <c>model.safetensors</c>, as Hugging Face transformers does.
/// </summary>
public sealed class CheckpointTensors : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private static readonly JsonDocumentOptions IndexJsonOptions = new()
    {
        MaxDepth = 8,
        CommentHandling = JsonCommentHandling.Disallow,
        AllowTrailingCommas = false,
    };

    private readonly SafetensorsFile[] _files;
    private readonly Dictionary<string, TensorRef> _tensors;
    private int _disposed;

    private CheckpointTensors(string directoryPath, SafetensorsFile[] files, Dictionary<string, TensorRef> tensors, List<string> names)
    {
        DirectoryPath = directoryPath;
        _files = files;
        _tensors = tensors;
        Names = names.AsReadOnly();
        Files = Array.AsReadOnly(files);
    }

    /// <summary>Full path of the checkpoint directory.</summary>
    public string DirectoryPath { get; }

    /// <summary>The open safetensors files (one, or the shards in order of first reference).</summary>
    public IReadOnlyList<SafetensorsFile> Files { get; }

    /// <summary>All tensor names, file by file in header order.</summary>
    public IReadOnlyCollection<string> Names { get; }

    /// <summary>
    /// Opens <paramref name="modelDir"/>'s <c>model.safetensors</c>, or else its <c>model.safetensors.index.json</c>
    /// and every shard it references, validating that each listed tensor is in its shard and no name is in two shards.
    /// </summary>
    public static CheckpointTensors OpenDirectory(string modelDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDir);
        string directory = Path.GetFullPath(modelDir);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"Checkpoint directory '{directory}' does not exist.");
        }

        string single = Path.Combine(directory, SingleFileName);
        if (File.Exists(single))
        {
            return FromFiles(directory, [single], weightMap: null, indexPath: null);
        }

        string index = Path.Combine(directory, IndexFileName);
        if (File.Exists(index))
        {
            List<KeyValuePair<string, string>> weightMap = ReadIndex(index);
            var shardNames = new List<string>();
            var seenShards = new HashSet<string>(StringComparer.Ordinal);
            foreach ((string tensor, string shard) in weightMap)
            {
                if (seenShards.Add(shard))
                {
                    string shardPath = Path.Combine(directory, shard);
                    if (!File.Exists(shardPath))
                    {
                        throw new FileNotFoundException(
                            $"Shard '{shard}' (holding tensor '{tensor}') listed in '{index}' does not exist in '{directory}'.",
                            shardPath);
                    }

                    shardNames.Add(shard);
                }
            }

            return FromFiles(directory, shardNames.Select(s => Path.Combine(directory, s)).ToArray(), weightMap, index);
        }

        throw new FileNotFoundException(
            $"Checkpoint directory '{directory}' contains neither '{SingleFileName}' nor '{IndexFileName}'.",
            single);
    }

    public bool TryGetTensor(string name, out TensorRef tensor)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return _tensors.TryGetValue(name, out tensor);
    }

    /// <summary>Looks a tensor up by name; <see cref="KeyNotFoundException"/> naming the tensor and directory if absent.</summary>
    public TensorRef GetTensor(string name) =>
        TryGetTensor(name, out TensorRef tensor)
            ? tensor
            : throw new KeyNotFoundException($"Tensor '{name}' not found in checkpoint '{DirectoryPath}'.");

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (SafetensorsFile file in _files)
        {
            file.Dispose();
        }
    }

    private static CheckpointTensors FromFiles(
        string directory,
        string[] paths,
        List<KeyValuePair<string, string>>? weightMap,
        string? indexPath)
    {
        var files = new List<SafetensorsFile>(paths.Length);
        try
        {
            var tensors = new Dictionary<string, TensorRef>(StringComparer.Ordinal);
            var names = new List<string>();
            foreach (string path in paths)
            {
                SafetensorsFile file = SafetensorsFile.Open(path);
                files.Add(file);
                foreach (TensorInfo info in file.Tensors)
                {
                    if (!tensors.TryAdd(info.Name, new TensorRef(file, info)))
                    {
                        throw new SafetensorsFormatException(
                            file.Path,
                            $"tensor '{info.Name}' is also in shard '{Path.GetFileName(tensors[info.Name].File.Path)}'; a tensor may be in only one shard.");
                    }

                    names.Add(info.Name);
                }
            }

            if (weightMap is not null)
            {
                foreach ((string tensor, string shard) in weightMap)
                {
                    if (!tensors.TryGetValue(tensor, out TensorRef found))
                    {
                        throw new SafetensorsFormatException(indexPath!, $"tensor '{tensor}' is listed in weight_map for shard '{shard}', but that shard does not contain it.");
                    }

                    string actual = Path.GetFileName(found.File.Path);
                    if (!string.Equals(actual, shard, StringComparison.Ordinal))
                    {
                        throw new SafetensorsFormatException(indexPath!, $"tensor '{tensor}' is listed in weight_map for shard '{shard}', but it is in shard '{actual}'.");
                    }
                }
            }

            return new CheckpointTensors(directory, [.. files], tensors, names);
        }
        catch
        {
            foreach (SafetensorsFile file in files)
            {
                file.Dispose();
            }

            throw;
        }
    }

    /// <summary>Reads the weight_map of an index file, in file order, validating every shard file name.</summary>
    private static List<KeyValuePair<string, string>> ReadIndex(string indexPath)
    {
        long length = new FileInfo(indexPath).Length;
        if (length > SafetensorsHeader.MaxHeaderBytes)
        {
            throw new SafetensorsFormatException(
                indexPath,
                string.Create(CultureInfo.InvariantCulture, $"the index file is {length} bytes, over the 100 MiB limit."));
        }

        return ParseIndex(indexPath, File.ReadAllBytes(indexPath));
    }

    /// <summary>
    /// Parses the bytes of an index file: its weight_map, in file order, with every shard file name validated.
    /// Every refusal is a <see cref="SafetensorsFormatException"/> naming <paramref name="indexPath"/>.
    /// </summary>
    internal static List<KeyValuePair<string, string>> ParseIndex(string indexPath, ReadOnlyMemory<byte> bytes)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes, IndexJsonOptions);
        }
        catch (JsonException ex)
        {
            throw new SafetensorsFormatException(indexPath, $"the index is not valid JSON: {ex.Message}", ex);
        }

        using (document)
        {
            try
            {
                return ReadWeightMap(indexPath, document.RootElement);
            }
            catch (InvalidOperationException ex)
            {
                // JsonDocument validates structure only: a name or string with an invalid escape (a lone surrogate)
                // or invalid UTF-8 is refused when it is read as text.
                throw new SafetensorsFormatException(indexPath, $"the index is not valid JSON: {ex.Message}", ex);
            }
        }
    }

    private static List<KeyValuePair<string, string>> ReadWeightMap(string indexPath, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsFormatException(indexPath, $"the index must be a JSON object, but it is {root.ValueKind}.");
        }

        JsonElement? map = null;
        foreach (JsonProperty property in root.EnumerateObject())
        {
            if (property.NameEquals("weight_map"))
            {
                if (map is not null)
                {
                    throw new SafetensorsFormatException(indexPath, "duplicate \"weight_map\" key.");
                }

                map = property.Value;
            }
        }

        if (map is null)
        {
            throw new SafetensorsFormatException(indexPath, "missing \"weight_map\".");
        }

        if (map.Value.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsFormatException(indexPath, $"\"weight_map\" must be an object mapping tensor names to shard file names, but it is {map.Value.ValueKind}.");
        }

        var entries = new List<KeyValuePair<string, string>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (JsonProperty entry in map.Value.EnumerateObject())
        {
            if (!seen.Add(entry.Name))
            {
                throw new SafetensorsFormatException(indexPath, $"duplicate tensor name '{entry.Name}' in weight_map.");
            }

            if (entry.Value.ValueKind != JsonValueKind.String)
            {
                throw new SafetensorsFormatException(indexPath, $"weight_map value for tensor '{entry.Name}' must be a file name string, but it is {entry.Value.ValueKind}.");
            }

            string shard = entry.Value.GetString()!;
            if (!IsPlainFileName(shard))
            {
                throw new SafetensorsFormatException(indexPath, $"weight_map value '{shard}' for tensor '{entry.Name}' is not a plain file name (no directories, '..' or rooted paths allowed).");
            }

            entries.Add(new KeyValuePair<string, string>(entry.Name, shard));
        }

        return entries;
    }

    private static bool IsPlainFileName(string name) =>
        name.Length > 0
        && name != "."
        && name != ".."
        && name.IndexOfAny(['/', '\\', ':', '\0']) < 0
        && !Path.IsPathRooted(name);
}

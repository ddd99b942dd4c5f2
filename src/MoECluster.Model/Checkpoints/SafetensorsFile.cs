using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.IO.MemoryMappedFiles;

namespace MoECluster.Model.Checkpoints;

/// <summary>
/// A read-only, memory-mapped safetensors file whose header has been fully validated: every tensor has a known
/// dtype, a shape whose byte size matches its data_offsets, lies inside the data buffer, and overlaps no other tensor.
/// </summary>
/// <remarks>
/// Pointers and spans handed out stay valid until <see cref="Dispose"/>. The file must not be truncated by another
/// process while it is open (as with any memory mapping, that would fault on access).
/// </remarks>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private const int LengthPrefixBytes = sizeof(ulong);

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _data;
    private readonly long _dataLength;
    private readonly Dictionary<string, TensorInfo> _byName;
    private int _disposed;

    private SafetensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* data, long dataLength, SafetensorsHeader header)
    {
        Path = path;
        _map = map;
        _view = view;
        _data = data;
        _dataLength = dataLength;
        Tensors = header.Tensors;
        Metadata = header.Metadata;
        _byName = new Dictionary<string, TensorInfo>(header.Tensors.Count, StringComparer.Ordinal);
        foreach (TensorInfo t in header.Tensors)
        {
            _byName.Add(t.Name, t);
        }
    }

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>The header's "__metadata__" map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>All tensors, in header order.</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>Length in bytes of the data buffer that follows the header.</summary>
    public long DataLength => _dataLength;

    /// <summary>
    /// Opens and memory-maps <paramref name="path"/> read-only, validating the whole header.
    /// Throws <see cref="SafetensorsFormatException"/> for any malformed content.
    /// </summary>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = System.IO.Path.GetFullPath(path);
        var stream = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.None);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool acquired = false;
        try
        {
            long length = stream.Length;
            if (length < LengthPrefixBytes)
            {
                throw new SafetensorsFormatException(
                    fullPath,
                    string.Create(CultureInfo.InvariantCulture, $"the file is {length} bytes long, shorter than the 8-byte header length prefix."));
            }

            map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* start = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
            acquired = true;
            start += view.PointerOffset;

            long headLength = Math.Min(length, LengthPrefixBytes + SafetensorsHeader.MaxHeaderBytes);
            var header = ParseLayout(fullPath, new ReadOnlySpan<byte>(start, (int)headLength), length, out long dataStart);
            long dataLength = length - dataStart;
            return new SafetensorsFile(fullPath, map, view, start + dataStart, dataLength, header);
        }
        catch
        {
            if (acquired)
            {
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            }

            view?.Dispose();
            if (map is null)
            {
                stream.Dispose();
            }
            else
            {
                map.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Validates the layout of a safetensors file of <paramref name="fileLength"/> bytes whose first bytes are
    /// <paramref name="head"/> (at least the 8-byte length prefix and the header it declares, when the file has them):
    /// the header length against the 100 MiB limit and the file, then the whole header against the data buffer.
    /// Returns the header and where the data buffer starts. The only input is untrusted bytes: nothing is allocated
    /// from a size they claim, and every refusal is a <see cref="SafetensorsFormatException"/>.
    /// </summary>
    internal static SafetensorsHeader ParseLayout(string path, ReadOnlySpan<byte> head, long fileLength, out long dataStart)
    {
        if (fileLength < LengthPrefixBytes || head.Length < LengthPrefixBytes)
        {
            throw new SafetensorsFormatException(
                path,
                string.Create(CultureInfo.InvariantCulture, $"the file is {fileLength} bytes long, shorter than the 8-byte header length prefix."));
        }

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(head);
        if (headerLength > SafetensorsHeader.MaxHeaderBytes)
        {
            throw new SafetensorsFormatException(
                path,
                string.Create(CultureInfo.InvariantCulture, $"header length {headerLength} exceeds the 100 MiB limit ({SafetensorsHeader.MaxHeaderBytes} bytes)."));
        }

        if (headerLength > (ulong)(fileLength - LengthPrefixBytes) || headerLength > (ulong)(head.Length - LengthPrefixBytes))
        {
            throw new SafetensorsFormatException(
                path,
                string.Create(CultureInfo.InvariantCulture, $"header length {headerLength} runs past the end of the file ({fileLength} bytes)."));
        }

        dataStart = LengthPrefixBytes + (long)headerLength;
        return SafetensorsHeader.Parse(path, head.Slice(LengthPrefixBytes, (int)headerLength), fileLength - dataStart);
    }

    /// <summary>Looks a tensor up by name.</summary>
    public bool TryGetTensor(string name, [NotNullWhen(true)] out TensorInfo? info) => _byName.TryGetValue(name, out info);

    /// <summary>Looks a tensor up by name; <see cref="KeyNotFoundException"/> naming the tensor and the file if absent.</summary>
    public TensorInfo GetTensor(string name) =>
        _byName.TryGetValue(name, out TensorInfo? info)
            ? info
            : throw new KeyNotFoundException($"Tensor '{name}' not found in safetensors file '{Path}'.");

    /// <summary>Pointer to the first byte of the tensor's data inside the mapping; valid until <see cref="Dispose"/>.</summary>
    public byte* GetPointer(TensorInfo info)
    {
        CheckOwned(info);
        return _data + info.Begin;
    }

    /// <summary>The tensor's raw little-endian bytes; throws if the tensor is larger than <see cref="int.MaxValue"/> bytes.</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo info)
    {
        CheckOwned(info);
        if (info.ByteLength > int.MaxValue)
        {
            throw new InvalidOperationException(string.Create(
                CultureInfo.InvariantCulture,
                $"Tensor '{info.Name}' in '{Path}' is {info.ByteLength} bytes, too large for a span; use {nameof(GetPointer)}."));
        }

        return new ReadOnlySpan<byte>(_data + info.Begin, (int)info.ByteLength);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    public override string ToString() => Path;

    private void CheckOwned(TensorInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (!_byName.TryGetValue(info.Name, out TensorInfo? own)
            || own.Begin != info.Begin
            || own.End != info.End
            || own.DType != info.DType)
        {
            throw new ArgumentException($"Tensor {info} does not belong to safetensors file '{Path}'.", nameof(info));
        }
    }
}

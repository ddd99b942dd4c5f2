namespace MoECluster.Model.Analysis;

/// <summary>
/// What one accelerator (or this machine) can do, as the cost model needs it: peak matrix FLOP/s at the compute
/// precision, the bytes one element of weights and activations takes at that precision, memory read bandwidth, and
/// the bandwidth of its link to the other expert-parallel ranks, per direction.
/// </summary>
public sealed record HardwareProfile(
    string Name,
    string Description,
    double PeakFlopsPerSecond,
    double ElementBytes,
    double MemoryBytesPerSecond,
    double NetworkBytesPerSecond,
    string Source)
{
    /// <summary>
    /// Built-in profiles, per GPU, at nominal (datasheet) figures. The GB200 one is the LatentMoE paper's worked
    /// example as its two numbers require it (docs/COST.md): FP4 compute and elements, 8 TB/s HBM3e, NVLink 5 at
    /// 900 GB/s per direction.
    /// </summary>
    public static IReadOnlyList<HardwareProfile> BuiltIn { get; } =
    [
        new("h100-nvlink", "H100 SXM, FP8, NVLink 4 (8 GPUs)", 1979e12, 1, 3.35e12, 450e9,
            "H100 SXM datasheet: 1,979 TFLOPS FP8 (with sparsity 3,958), HBM3 3.35 TB/s, NVLink 900 GB/s total (450 per direction)"),
        new("h100-ib400", "H100 SXM, FP8, 400 Gb/s InfiniBand between nodes", 1979e12, 1, 3.35e12, 50e9,
            "H100 SXM datasheet; ConnectX-7 NDR 400 Gb/s = 50 GB/s per direction per GPU"),
        new("gb200-nvl72", "GB200 NVL72, FP4, NVLink 5 (the LatentMoE paper's example)", 20e15, 0.5, 8e12, 900e9,
            "GB200 per GPU: 20 PFLOPS FP4 (NVIDIA's figure, with sparsity), HBM3e 8 TB/s, NVLink 5 1.8 TB/s total (900 GB/s per direction)"),
    ];

    /// <summary>FLOPs the profile performs in the time it reads one element: the roofline's ridge point in elements.</summary>
    public double FlopsPerElementRead => PeakFlopsPerSecond * ElementBytes / MemoryBytesPerSecond;

    public static HardwareProfile Get(string name) =>
        BuiltIn.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown profile '{name}'; profiles: {string.Join(", ", BuiltIn.Select(p => p.Name))}, measured", nameof(name));
}

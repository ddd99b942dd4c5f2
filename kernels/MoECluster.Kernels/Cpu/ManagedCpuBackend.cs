using System.Buffers;
using MoECluster.Model.Compute;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Cpu;

/// <summary>
/// The managed CPU backend: weights packed once into panels (<see cref="PackedMatrix"/>: BF16 weights as bfloat16,
/// widened to fp32 in the micro-kernel; other dtypes as fp32), every Linear a cache-blocked, register-blocked SGEMM
/// (<see cref="ManagedSgemm"/>) over all cores, with Vector512 FMA where the hardware has it and Vector256
/// otherwise. fp32 accumulation. Once packed, a weight's mapped checkpoint pages leave the resident set.
/// </summary>
public sealed class ManagedCpuBackend : IComputeBackend
{
    private readonly KernelPath _path;

    public ManagedCpuBackend()
        : this(KernelPaths.Best)
    {
    }

    /// <summary>A backend pinned to one micro-kernel (tests use it to exercise the narrower paths).</summary>
    internal ManagedCpuBackend(KernelPath path)
    {
        _path = path;
    }

    public string Name => "managed";

    public IPreparedLinear Prepare(WeightMatrix weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        PackedMatrix packed = PackedMatrix.FromWeight(weight, _path);

        // The panels are the copy every Linear reads; the checkpoint's mapped pages need not stay resident too.
        weight.ReleaseResidentPages();
        return packed;
    }

    public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y) =>
        ManagedSgemm.Multiply(AsPacked(weight), x, tokens, y);

    /// <summary>down(relu(up(z))²) with the hidden activations in pooled scratch rather than a fresh array.</summary>
    public void ExpertFfn(IPreparedLinear up, IPreparedLinear down, ReadOnlySpan<float> z, int tokens, Span<float> output)
    {
        PackedMatrix upPacked = AsPacked(up);
        PackedMatrix downPacked = AsPacked(down);
        int hiddenLength = checked(tokens * upPacked.Rows);
        float[] rented = ArrayPool<float>.Shared.Rent(hiddenLength);
        try
        {
            Span<float> hidden = rented.AsSpan(0, hiddenLength);
            ManagedSgemm.Multiply(upPacked, z, tokens, hidden);
            Activations.Relu2(hidden);
            ManagedSgemm.Multiply(downPacked, hidden, tokens, output);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    private static PackedMatrix AsPacked(IPreparedLinear weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return weight as PackedMatrix
            ?? throw new ArgumentException($"{weight.GetType().Name} was not prepared by the managed backend.", nameof(weight));
    }
}

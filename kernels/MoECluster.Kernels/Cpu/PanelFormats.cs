using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MoECluster.Kernels.Cpu;

/// <summary>What a <see cref="PackedMatrix"/>'s panels hold per weight.</summary>
internal enum PanelElement
{
    /// <summary>fp32, in output order within each k step.</summary>
    Float32,

    /// <summary>
    /// bfloat16 bits, 2 bytes a weight (checkpoint BF16 weights, copied bit for bit). Within each k step the
    /// outputs are interleaved in groups of two vectors' width: slot 2i holds output i of the group, slot 2i + 1
    /// output (width + i), so one 32-bit lane holds a pair and the micro-kernel widens a pair vector into two fp32
    /// vectors with a shift (the low half) and a mask (the high half).
    /// </summary>
    BFloat16,
}

/// <summary>
/// How a micro-kernel reads one k step of a packed panel as fp32 vectors; the kernels are generic over it, so
/// the JIT compiles one body per format and inlines the loads.
/// </summary>
internal unsafe interface IPanelFormat
{
    /// <summary>Bytes per packed weight.</summary>
    static abstract int ElementBytes { get; }

    /// <summary>The 64 weights of one Vector512 panel step, as four fp32 vectors in output order.</summary>
    static abstract void Load(byte* wp, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3);

    /// <summary>The 16 weights of one Vector256 panel step, as two fp32 vectors in output order.</summary>
    static abstract void Load(byte* wp, out Vector256<float> w0, out Vector256<float> w1);

    /// <summary>Output <paramref name="j"/> (0 ≤ j &lt; 16) of one 16-wide panel step.</summary>
    static abstract float Load(byte* wp, int j);
}

/// <summary>fp32 panels: plain loads.</summary>
internal readonly unsafe struct Float32Panels : IPanelFormat
{
    public static int ElementBytes => sizeof(float);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(byte* wp, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
    {
        float* p = (float*)wp;
        w0 = Vector512.Load(p);
        w1 = Vector512.Load(p + 16);
        w2 = Vector512.Load(p + 32);
        w3 = Vector512.Load(p + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(byte* wp, out Vector256<float> w0, out Vector256<float> w1)
    {
        float* p = (float*)wp;
        w0 = Vector256.Load(p);
        w1 = Vector256.Load(p + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(byte* wp, int j) => ((float*)wp)[j];
}

/// <summary>
/// bfloat16 panels (<see cref="PanelElement.BFloat16"/> layout): each 32-bit lane holds the bits of output i in
/// its low half and of output (width + i) in its high half; a bfloat16 widens exactly to fp32 as its bits moved
/// to the top 16 of 32, so the low outputs are the lane shifted left by 16 and the high outputs the lane with its
/// low 16 bits cleared. Two cheap integer ops per 16 weights, no fp32 copy anywhere.
/// </summary>
internal readonly unsafe struct BFloat16Panels : IPanelFormat
{
    private const uint HighHalf = 0xFFFF_0000;

    public static int ElementBytes => sizeof(ushort);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(byte* wp, out Vector512<float> w0, out Vector512<float> w1, out Vector512<float> w2, out Vector512<float> w3)
    {
        uint* p = (uint*)wp;
        Vector512<uint> a = Vector512.Load(p);
        Vector512<uint> b = Vector512.Load(p + 16);
        Vector512<uint> mask = Vector512.Create(HighHalf);
        w0 = Vector512.ShiftLeft(a, 16).AsSingle();
        w1 = (a & mask).AsSingle();
        w2 = Vector512.ShiftLeft(b, 16).AsSingle();
        w3 = (b & mask).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Load(byte* wp, out Vector256<float> w0, out Vector256<float> w1)
    {
        Vector256<uint> a = Vector256.Load((uint*)wp);
        w0 = Vector256.ShiftLeft(a, 16).AsSingle();
        w1 = (a & Vector256.Create(HighHalf)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(byte* wp, int j) =>
        BitConverter.UInt32BitsToSingle((uint)((ushort*)wp)[Slot(j, 16)] << 16);

    /// <summary>Where output <paramref name="j"/> of a panel step goes, for pair groups <paramref name="group"/> outputs wide.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Slot(int j, int group)
    {
        int half = group / 2;
        int i = j % group;
        return j - i + (i < half ? 2 * i : (2 * (i - half)) + 1);
    }

    /// <summary>Outputs per interleaved pair group on a path: two of its fp32 vectors.</summary>
    public static int Group(KernelPath path) => path == KernelPath.Vector512 ? 32 : 16;
}

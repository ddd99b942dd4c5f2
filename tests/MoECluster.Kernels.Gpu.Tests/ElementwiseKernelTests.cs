using MoECluster.Testing;
using ILGPU;
using ILGPU.Runtime;
using MoECluster.Kernels.Gpu.Kernels;
using MoECluster.Model.Experts;
using MoECluster.Model.Numerics;

namespace MoECluster.Kernels.Gpu.Tests;

[Collection(CpuAcceleratorGroup.Name)]
public sealed class ElementwiseKernelTests(CpuAcceleratorFixture fixture)
{
    private Accelerator Accelerator => fixture.Device.Accelerator;

    [Fact]
    public void Relu2_kernel_equals_the_cpu_activation_bit_for_bit_including_NaN_and_infinities()
    {
        float[] values = [.. Fp64.RandomVector(new Random(Fp64.NewSeed()), 200, 10), float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0f, 0f, 1e-30f];
        float[] expected = (float[])values.Clone();
        Activations.Relu2(expected);
        var relu2 = Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>>(ElementwiseKernels.Relu2Kernel);
        using var buffer = Accelerator.Allocate1D(values);

        relu2(values.Length, buffer.View);
        Accelerator.Synchronize();

        Assert.Equal(expected.Select(BitConverter.SingleToUInt32Bits), buffer.GetAsArray1D().Select(BitConverter.SingleToUInt32Bits));
    }

    [Fact]
    public void Widen_bf16_kernel_is_exact_for_every_sign_and_exponent_including_NaN_and_infinities()
    {
        // Every sign and exponent (9 bits) with mantissas 0, 1, 0x40 (NaN's quiet bit), 0x7F and four random ones.
        var rng = new Random(Fp64.NewSeed());
        ushort[] bits = [.. Enumerable.Range(0, 1 << 9).SelectMany(se => new[] { 0, 1, 0x40, 0x7F, rng.Next(128), rng.Next(128), rng.Next(128), rng.Next(128) }
            .Select(m => (ushort)((se << 7) | m)))];
        var widen = Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<float>>(ElementwiseKernels.WidenBf16Kernel);
        using var source = Accelerator.Allocate1D(bits);
        using var destination = Accelerator.Allocate1D<float>(bits.Length);

        widen(bits.Length, source.View, destination.View);
        Accelerator.Synchronize();

        float[] actual = destination.GetAsArray1D();
        for (int i = 0; i < bits.Length; i++)
        {
            Assert.Equal(BitConverter.SingleToUInt32Bits(ElementConversions.BFloat16ToSingle(bits[i])), BitConverter.SingleToUInt32Bits(actual[i]));
        }
    }

    [Fact]
    public void Gather_kernel_copies_each_permuted_slot_s_row_of_its_token_including_the_pad_columns()
    {
        const int tokens = 4, topK = 3, stride = 8;
        float[] source = Fp64.RandomVector(new Random(Fp64.NewSeed()), tokens * stride);
        int[] slots = [11, 0, 5, 3, 4, 9, -7, 12]; // the last two: garbage past the routed slots, gathered as zeros
        var gather = Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int>(
            ElementwiseKernels.GatherRowsKernel);
        using var src = Accelerator.Allocate1D(source);
        using var slotBuffer = Accelerator.Allocate1D(slots);
        using var destination = Accelerator.Allocate1D(Enumerable.Repeat(float.NaN, slots.Length * stride).ToArray());

        gather(slots.Length * stride, src.View, slotBuffer.View, destination.View, stride, topK, tokens * topK);
        Accelerator.Synchronize();

        float[] actual = destination.GetAsArray1D();
        for (int r = 0; r < 6; r++)
        {
            Assert.Equal(source.AsSpan(slots[r] / topK * stride, stride).ToArray(), actual.AsSpan(r * stride, stride).ToArray());
        }

        Assert.All(actual[(6 * stride)..], v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Drop_unheld_kernel_clears_the_positions_of_slots_naming_an_expert_not_held_or_out_of_range()
    {
        int[] slotExperts = [0, 1, 2, 3, -1, 4];
        int[] slotOf = [0, -1, 1, -1];
        var drop = Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>>(ElementwiseKernels.DropUnheldSlotsKernel);
        using var experts = Accelerator.Allocate1D(slotExperts);
        using var map = Accelerator.Allocate1D(slotOf);
        using var positions = Accelerator.Allocate1D(new[] { 5, 4, 3, 2, 1, 0 });

        drop(slotExperts.Length, experts.View, map.View, positions.View);
        Accelerator.Synchronize();

        Assert.Equal([5, -1, 3, -1, -1, -1], positions.GetAsArray1D());
    }

    [Fact]
    public void Combine_kernel_matches_the_fp64_weighted_sum_over_slots_and_skips_slots_without_a_position()
    {
        var rng = new Random(Fp64.NewSeed());
        const int tokens = 5, topK = 3, width = 7, slotStride = 8;
        int slots = tokens * topK;
        int[] positions = [.. Enumerable.Range(0, slots).OrderBy(_ => rng.Next())];
        positions[4] = -1;
        positions[9] = -1;
        float[] weights = Fp64.RandomVector(rng, slots);
        float[] permuted = Fp64.RandomVector(rng, slots * slotStride);
        var combine = Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(
            ElementwiseKernels.CombineKernel);
        using var outputs = Accelerator.Allocate1D(permuted);
        using var positionBuffer = Accelerator.Allocate1D(positions);
        using var weightBuffer = Accelerator.Allocate1D(weights);
        using var u = Accelerator.Allocate1D(Enumerable.Repeat(float.NaN, tokens * width).ToArray());

        combine(tokens * width, outputs.View, positionBuffer.View, weightBuffer.View, u.View, width, slotStride, topK);
        Accelerator.Synchronize();

        // The CPU combine on slot-ordered outputs, with the unpositioned slots weighted zero.
        var bySlot = new float[slots * width];
        float[] effective = (float[])weights.Clone();
        for (int s = 0; s < slots; s++)
        {
            if (positions[s] < 0)
            {
                effective[s] = 0;
                continue;
            }

            permuted.AsSpan(positions[s] * slotStride, width).CopyTo(bySlot.AsSpan(s * width));
        }

        int[] rowOffsets = [.. Enumerable.Range(0, tokens + 1).Select(t => t * topK)];
        float[] expected = WeightedSum.OverSlots(tokens, rowOffsets, effective, bySlot, width);
        Assert.True(Metrics.RelativeError(u.GetAsArray1D(), [.. expected.Select(v => (double)v)]) <= 1e-6);
    }
}

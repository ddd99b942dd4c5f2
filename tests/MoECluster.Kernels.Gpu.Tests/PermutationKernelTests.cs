using ILGPU;
using ILGPU.Runtime;
using MoECluster.Kernels.Gpu.Kernels;
using MoECluster.Model.Dispatch;

namespace MoECluster.Kernels.Gpu.Tests;

[Collection(CpuAcceleratorGroup.Name)]
public sealed class PermutationKernelTests(CpuAcceleratorFixture fixture)
{
    [Theory]
    [InlineData(7, 4, 12)]
    [InlineData(1, 1, 1)]
    [InlineData(5, 3, 3)]
    [InlineData(11, 6, 300)] // more experts than the scan's group: several scan chunks
    public void Device_permutation_equals_TokenPermutation_for_a_routing_plan(int tokens, int topK, int experts)
    {
        int seed = Fp64.NewSeed();
        int[] slotExperts = RandomPlan(new Random(seed), tokens, topK, experts);
        var expected = new TokenPermutation(slotExperts, experts);
        using var permutation = new IlgpuPermutation(fixture.Device.Accelerator);

        PermutationResult actual = permutation.Permute(slotExperts, topK, experts);

        Assert.Equal(expected.Offsets, actual.Offsets);
        Assert.Equal(expected.Slots, actual.Slots);
        for (int s = 0; s < slotExperts.Length; s++)
        {
            Assert.Equal(s, actual.Slots[actual.Positions[s]]);
        }
    }

    [Fact]
    public void Slots_naming_no_expert_in_range_are_left_out_and_get_no_position()
    {
        int[] slotExperts = [2, -1, 0, 3, 9, 2];
        using var permutation = new IlgpuPermutation(fixture.Device.Accelerator);

        PermutationResult actual = permutation.Permute(slotExperts, topK: 2, experts: 4);

        Assert.Equal([0, 1, 1, 3, 4], actual.Offsets);
        Assert.Equal([2, 0, 5, 3], actual.Slots[..4]);
        Assert.Equal([1, -1, 0, 3, -1, 2], actual.Positions);
    }

    [Fact]
    public void Exclusive_scan_kernel_matches_a_sequential_prefix_sum_across_several_group_chunks()
    {
        var rng = new Random(Fp64.NewSeed());
        int[] values = [.. Enumerable.Range(0, 700).Select(_ => rng.Next(0, 50))];
        Accelerator accelerator = fixture.Device.Accelerator;
        var scan = accelerator.LoadStreamKernel<ArrayView<int>, ArrayView<int>, int>(PermutationKernels.ExclusiveScanKernel);
        using var input = accelerator.Allocate1D(values);
        using var output = accelerator.Allocate1D<int>(values.Length + 1);

        scan(new KernelConfig(1, 256), input.View, output.View, values.Length);
        accelerator.Synchronize();

        var expected = new int[values.Length + 1];
        for (int i = 0; i < values.Length; i++)
        {
            expected[i + 1] = expected[i] + values[i];
        }

        Assert.Equal(expected, output.GetAsArray1D());
    }

    /// <summary>Each row names topK distinct experts, in random order.</summary>
    private static int[] RandomPlan(Random rng, int tokens, int topK, int experts)
    {
        var plan = new int[tokens * topK];
        int[] ids = [.. Enumerable.Range(0, experts)];
        for (int t = 0; t < tokens; t++)
        {
            for (int k = 0; k < topK; k++)
            {
                int j = rng.Next(k, experts);
                (ids[k], ids[j]) = (ids[j], ids[k]);
                plan[(t * topK) + k] = ids[k];
            }
        }

        return plan;
    }
}

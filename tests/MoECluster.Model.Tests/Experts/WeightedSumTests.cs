using MoECluster.Model.Experts;

namespace MoECluster.Model.Tests.Experts;

/// <summary>The combine is each row's fp64 sum of weighted slot outputs in slot order, rounded once, however it is vectorized or split over cores.</summary>
public sealed class WeightedSumTests
{
    [Theory]
    [InlineData(5, 37)]      // small: the calling thread, a vector tail
    [InlineData(400, 301)]   // above the parallel threshold, a vector tail
    [InlineData(256, 1024)]  // the super-shape width
    public void The_combine_equals_the_scalar_fp64_sum_in_slot_order_bit_for_bit(int rows, int width)
    {
        int seed = Random.Shared.Next();
        var rng = new Random(seed);
        int[] offsets = new int[rows + 1];
        for (int r = 0; r < rows; r++)
        {
            offsets[r + 1] = offsets[r] + rng.Next(0, 6); // some rows have no slots
        }

        int slots = offsets[rows];
        float[] weights = [.. Enumerable.Range(0, slots).Select(_ => (float)rng.NextDouble())];
        float[] outputs = [.. Enumerable.Range(0, slots * width).Select(_ => (float)((rng.NextDouble() * 2) - 1) * MathF.Pow(10, rng.Next(-20, 20)))];

        float[] u = WeightedSum.OverSlots(rows, offsets, weights, outputs, width);

        Assert.Equal(rows * width, u.Length);
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < width; i++)
            {
                double acc = 0;
                for (int s = offsets[r]; s < offsets[r + 1]; s++)
                {
                    acc += (double)weights[s] * outputs[(s * width) + i];
                }

                float expected = (float)acc;
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(u[(r * width) + i]), $"seed {seed}: u[{r}, {i}] = {u[(r * width) + i]}, expected {expected}");
            }
        }
    }

    [Fact]
    public void Slot_outputs_read_through_a_row_map_equal_the_same_outputs_in_slot_order_bit_for_bit()
    {
        int seed = Random.Shared.Next();
        var rng = new Random(seed);
        const int rows = 400, width = 301;
        int[] offsets = [.. Enumerable.Range(0, rows + 1).Select(r => 3 * r)];
        int slots = offsets[rows];
        float[] weights = [.. Enumerable.Range(0, slots).Select(_ => (float)rng.NextDouble())];
        float[] inSlotOrder = [.. Enumerable.Range(0, slots * width).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
        int[] outputRows = [.. Enumerable.Range(0, slots).OrderBy(_ => rng.Next())];
        float[] grouped = new float[slots * width];
        for (int s = 0; s < slots; s++)
        {
            inSlotOrder.AsSpan(s * width, width).CopyTo(grouped.AsSpan(outputRows[s] * width, width));
        }

        float[] expected = WeightedSum.OverSlots(rows, offsets, weights, inSlotOrder, width);
        float[] mapped = WeightedSum.OverSlots(rows, offsets, weights, grouped, outputRows, width);

        Assert.True(expected.AsSpan().SequenceEqual(mapped), $"seed {seed}: the sums differ");
    }
}

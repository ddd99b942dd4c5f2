using MoECluster.Model.Compute;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Experts;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Presets;
using MoECluster.Testing;

namespace MoECluster.Model.Tests.Experts;

/// <summary>
/// The grouped experts gather every routed row into one buffer and make one grouped backend call: each slot still gets
/// its own expert's output, and an expert output outside float32 still names that expert.
/// </summary>
public sealed class GroupedExpertsTests
{
    private const int Layer = 1;

    [Fact]
    public void One_grouped_call_gives_every_slot_its_experts_output_bit_for_bit()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 12);
        SyntheticCheckpoint.Write(dir.Path, config, (ulong)Random.Shared.Next());
        using var model = MoeModel.Open(dir.Path);
        var weights = MoeLayerWeights.Load(model.Tensors, config, Layer);
        var backend = new ReferenceBackend();
        var experts = new GroupedExperts(weights.Experts, config.RoutedWidth, config.MoeIntermediateSize, backend, Layer);
        int w = config.RoutedWidth, rows = 9, seed = Random.Shared.Next();
        var rng = new Random(seed);
        float[] z = [.. Enumerable.Range(0, rows * w).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
        int[] slotExperts = [.. Enumerable.Range(0, 3 * rows).Select(_ => rng.Next(config.NRoutedExperts))];
        int[] slotRows = [.. Enumerable.Range(0, slotExperts.Length).Select(s => s / 3)];
        float[] slotOutputs = new float[slotExperts.Length * w];
        slotOutputs.AsSpan().Fill(float.NaN);

        experts.Compute(z, slotRows, new TokenPermutation(slotExperts, config.NRoutedExperts), slotOutputs);

        for (int s = 0; s < slotExperts.Length; s++)
        {
            var e = weights.Experts[slotExperts[s]]!;
            float[] alone = new float[w];
            ((IComputeBackend)backend).ExpertFfn(backend.Prepare(e.Up), backend.Prepare(e.Down), z.AsSpan(slotRows[s] * w, w), 1, alone);
            Assert.True(alone.AsSpan().SequenceEqual(slotOutputs.AsSpan(s * w, w)), $"seed {seed}: slot {s} (expert {slotExperts[s]}) differs");
        }
    }

    [Fact]
    public void The_combined_sums_read_in_place_equal_slot_outputs_scattered_then_summed_bit_for_bit()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 12);
        SyntheticCheckpoint.Write(dir.Path, config, (ulong)Random.Shared.Next());
        using var model = MoeModel.Open(dir.Path);
        var experts = model.ShardExperts(Layer, 0, config.NRoutedExperts);
        int w = config.RoutedWidth, rows = 11, seed = Random.Shared.Next();
        var rng = new Random(seed);
        float[] z = [.. Enumerable.Range(0, rows * w).Select(_ => (float)((rng.NextDouble() * 2) - 1))];
        int[] offsets = new int[rows + 1];
        for (int r = 0; r < rows; r++)
        {
            offsets[r + 1] = offsets[r] + rng.Next(0, 4); // a shard's rows hold 0..3 of their token's pairs
        }

        var pairs = new RoutedPairs(
            offsets,
            [.. Enumerable.Range(0, offsets[rows]).Select(_ => rng.Next(config.NRoutedExperts))],
            [.. Enumerable.Range(0, offsets[rows]).Select(_ => (float)rng.NextDouble())]);
        int[] slotRows = [.. Enumerable.Range(0, pairs.Count).Select(s => Array.FindLastIndex(offsets, o => o <= s))];
        float[] slotOutputs = new float[pairs.Count * w];
        experts.Compute(z, slotRows, new TokenPermutation(pairs.Experts, config.NRoutedExperts), slotOutputs);
        float[] expected = WeightedSum.OverSlots(pairs, slotOutputs, w);

        float[] combined = experts.ComputeCombined(z, pairs);

        Assert.True(expected.AsSpan().SequenceEqual(combined), $"seed {seed}: the combined sums differ");
    }

    [Fact]
    public void A_non_finite_output_in_one_experts_rows_names_that_expert()
    {
        using var dir = new TempDirectory();
        var config = ModelPresets.Get("tiny").Build(experts: 8);
        SyntheticCheckpoint.Write(dir.Path, config, 7);
        using var model = MoeModel.Open(dir.Path);
        var weights = MoeLayerWeights.Load(model.Tensors, config, Layer);
        var experts = new GroupedExperts(weights.Experts, config.RoutedWidth, config.MoeIntermediateSize, new OverflowingGroup(2), Layer);
        int w = config.RoutedWidth;

        // Slots routed to experts 1, 3, 4 and 6 (grouped in that order): the third group is expert 4's.
        int[] slotExperts = [6, 4, 1, 3, 4, 6];
        var e = Assert.Throws<ForwardOverflowException>(() =>
            experts.Compute(new float[3 * w], [0, 0, 1, 1, 2, 2], new TokenPermutation(slotExperts, config.NRoutedExperts), new float[slotExperts.Length * w]));

        Assert.Equal("the output of expert 4 (its FFN down(relu(up(z))²))", e.Stage);
        Assert.StartsWith($"layer {Layer}: ", e.Message, StringComparison.Ordinal);
    }

    /// <summary>The reference backend, but the last output row of group <paramref name="group"/> of a grouped call is +∞.</summary>
    private sealed class OverflowingGroup(int group) : IComputeBackend
    {
        private readonly ReferenceBackend _inner = new();

        public string Name => "overflowing";

        public IPreparedLinear Prepare(WeightMatrix weight) => _inner.Prepare(weight);

        public void Linear(IPreparedLinear weight, ReadOnlySpan<float> x, int tokens, Span<float> y) => _inner.Linear(weight, x, tokens, y);

        public void ExpertFfns(ReadOnlySpan<ExpertFfnGroup> groups, ReadOnlySpan<float> z, Span<float> output)
        {
            ((IComputeBackend)_inner).ExpertFfns(groups, z, output);
            var g = groups[group];
            int width = g.Down.Rows;
            output[((g.FirstRow + g.Rows - 1) * width) + width - 1] = float.PositiveInfinity;
        }
    }
}

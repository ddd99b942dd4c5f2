using System.Globalization;
using MoECluster.Model.Dispatch;
using MoECluster.Model.Layers;
using MoECluster.Model.Numerics;
using MoECluster.Model.Routing;
using Xunit;

namespace MoECluster.Testing;

/// <summary>
/// What every <see cref="IExpertDispatcher"/> must do, run against each one (derive, give the model and a dispatcher of
/// it): for a routing plan and routed rows z, the combined sums u[t] = Σ_k w_tk · E_tk(z[t]) — every element
/// written, within 1e-6 relative L2 of a float64 reference written here from the checkpoint's tensors (fp32 on the
/// wire) and of the in-process dispatcher — on fresh random plans, including tokens with several experts in one
/// shard, tokens whose experts all sit in one shard, experts with no tokens, one token and 64; and an input too large
/// for float32 refused with <see cref="ForwardOverflowException"/> naming the layer and the input's magnitude.
/// </summary>
public abstract class ExpertDispatcherContract
{
    public const double Tolerance = 1e-6;

    /// <summary>The model the dispatcher serves, opened in this process (the reference reads its tensors).</summary>
    protected abstract MoeModel Model { get; }

    /// <summary>The dispatcher under test (on the fp32 wire, where it has one).</summary>
    protected abstract IExpertDispatcher Dispatcher();

    private int Layer => Model.Config.MoeLayers[^1];

    private int Width => Model.Config.RoutedWidth;

    private int Experts => Model.Config.NRoutedExperts;

    private int TopK => Model.Config.NumExpertsPerTok;

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(64)]
    public async Task Random_plans_give_the_float64_weighted_sums_of_the_experts(int tokens)
    {
        var (seed, rng) = Fresh();
        var plan = Plan(tokens, rng, _ => Enumerable.Range(0, Experts).OrderBy(_ => rng.Next()).Take(TopK));
        await AssertDispatchesAsync(plan, Rows(tokens, rng), seed);
    }

    [Fact]
    public async Task Tokens_with_several_experts_in_one_shard_get_each_of_them()
    {
        // Pairs of neighbouring experts (e, e + 1): in one shard unless e ends a shard's range.
        var (seed, rng) = Fresh();
        int tokens = 33;
        var plan = Plan(tokens, rng, _ =>
        {
            int first = rng.Next(0, Experts - TopK + 1);
            return Enumerable.Range(first, TopK).OrderBy(_ => rng.Next());
        });
        await AssertDispatchesAsync(plan, Rows(tokens, rng), seed);
    }

    [Fact]
    public async Task A_token_whose_experts_are_all_in_one_shard_travels_once()
    {
        // Experts 0 .. K-1: the first shard's whenever a shard holds K experts or more; other tokens spread out.
        var (seed, rng) = Fresh();
        int tokens = 9;
        var plan = Plan(tokens, rng, t => t % 3 == 0
            ? Enumerable.Range(0, TopK)
            : Enumerable.Range(0, Experts).OrderBy(_ => rng.Next()).Take(TopK));
        await AssertDispatchesAsync(plan, Rows(tokens, rng), seed);
    }

    [Fact]
    public async Task Experts_with_no_tokens_are_left_out()
    {
        // Only the first half of the experts is routed to: the other half (and its shards) get nothing.
        var (seed, rng) = Fresh();
        int tokens = 20;
        int used = Math.Max(TopK, Experts / 2);
        var plan = Plan(tokens, rng, _ => Enumerable.Range(0, used).OrderBy(_ => rng.Next()).Take(TopK));
        await AssertDispatchesAsync(plan, Rows(tokens, rng), seed);
    }

    [Fact]
    public async Task Every_element_of_the_sums_is_written()
    {
        // Weights of one: every row is a plain sum of expert outputs, none of which is zero for these rows.
        var (seed, rng) = Fresh();
        int tokens = 64;
        var plan = Plan(tokens, rng, _ => Enumerable.Range(0, Experts).OrderBy(_ => rng.Next()).Take(TopK));
        Array.Fill(plan.Weights, 1f);
        float[] z = Rows(tokens, rng);
        float[] u = await Dispatcher().DispatchAsync(Request(plan, z, z));
        Assert.Equal(tokens * Width, u.Length);
        double[] expected = Reference(plan, z);
        for (int t = 0; t < tokens; t++)
        {
            double error = Metrics.RelativeError(u.AsSpan(t * Width, Width), expected.AsSpan(t * Width, Width));
            Assert.True(error <= 10 * Tolerance, $"seed {seed}: row {t} of {tokens}: relative error {error:E2}");
        }
    }

    [Fact]
    public async Task Rows_too_large_for_float32_are_refused_naming_the_layer_and_the_input_magnitude()
    {
        var (seed, rng) = Fresh();
        int tokens = 3;
        var plan = Plan(tokens, rng, _ => Enumerable.Range(0, Experts).OrderBy(_ => rng.Next()).Take(TopK));
        float[] z = [.. Rows(tokens, rng).Select(v => v * 1e30f)];
        float[] x = [.. Enumerable.Range(0, tokens * Model.Config.HiddenSize).Select(i => i == 5 ? 4.5e30f : 1f)];
        var e = await Assert.ThrowsAsync<ForwardOverflowException>(async () => await Dispatcher().DispatchAsync(Request(plan, z, x)));
        Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"layer {Layer}"), e.Message, StringComparison.Ordinal);
        Assert.True(e.Message.Contains(4.5e30f.ToString("G3", CultureInfo.InvariantCulture), StringComparison.Ordinal), $"seed {seed}: {e.Message}");
    }

    private async Task AssertDispatchesAsync(RoutingPlan plan, float[] z, int seed)
    {
        float[] u = await Dispatcher().DispatchAsync(Request(plan, z, z));
        Assert.Equal(plan.Tokens * Width, u.Length);
        Assert.All(u, v => Assert.True(float.IsFinite(v)));
        double error = Metrics.RelativeError(u, Reference(plan, z));
        Assert.True(error <= Tolerance, $"seed {seed}: relative error {error:E2} against the float64 reference");
        float[] local = new LocalExpertDispatcher(Model.Mixer(Layer).Experts).Dispatch(Request(plan, z, z));
        double other = Metrics.RelativeError(u, local);
        Assert.True(other <= Tolerance, $"seed {seed}: relative error {other:E2} against the in-process dispatcher");
    }

    private ExpertDispatchRequest Request(RoutingPlan plan, float[] z, float[] input) =>
        new(Layer, plan, z, Width, input, System.Diagnostics.Stopwatch.GetTimestamp());

    private static (int Seed, Random Random) Fresh()
    {
        int seed = Random.Shared.Next();
        return (seed, new Random(seed));
    }

    private RoutingPlan Plan(int tokens, Random rng, Func<int, IEnumerable<int>> expertsOf)
    {
        var plan = new RoutingPlan(tokens, TopK);
        for (int t = 0; t < tokens; t++)
        {
            int[] experts = [.. expertsOf(t)];
            Assert.Equal(TopK, experts.Distinct().Count());
            experts.CopyTo(plan.Experts, t * TopK);
            for (int k = 0; k < TopK; k++)
            {
                plan.Weights[(t * TopK) + k] = (float)(0.05 + rng.NextDouble());
            }
        }

        return plan;
    }

    private float[] Rows(int tokens, Random rng) =>
        [.. Enumerable.Range(0, tokens * Width).Select(_ => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())))];

    /// <summary>u in float64 from the checkpoint's expert tensors: down(relu(up z)²) per pair, weighted, summed.</summary>
    private double[] Reference(RoutingPlan plan, float[] z)
    {
        int w = Width, m = Model.Config.MoeIntermediateSize;
        var weights = new Dictionary<int, (double[] Up, double[] Down)>();
        var u = new double[plan.Tokens * w];
        for (int t = 0; t < plan.Tokens; t++)
        {
            for (int k = 0; k < plan.TopK; k++)
            {
                int e = plan.ExpertsOf(t)[k];
                if (!weights.TryGetValue(e, out var ew))
                {
                    ew = (Tensor(MoeTensorNames.ExpertUp(Layer, e)), Tensor(MoeTensorNames.ExpertDown(Layer, e)));
                    weights[e] = ew;
                }

                var h = new double[m];
                for (int o = 0; o < m; o++)
                {
                    double s = 0;
                    for (int i = 0; i < w; i++)
                    {
                        s += ew.Up[(o * w) + i] * z[(t * w) + i];
                    }

                    h[o] = s > 0 ? s * s : 0;
                }

                double weight = plan.WeightsOf(t)[k];
                for (int o = 0; o < w; o++)
                {
                    double s = 0;
                    for (int i = 0; i < m; i++)
                    {
                        s += ew.Down[(o * m) + i] * h[i];
                    }

                    u[(t * w) + o] += weight * s;
                }
            }
        }

        return u;
    }

    private double[] Tensor(string name) => [.. Model.Tensors.GetTensor(name).ReadAllAsFloat32().Select(v => (double)v)];
}

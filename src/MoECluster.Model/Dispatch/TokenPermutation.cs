using MoECluster.Model.Routing;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// The token dispatcher's permutation (Megatron-Core's "permute"): the (token, slot) pairs of a routing plan
/// grouped by expert. Slots of expert e are <c>Slots[Offsets[e] .. Offsets[e+1])</c>, each a flat index
/// t·K + k into the plan, in token order. Experts then run on contiguous groups and results are scattered
/// back by slot ("unpermute").
/// </summary>
public sealed class TokenPermutation
{
    public TokenPermutation(RoutingPlan plan, int experts)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        Experts = experts;
        Offsets = new int[experts + 1];
        foreach (int e in plan.Experts)
        {
            if ((uint)e >= (uint)experts)
            {
                throw new ArgumentException($"routing plan names expert {e}, outside 0..{experts - 1}", nameof(plan));
            }

            Offsets[e + 1]++;
        }

        for (int e = 0; e < experts; e++)
        {
            Offsets[e + 1] += Offsets[e];
        }

        Slots = new int[plan.Experts.Length];
        var next = Offsets[..experts];
        for (int s = 0; s < plan.Experts.Length; s++)
        {
            Slots[next[plan.Experts[s]]++] = s;
        }
    }

    public int Experts { get; }

    public int[] Offsets { get; }

    public int[] Slots { get; }

    public int CountOf(int expert) => Offsets[expert + 1] - Offsets[expert];

    public ReadOnlySpan<int> SlotsOf(int expert) => Slots.AsSpan(Offsets[expert], CountOf(expert));
}

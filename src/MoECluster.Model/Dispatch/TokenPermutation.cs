using MoECluster.Model.Routing;

namespace MoECluster.Model.Dispatch;

/// <summary>
/// The token dispatcher's permutation (Megatron-Core's "permute"): slots grouped by expert. A slot is one
/// (row, expert) pair: for a routing plan, slot t·K + k; for a shard request, the flat pair index. Slots of
/// expert e are <c>Slots[Offsets[e] .. Offsets[e+1])</c>, in slot order. Experts then run on contiguous groups
/// and results are scattered back by slot ("unpermute").
/// </summary>
public sealed class TokenPermutation
{
    /// <summary>Groups the slots of a routing plan (slot t·K + k → expert).</summary>
    public TokenPermutation(RoutingPlan plan, int experts)
        : this(plan.Experts, experts)
    {
    }

    /// <summary>Groups slots given as slot → expert id.</summary>
    public TokenPermutation(ReadOnlySpan<int> slotExperts, int experts)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(experts, 1);
        Experts = experts;
        Offsets = new int[experts + 1];
        foreach (int e in slotExperts)
        {
            if ((uint)e >= (uint)experts)
            {
                throw new ArgumentException($"slot names expert {e}, outside 0..{experts - 1}", nameof(slotExperts));
            }

            Offsets[e + 1]++;
        }

        for (int e = 0; e < experts; e++)
        {
            Offsets[e + 1] += Offsets[e];
        }

        Slots = new int[slotExperts.Length];
        var next = Offsets[..experts];
        for (int s = 0; s < slotExperts.Length; s++)
        {
            Slots[next[slotExperts[s]]++] = s;
        }
    }

    public int Experts { get; }

    public int[] Offsets { get; }

    public int[] Slots { get; }

    public int CountOf(int expert) => Offsets[expert + 1] - Offsets[expert];

    public ReadOnlySpan<int> SlotsOf(int expert) => Slots.AsSpan(Offsets[expert], CountOf(expert));
}

using System.Runtime.CompilerServices;

namespace MoECluster.Model.Numerics;

/// <summary>
/// xoshiro256** seeded through SplitMix64: a fixed, documented generator, so a synthetic checkpoint is the same
/// bytes for the same seed on every machine and .NET version (System.Random's seeded sequence is not a contract).
/// </summary>
public struct DeterministicRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public DeterministicRandom(ulong seed)
    {
        _s0 = SplitMix(ref seed);
        _s1 = SplitMix(ref seed);
        _s2 = SplitMix(ref seed);
        _s3 = SplitMix(ref seed);
    }

    /// <summary>A stream for one named thing (a tensor) and one chunk of it, independent of every other.</summary>
    public static DeterministicRandom For(ulong seed, string name, long chunk = 0)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in name)
        {
            h = (h ^ c) * 1099511628211UL;
        }

        ulong mixed = seed ^ (h * 0x9E3779B97F4A7C15UL) ^ ((ulong)chunk * 0xD1B54A32D192ED03UL);
        return new DeterministicRandom(mixed);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 24 bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float NextSingle() => (NextUInt64() >> 40) * (1.0f / (1 << 24));

    /// <summary>Uniform in [-a, a).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float NextSymmetric(float a) => ((NextSingle() * 2f) - 1f) * a;

    /// <summary>Standard normal (Box–Muller).</summary>
    public double NextGaussian()
    {
        double u1 = ((NextUInt64() >> 11) + 1.0) * (1.0 / (1UL << 53));
        double u2 = (NextUInt64() >> 11) * (1.0 / (1UL << 53));
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    private static ulong SplitMix(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}

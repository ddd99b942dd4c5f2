using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MoECluster.Model.Numerics;

/// <summary>
/// fp32 × fp32 products accumulated in fp64: the accumulation the reference path uses, so its rounding error
/// does not grow with the reduction length (d = 8192 and more).
/// </summary>
public static class Float64Dot
{
    public static double Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException($"lengths differ: {a.Length} and {b.Length}", nameof(b));
        }

        ref float pa = ref MemoryMarshal.GetReference(a);
        ref float pb = ref MemoryMarshal.GetReference(b);
        int n = a.Length;
        int i = 0;
        double sum = 0;
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var acc0 = Vector256<double>.Zero;
            var acc1 = Vector256<double>.Zero;
            for (; i <= n - 8; i += 8)
            {
                var va = Vector256.LoadUnsafe(ref pa, (nuint)i);
                var vb = Vector256.LoadUnsafe(ref pb, (nuint)i);
                acc0 = Vector256.FusedMultiplyAdd(Vector256.WidenLower(va), Vector256.WidenLower(vb), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.WidenUpper(va), Vector256.WidenUpper(vb), acc1);
            }

            sum = Vector256.Sum(acc0 + acc1);
        }

        for (; i < n; i++)
        {
            sum += (double)Unsafe.Add(ref pa, i) * Unsafe.Add(ref pb, i);
        }

        return sum;
    }
}

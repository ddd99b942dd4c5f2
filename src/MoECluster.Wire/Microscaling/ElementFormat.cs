using System.Globalization;

namespace MoECluster.Wire.Microscaling;

/// <summary>
/// A small floating-point element type of the OCP Microscaling (MX) v1.0 formats: sign, <see cref="ExponentBits"/>,
/// <see cref="MantissaBits"/>, <see cref="Bias"/> (docs/MICROSCALING.md). Decoding reads a table of every code point
/// built from that definition; encoding rounds to nearest, ties to even mantissa, subnormals included, and saturates to
/// the largest normal (never NaN or Inf from overflow); the sign bit is the input's sign, so −0.0 and negative values
/// that round to zero encode as −0.
/// </summary>
public sealed class ElementFormat
{
    private readonly float[] _values;
    private readonly int _minExponent;

    /// <summary>2^(M − e) for each exponent e from the smallest normal's to the largest's: one quantum's inverse.</summary>
    private readonly double[] _inverseQuantum;

    private ElementFormat(string name, int exponentBits, int mantissaBits, int bias, Special special)
    {
        Name = name;
        ExponentBits = exponentBits;
        MantissaBits = mantissaBits;
        Bias = bias;
        Bits = 1 + exponentBits + mantissaBits;
        _minExponent = 1 - bias;
        _values = new float[1 << Bits];
        for (int code = 0; code < _values.Length; code++)
        {
            _values[code] = Define(code, special);
        }

        // The largest finite magnitude's code: codes grow with magnitude, so saturation is a clamp of the code.
        MaxCode = Enumerable.Range(0, SignBit).Last(c => float.IsFinite(_values[c]));
        MaxNormal = _values[MaxCode];
        MaxExponent = Math.ILogB(MaxNormal);
        _inverseQuantum = [.. Enumerable.Range(_minExponent, MaxExponent - _minExponent + 1).Select(e => Math.ScaleB(1.0, mantissaBits - e))];
    }

    private enum Special
    {
        /// <summary>Every code is finite (FP6, FP4).</summary>
        None,

        /// <summary>Only S.1111.111 is NaN (OCP FP8 E4M3).</summary>
        AllOnesNaN,

        /// <summary>The all-ones exponent is Inf (mantissa 0) or NaN (IEEE-style: FP8 E5M2).</summary>
        Ieee,
    }

    /// <summary>FP8 E4M3 (bias 7, ±448, NaN = S.1111.111, no Inf).</summary>
    public static ElementFormat E4M3 { get; } = new("e4m3", 4, 3, 7, Special.AllOnesNaN);

    /// <summary>FP8 E5M2 (bias 15, ±57344, IEEE Inf and NaN).</summary>
    public static ElementFormat E5M2 { get; } = new("e5m2", 5, 2, 15, Special.Ieee);

    /// <summary>FP6 E3M2 (bias 3, ±28).</summary>
    public static ElementFormat E3M2 { get; } = new("e3m2", 3, 2, 3, Special.None);

    /// <summary>FP6 E2M3 (bias 1, ±7.5).</summary>
    public static ElementFormat E2M3 { get; } = new("e2m3", 2, 3, 1, Special.None);

    /// <summary>FP4 E2M1 (bias 1, ±6: 0, 0.5, 1, 1.5, 2, 3, 4, 6).</summary>
    public static ElementFormat E2M1 { get; } = new("e2m1", 2, 1, 1, Special.None);

    public string Name { get; }

    public int ExponentBits { get; }

    public int MantissaBits { get; }

    public int Bias { get; }

    /// <summary>Bits of one element, sign included (8, 6 or 4).</summary>
    public int Bits { get; }

    /// <summary>The sign bit of a code.</summary>
    public int SignBit => 1 << (Bits - 1);

    /// <summary>The code of the largest finite magnitude (positive sign).</summary>
    public int MaxCode { get; }

    /// <summary>The largest finite magnitude (E4M3 448, E5M2 57344, E3M2 28, E2M3 7.5, E2M1 6).</summary>
    public double MaxNormal { get; }

    /// <summary>The binary exponent of <see cref="MaxNormal"/>: the "emax_elem" of the MX shared-exponent rule.</summary>
    public int MaxExponent { get; }

    /// <summary>The value of every code point, 2^<see cref="Bits"/> of them (NaN and ±Inf where the type has them).</summary>
    public ReadOnlySpan<float> Values => _values;

    /// <summary>The value of <paramref name="code"/> (the low <see cref="Bits"/> bits).</summary>
    public float Value(int code) => _values[code & (_values.Length - 1)];

    /// <summary>Rounds <paramref name="value"/> (finite) to this type's nearest code, ties to even, saturating.</summary>
    public int Encode(double value)
    {
        long bits = BitConverter.DoubleToInt64Bits(value);
        int sign = bits < 0 ? SignBit : 0;
        double magnitude = Math.Abs(value);
        if (magnitude == 0)
        {
            return sign;
        }

        // The binary exponent from the bits (a subnormal double's reads −1023: below every element type's, so clamped).
        int exponent = (int)((bits >> 52) & 0x7FF) - 1023;
        if (exponent > MaxExponent)
        {
            return sign | MaxCode;
        }

        exponent = Math.Max(exponent, _minExponent);

        // The quantum at this exponent is 2^(exponent − M): the magnitude in quanta, rounded to even, is the code's low
        // bits above the exponent's first code; a carry into the next binade lands on the next exponent's first code.
        double quanta = Math.Round(magnitude * _inverseQuantum[exponent - _minExponent], MidpointRounding.ToEven);
        long code = ((long)(exponent - _minExponent) << MantissaBits) + (long)quanta;
        return sign | (int)Math.Min(code, MaxCode);
    }

    public override string ToString() => Name;

    private float Define(int code, Special special)
    {
        int mantissaMask = (1 << MantissaBits) - 1;
        int exponentField = (code >> MantissaBits) & ((1 << ExponentBits) - 1);
        int mantissa = code & mantissaMask;
        double sign = (code >> (Bits - 1)) != 0 ? -1 : 1;
        int allOnes = (1 << ExponentBits) - 1;
        switch (special)
        {
            case Special.AllOnesNaN when exponentField == allOnes && mantissa == mantissaMask:
                return float.NaN;
            case Special.Ieee when exponentField == allOnes:
                return mantissa == 0 ? (float)(sign * double.PositiveInfinity) : float.NaN;
        }

        double magnitude = exponentField == 0
            ? Math.ScaleB(mantissa, _minExponent - MantissaBits)
            : Math.ScaleB((1 << MantissaBits) + mantissa, exponentField - Bias - MantissaBits);
        return (float)(sign * magnitude);
    }

    /// <summary>"e4m3 holds ±448".</summary>
    internal string Range => string.Create(CultureInfo.InvariantCulture, $"{Name} holds ±{MaxNormal:G}");
}

using System.Globalization;

namespace MoECluster.Model.Numerics;

/// <summary>
/// A forward whose inputs and weights are finite produced an infinity or NaN: a value left the float32 range
/// (|v| &gt; 3.4e38, or ±65504 on an fp16 wire). The input is too large for the model to be computed in float32,
/// which is the caller's to fix (a 4xx at the gateway), never an answer to return.
/// </summary>
public sealed class ForwardOverflowException : ArithmeticException
{
    public ForwardOverflowException()
        : base("the forward left the float32 range")
    {
    }

    public ForwardOverflowException(string message)
        : base(message)
    {
    }

    public ForwardOverflowException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>An overflow whose step is known (as a process that received it from another keeps it).</summary>
    public ForwardOverflowException(string message, string? stage, Exception? innerException)
        : base(message, innerException) => Stage = stage;

    /// <summary>The step that overflowed (e.g. "the output of expert 5 ..."), where this process knows it.</summary>
    public string? Stage { get; }

    /// <summary>
    /// "layer L: the float32 range is exceeded in STAGE for this input, whose largest magnitude is M: ..." —
    /// <paramref name="stage"/> names the step (e.g. "the expert FFN of expert 5").
    /// </summary>
    public static ForwardOverflowException At(int layer, string stage, float inputMaxAbs, Exception? innerException = null) => new(string.Create(CultureInfo.InvariantCulture,
        $"layer {layer}: the float32 range (|value| ≤ 3.4e38) is exceeded in {stage} for this input, whose largest magnitude is {inputMaxAbs:G3}; the forward cannot be computed in float32 for inputs this large: scale them down"),
        stage, innerException);

    /// <summary>Throws <see cref="At"/> when <paramref name="values"/> holds a NaN or an infinity.</summary>
    public static void ThrowIfNonFinite(ReadOnlySpan<float> values, int layer, string stage, ReadOnlySpan<float> input)
    {
        if (FloatRange.FirstNonFinite(values) >= 0)
        {
            throw At(layer, stage, FloatRange.MaxAbs(input));
        }
    }
}

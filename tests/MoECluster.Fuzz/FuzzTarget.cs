namespace MoECluster.Fuzz;

/// <summary>
/// One decoder of untrusted bytes: valid <see cref="Seeds"/> to mutate, the <see cref="Decode"/> call (which also uses
/// what it accepts, as a receiver would), and the exceptions its documentation promises for bad input.
/// </summary>
public sealed class FuzzTarget
{
    public required string Name { get; init; }

    /// <summary>What is decoded, in a few words (for reports).</summary>
    public required string Description { get; init; }

    /// <summary>Valid inputs: every one must decode without an exception.</summary>
    public required IReadOnlyList<byte[]> Seeds { get; init; }

    public required IMutator Mutator { get; init; }

    /// <summary>Decodes one input: returns when it is accepted, throws a refusal (see <see cref="IsRefusal"/>) when not.</summary>
    public required Action<byte[]> Decode { get; init; }

    /// <summary>The documented exception types for bad input: anything else is a crash.</summary>
    public required Func<Exception, bool> IsRefusal { get; init; }

    /// <summary>The documented refusal types, by name, for reports.</summary>
    public required string Refusals { get; init; }

    /// <summary>Allocation allowed per decode: <see cref="BytesPerInputByte"/> × input length + <see cref="ConstantBytes"/>.</summary>
    public long BytesPerInputByte { get; init; } = 64;

    public long ConstantBytes { get; init; } = 64 * 1024;

    /// <summary>Whether each input goes through a real file (slower; each has an in-memory twin).</summary>
    public bool UsesFiles { get; init; }

    public long AllocationBound(int inputLength) => (BytesPerInputByte * inputLength) + ConstantBytes;
}

/// <summary>Makes a new input from a valid one (the seeds are there for splicing).</summary>
public interface IMutator
{
    byte[] Mutate(byte[] valid, IReadOnlyList<byte[]> seeds, Random random);
}

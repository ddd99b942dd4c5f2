using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace MoECluster.Fuzz;

/// <summary>What one decode of one input did.</summary>
public enum FuzzOutcome
{
    Accepted,
    Refused,
    Crashed,
}

/// <summary>An input that crashed the decoder, allocated past the bound, or took too long.</summary>
public sealed record FuzzFinding(string Kind, byte[] Input, string Detail)
{
    public override string ToString()
    {
        string hex = Convert.ToHexString(Input.AsSpan(0, Math.Min(Input.Length, 512)));
        return string.Create(CultureInfo.InvariantCulture, $"{Kind} on {Input.Length} bytes {hex}{(Input.Length > 512 ? "..." : string.Empty)}: {Detail}");
    }
}

public sealed record FuzzReport(
    string Target,
    int Seed,
    long Iterations,
    long Accepted,
    long Refused,
    long Crashes,
    long AllocationViolations,
    long SlowInputs,
    double Seconds,
    long MaxInputBytes,
    long MaxAllocatedBytes,
    double MaxBoundFraction,
    double SlowestMilliseconds,
    IReadOnlyList<FuzzFinding> Findings)
{
    public double InputsPerSecond => Iterations / Math.Max(Seconds, 1e-9);

    public string Summary => string.Create(
        CultureInfo.InvariantCulture,
        $"{Target}: {Iterations:N0} inputs in {Seconds:F1} s ({InputsPerSecond:N0}/s), seed {Seed}: {Accepted:N0} accepted, {Refused:N0} refused, {Crashes} crashes, {AllocationViolations} allocation-bound violations, {SlowInputs} inputs over {FuzzRunner.SlowInputMilliseconds} ms; largest input {MaxInputBytes:N0} B, most allocated by one decode {MaxAllocatedBytes:N0} B, at most {MaxBoundFraction:P0} of its bound, slowest input {SlowestMilliseconds:F1} ms");

    public string Json => string.Create(
        CultureInfo.InvariantCulture,
        $"{{\"target\":\"{Target}\",\"seed\":{Seed},\"iterations\":{Iterations},\"accepted\":{Accepted},\"refused\":{Refused},\"crashes\":{Crashes},\"allocation_violations\":{AllocationViolations},\"slow_inputs\":{SlowInputs},\"max_allocated_bytes\":{MaxAllocatedBytes},\"max_bound_fraction\":{MaxBoundFraction:F4},\"seconds\":{Seconds:F3},\"inputs_per_second\":{InputsPerSecond:F0}}}");
}

/// <summary>
/// The in-process fuzz loop: each iteration mutates a seed (one in twenty is random bytes instead), decodes it, and
/// sorts the outcome: accepted, refused with a documented exception, or a crash (any other exception). Around
/// every decode it measures the bytes this thread allocated; past the target's bound (k × input length + c) the
/// input is decoded again (first-use costs such as JIT or resource loading do not repeat) and counted a violation
/// only if it is still past the bound: an allocation sized by a length the input claims, rather than by its bytes,
/// shows up this way.
/// </summary>
public static class FuzzRunner
{
    public const double SlowInputMilliseconds = 1000;

    private const int KeptFindings = 8;

    public static FuzzReport Run(FuzzTarget target, long iterations, int seed, Action<FuzzFinding>? onFinding = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        var random = new Random(seed);
        var findings = new List<FuzzFinding>();
        long accepted = 0, refused = 0, crashes = 0, violations = 0, slow = 0, maxInput = 0, maxAllocated = 0;
        double maxFraction = 0, slowest = 0;

        // Warm-up: every seed must be accepted (else the harness or the seeds are wrong), and first-use costs are paid.
        foreach (byte[] valid in target.Seeds)
        {
            if (Once(target, valid, out _, out Exception? error) != FuzzOutcome.Accepted)
            {
                throw new InvalidOperationException($"{target.Name}: a valid seed was not accepted: {error}");
            }
        }

        for (int i = 0; i < 200; i++)
        {
            Once(target, target.Mutator.Mutate(target.Seeds[random.Next(target.Seeds.Count)], target.Seeds, random), out _, out _);
        }

        var clock = Stopwatch.StartNew();
        for (long i = 0; i < iterations; i++)
        {
            byte[] input = i % 20 == 19
                ? RandomBytes(random)
                : target.Mutator.Mutate(target.Seeds[random.Next(target.Seeds.Count)], target.Seeds, random);
            maxInput = Math.Max(maxInput, input.Length);
            long started = Stopwatch.GetTimestamp();
            FuzzOutcome outcome = Once(target, input, out long allocated, out Exception? error);
            double ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            slowest = Math.Max(slowest, ms);
            switch (outcome)
            {
                case FuzzOutcome.Accepted:
                    accepted++;
                    break;
                case FuzzOutcome.Refused:
                    refused++;
                    break;
                default:
                    crashes++;
                    Keep(new FuzzFinding("crash", input, error!.ToString()));
                    continue;
            }

            if (allocated > target.AllocationBound(input.Length))
            {
                // Decode again: a violation that does not repeat was a first-use cost, not the input's.
                Once(target, input, out allocated, out _);
                if (allocated > target.AllocationBound(input.Length))
                {
                    violations++;
                    Keep(new FuzzFinding("allocation", input, string.Create(
                        CultureInfo.InvariantCulture,
                        $"{allocated:N0} bytes allocated, bound {target.AllocationBound(input.Length):N0} ({target.BytesPerInputByte} x {input.Length} + {target.ConstantBytes})")));
                }
            }

            maxAllocated = Math.Max(maxAllocated, allocated);
            maxFraction = Math.Max(maxFraction, allocated / (double)target.AllocationBound(input.Length));
            if (ms > SlowInputMilliseconds)
            {
                // Time once more: a GC pause or a busy machine is not the input's doing.
                started = Stopwatch.GetTimestamp();
                Once(target, input, out _, out _);
                double again = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                if (again > SlowInputMilliseconds)
                {
                    slow++;
                    Keep(new FuzzFinding("slow", input, string.Create(CultureInfo.InvariantCulture, $"{ms:F0} ms, then {again:F0} ms")));
                }
            }
        }

        clock.Stop();
        return new FuzzReport(target.Name, seed, iterations, accepted, refused, crashes, violations, slow, clock.Elapsed.TotalSeconds, maxInput, maxAllocated, maxFraction, slowest, findings);

        void Keep(FuzzFinding finding)
        {
            onFinding?.Invoke(finding);
            if (findings.Count < KeptFindings)
            {
                findings.Add(finding);
            }
        }
    }

    /// <summary>Decodes one input, sorting the outcome and counting what this thread allocated.</summary>
    public static FuzzOutcome Once(FuzzTarget target, byte[] input, out long allocated, out Exception? error)
    {
        ArgumentNullException.ThrowIfNull(target);
        error = null;
        FuzzOutcome outcome;
        long before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            target.Decode(input);
            outcome = FuzzOutcome.Accepted;
        }
        catch (Exception e) when (target.IsRefusal(e))
        {
            outcome = FuzzOutcome.Refused;
        }
#pragma warning disable CA1031 // Anything else is exactly what the fuzzer looks for.
        catch (Exception e)
#pragma warning restore CA1031
        {
            error = e;
            outcome = FuzzOutcome.Crashed;
        }

        allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        return outcome;
    }

    /// <summary>Random bytes, 0 to 300 of them; half the time after a MessagePack map or array header (0x9c: a ShardRequest's 12 keys; 0x9b: its version-1 11), a JSON brace or a safetensors-like prefix.</summary>
    public static byte[] RandomBytes(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var bytes = new byte[random.Next(0, 301)];
        random.NextBytes(bytes);
        if (bytes.Length > 0 && random.Next(2) == 0)
        {
            byte[][] starts = [[0x8b], [0x85], [0x83], [0x9b], [0x9c], [0x84], [0x95], "{\""u8.ToArray(), "[["u8.ToArray()];
            byte[] start = starts[random.Next(starts.Length)];
            start.AsSpan(0, Math.Min(start.Length, bytes.Length)).CopyTo(bytes);
        }

        return bytes;
    }

    public static string Describe(IEnumerable<FuzzFinding> findings) =>
        new StringBuilder().AppendJoin("\n", findings.Select(f => f.ToString())).ToString();
}

namespace MoECluster.Wire.Tests;

/// <summary>Whatever the network does to a message, the decoder answers with its value or a WireFormatException.</summary>
public sealed class WireMutationTests
{
    private static readonly WireLimits Limits = new();

    private static byte[] Mutate(byte[] valid, Random random)
    {
        var bytes = new List<byte>(valid);
        int edits = random.Next(1, 5);
        for (int e = 0; e < edits; e++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(6))
            {
                case 0:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 1:
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 2:
                    bytes.Insert(at, (byte)random.Next(256));
                    break;
                case 3:
                    bytes.RemoveAt(at);
                    break;
                case 4:
                    // Interesting values: msgpack type codes and size extremes.
                    byte[] specials = [0x00, 0x7f, 0x80, 0x90, 0xc0, 0xc1, 0xc4, 0xc5, 0xc6, 0xca, 0xce, 0xd2, 0xdc, 0xdd, 0xde, 0xdf, 0xff];
                    bytes[at] = specials[random.Next(specials.Length)];
                    break;
                default:
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
            }

            if (bytes.Count == 0)
            {
                break;
            }
        }

        return [.. bytes];
    }

    [Fact]
    public void Two_thousand_random_mutations_of_a_valid_request_raise_nothing_but_WireFormatException()
    {
        var samples = new WireSamples();
        byte[][] valids =
        [
            WireFormat.Serialize(samples.Request(6, 12, WireDType.F32).Request),
            WireFormat.Serialize(samples.Request(5, 20, WireDType.BF16, WireDType.F16).Request),
            WireFormat.Serialize(samples.Request(3, 8, WireDType.F16, WireDType.BF16).Request),
        ];

        int refused = 0;
        for (int trial = 0; trial < 2000; trial++)
        {
            byte[] mutated = Mutate(valids[trial % valids.Length], samples.Random);
            try
            {
                ShardRequest accepted = WireFormat.DecodeRequest(mutated, Limits);

                // What is accepted must be usable: decoding its parts cannot fail either.
                accepted.Rows.Decode();
                WireFormat.ReadPairs(accepted);
            }
            catch (WireFormatException ex)
            {
                Assert.False(string.IsNullOrWhiteSpace(ex.Message));
                refused++;
            }
            catch (Exception ex)
            {
                Assert.Fail($"seed {samples.Seed}, trial {trial}: {ex.GetType().Name} for {Convert.ToHexString(mutated)}: {ex}");
            }
        }

        // Most mutations break something; if none were refused the decoder is not checking.
        Assert.True(refused > 1000, $"seed {samples.Seed}: only {refused} of 2000 mutations were refused");
    }

    [Fact]
    public void Two_thousand_random_mutations_of_a_valid_response_raise_nothing_but_WireFormatException()
    {
        var samples = new WireSamples();
        byte[] valid = WireFormat.Serialize(samples.Response(4, 10, WireDType.BF16));
        for (int trial = 0; trial < 2000; trial++)
        {
            byte[] mutated = Mutate(valid, samples.Random);
            try
            {
                WireFormat.DecodeResponse(mutated, Limits, 4, 10).Partials.Decode();
            }
            catch (WireFormatException)
            {
                // Refused, as it may be.
            }
            catch (Exception ex)
            {
                Assert.Fail($"seed {samples.Seed}, trial {trial}: {ex.GetType().Name} for {Convert.ToHexString(mutated)}: {ex}");
            }
        }
    }
}

namespace MoECluster.Wire.Tests;

public sealed class WireCodecsTests
{
    public static TheoryData<WireDType> Ids()
    {
        var data = new TheoryData<WireDType>();
        foreach (var codec in WireCodecs.All)
        {
            data.Add(codec.Id);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void Every_codec_round_trips_random_rows_within_its_parity_tolerance(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        var samples = new WireSamples();
        foreach (var (rows, width) in new[] { (1, 1), (3, 17), (16, 64), (5, 96) })
        {
            float[] values = samples.Values(rows * width);
            var data = new byte[codec.PayloadBytes(rows, width)];
            codec.Encode(values, rows, width, data);
            var decoded = new float[values.Length];
            codec.Decode(data, rows, width, decoded);

            double error = 0, norm = 0;
            for (int i = 0; i < values.Length; i++)
            {
                double diff = (double)decoded[i] - values[i];
                error += diff * diff;
                norm += (double)values[i] * values[i];
            }

            double relative = Math.Sqrt(error / norm);
            Assert.True(relative <= codec.ParityTolerance, $"seed {samples.Seed} {codec.Name} [{rows}, {width}]: {relative:E2} > {codec.ParityTolerance:E0}");
            Assert.Equal(-1, codec.FindNonFinite(data, rows, width));
        }
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void PayloadBytes_is_the_length_of_the_encoded_block(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        var samples = new WireSamples();
        foreach (var (rows, width) in new[] { (1, 1), (1, 31), (2, 32), (7, 33), (64, 100) })
        {
            var block = ActivationBlock.Encode(samples.Values(rows * width), rows, width, id);
            Assert.Equal(codec.PayloadBytes(rows, width), block.Data.LongLength);
            Assert.Equal(codec.PayloadBytes(rows, width), block.PayloadBytes);
            Assert.Equal(codec.PayloadBytes(rows, width), WireSize.ActivationBytes(rows, width, id));
        }
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void FindNonFinite_finds_a_value_beyond_the_codecs_range_and_NaN(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        if (codec.BlockSize > 1)
        {
            // Block-scaled types refuse Inf and NaN at encode and hold every finite float32 (MicroscalingTests).
            Assert.Equal(float.MaxValue, codec.MaxMagnitude);
            return;
        }

        const int Rows = 3, Width = 8;
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity, (float)Math.Min(codec.MaxMagnitude * 2, double.PositiveInfinity) })
        {
            var values = new float[Rows * Width];
            Array.Fill(values, 1.5f);
            values[13] = bad;
            var data = new byte[codec.PayloadBytes(Rows, Width)];
            codec.Encode(values, Rows, Width, data);
            Assert.Equal(13, codec.FindNonFinite(data, Rows, Width));
        }

        var largest = new float[Rows * Width];
        Array.Fill(largest, -(float)codec.MaxMagnitude);
        var block = new byte[codec.PayloadBytes(Rows, Width)];
        codec.Encode(largest, Rows, Width, block);
        Assert.Equal(-1, codec.FindNonFinite(block, Rows, Width));
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void Names_and_aliases_parse_to_their_codec_in_any_case(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        foreach (string name in codec.Aliases.Prepend(codec.Name))
        {
            foreach (string text in new[] { name, name.ToUpperInvariant(), " " + name + " " })
            {
                Assert.True(WireCodecs.TryParse(text, out var parsed), text);
                Assert.Same(codec, parsed);
                Assert.Same(codec, WireCodecs.Parse(text));
            }
        }

        Assert.Contains(codec.Name, WireCodecs.Names);
        Assert.Contains(codec.Name, codec.Range, StringComparison.Ordinal);
        Assert.InRange(codec.ParityTolerance, 1e-7, codec.BlockSize == 1 ? 0.05 : 0.5);
    }

    [Fact]
    public void Names_aliases_and_ids_are_unique()
    {
        string[] names = [.. WireCodecs.All.SelectMany(c => c.Aliases.Prepend(c.Name))];
        Assert.Equal(names.Length, names.Distinct(StringComparer.OrdinalIgnoreCase).Count());
        Assert.Equal(WireCodecs.All.Count, WireCodecs.All.Select(c => c.Id).Distinct().Count());
        Assert.Equal(WireCodecs.All.Select(c => c.Name), WireCodecs.Names);
    }

    [Theory]
    [InlineData((byte)9)]
    [InlineData((byte)200)]
    [InlineData((byte)255)]
    public void An_undefined_id_is_refused(byte value)
    {
        var id = (WireDType)value;
        Assert.False(WireCodecs.IsDefined(id));
        Assert.False(WireCodecs.TryGet(id, out _));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => WireCodecs.Get(id));
        Assert.Contains(WireCodecs.IdList, e.Message, StringComparison.Ordinal);
        Assert.Equal($"undefined dtype {value}", WireCodecs.Describe(id));
        Assert.Throws<ArgumentOutOfRangeException>(() => ActivationBlock.Encode([1f], 1, 1, id));
    }

    [Theory]
    [InlineData("fp7")]
    [InlineData("")]
    [InlineData(null)]
    [InlineData("float32")]
    public void An_unknown_name_is_refused_with_the_list_of_names(string? text)
    {
        Assert.False(WireCodecs.TryParse(text, out _));
        var e = Assert.Throws<FormatException>(() => WireCodecs.Parse(text));
        Assert.Equal(WireCodecs.NotAWire(text), e.Message);
        Assert.EndsWith("is not one of " + string.Join(", ", WireCodecs.Names), e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_messages_spell_todays_set()
    {
        // Pinned: these texts reach clients (HTTP errors) and tests match them.
        Assert.Equal("fp32, bf16, fp16, mxfp8-e4m3, mxfp8-e5m2, mxfp6-e3m2, mxfp6-e2m3, mxfp4, nvfp4", WireCodecs.NameList);
        Assert.Equal("0=fp32, 1=bf16, 2=fp16, 3=mxfp8-e4m3, 4=mxfp8-e5m2, 5=mxfp6-e3m2, 6=mxfp6-e2m3, 7=mxfp4 or 8=nvfp4", WireCodecs.IdList);
        Assert.Equal("wire 'fp8' is not one of fp32, bf16, fp16, mxfp8-e4m3, mxfp8-e5m2, mxfp6-e3m2, mxfp6-e2m3, mxfp4, nvfp4", WireCodecs.NotAWire("fp8"));
        Assert.Equal("fp32 or bf16", WireCodecs.Wider(WireCodecs.Get(WireDType.F16)));
        Assert.Equal("fp32", WireCodecs.Wider(WireCodecs.Get(WireDType.BF16)));
        Assert.Equal(string.Empty, WireCodecs.Wider(WireCodecs.Get(WireDType.F32)));
        Assert.Equal("send it with wire fp32 or bf16, or scale it down", WireCodecs.OverflowAdvice(WireCodecs.Get(WireDType.F16)));
        Assert.Equal("scale it down", WireCodecs.OverflowAdvice(WireCodecs.Get(WireDType.F32)));
        Assert.Equal("fp16 holds ±65504", WireCodecs.Get(WireDType.F16).Range);
    }

    [Fact]
    public void Todays_parity_tolerances_are_kept()
    {
        Assert.Equal(1e-5, WireCodecs.Get(WireDType.F32).ParityTolerance);
        Assert.Equal(1e-2, WireCodecs.Get(WireDType.BF16).ParityTolerance);
        Assert.Equal(5e-3, WireCodecs.Get(WireDType.F16).ParityTolerance);

        // Block-scaled: about twice the largest error measured on Super-shaped layers, Gaussian and outlier inputs, the
        // type in both directions or with bf16 (docs/MICROSCALING.md, "Measured bytes and error").
        Assert.Equal(0.1, WireCodecs.Get(WireDType.MxFp8E4M3).ParityTolerance);
        Assert.Equal(0.2, WireCodecs.Get(WireDType.MxFp8E5M2).ParityTolerance);
        Assert.Equal(0.2, WireCodecs.Get(WireDType.MxFp6E3M2).ParityTolerance);
        Assert.Equal(0.1, WireCodecs.Get(WireDType.MxFp6E2M3).ParityTolerance);
        Assert.Equal(0.4, WireCodecs.Get(WireDType.MxFp4).ParityTolerance);
        Assert.Equal(0.3, WireCodecs.Get(WireDType.NvFp4).ParityTolerance);
    }

    [Theory]
    [MemberData(nameof(Ids))]
    public void Encode_and_decode_refuse_spans_of_the_wrong_length(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        var data = new byte[codec.PayloadBytes(2, 4)];
        Assert.Throws<ArgumentException>(() => codec.Encode(new float[7], 2, 4, data));
        Assert.Throws<ArgumentException>(() => codec.Encode(new float[8], 2, 4, new byte[data.Length + 1]));
        Assert.Throws<ArgumentException>(() => codec.Decode(data, 2, 4, new float[9]));
        Assert.Throws<ArgumentException>(() => codec.Decode(data.AsSpan(1), 2, 4, new float[8]));
    }
}

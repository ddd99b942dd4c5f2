namespace MoECluster.Wire.Tests;

/// <summary>The element types of the two directions, parsed through the codec registry only.</summary>
public sealed class WirePairTests
{
    public static TheoryData<WireDType, WireDType> Pairs()
    {
        var data = new TheoryData<WireDType, WireDType>();
        foreach (var dispatch in WireCodecs.All)
        {
            foreach (var combine in WireCodecs.All)
            {
                data.Add(dispatch.Id, combine.Id);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void Every_pair_of_registered_codecs_round_trips_through_its_text(WireDType dispatch, WireDType combine)
    {
        var pair = WirePair.Of(dispatch, combine);
        Assert.Equal($"{WireCodecs.Get(dispatch).Name}/{WireCodecs.Get(combine).Name}", pair.Text);
        Assert.Equal(pair.Text, pair.ToString());
        Assert.Equal(pair, WirePair.Parse(pair.Text));
        Assert.Equal(pair, WirePair.Parse($" {pair.Dispatch.Name.ToUpperInvariant()} / {pair.Combine.Name} "));
    }

    [Theory]
    [MemberData(nameof(Pairs))]
    public void The_tolerance_is_the_larger_of_the_two_directions(WireDType dispatch, WireDType combine)
    {
        var pair = WirePair.Of(dispatch, combine);
        Assert.Equal(Math.Max(WireCodecs.Get(dispatch).ParityTolerance, WireCodecs.Get(combine).ParityTolerance), pair.ParityTolerance);
    }

    [Fact]
    public void A_mixed_pair_is_held_to_its_looser_direction()
    {
        Assert.Equal(WireCodecs.Get(WireDType.BF16).ParityTolerance, WirePair.Parse("fp32/bf16").ParityTolerance);
        Assert.Equal(WireCodecs.Get(WireDType.BF16).ParityTolerance, WirePair.Parse("bf16/fp32").ParityTolerance);
        Assert.Equal(WireCodecs.Get(WireDType.F16).ParityTolerance, WirePair.Parse("fp16/fp32").ParityTolerance);
    }

    [Fact]
    public void One_name_or_an_alias_sets_both_directions_and_the_default_is_bf16_both_ways()
    {
        Assert.Equal(WirePair.Of(WireDType.F16, WireDType.F16), WirePair.Parse("fp16"));
        Assert.Equal(WirePair.Of(WireDType.F32, WireDType.F16), WirePair.Parse("f32/F16"));
        Assert.Equal("bf16/bf16", WirePair.Default.Text);
        Assert.Same(WireCodecs.Default, WirePair.Default.Dispatch);
        Assert.Same(WireCodecs.Default, WirePair.Default.Combine);
    }

    [Theory]
    [InlineData(null, "wire pair (none) is empty")]
    [InlineData("", "wire pair '' is empty")]
    [InlineData("  ", "wire pair '  ' is empty")]
    [InlineData("bf16/bf16/bf16", "wire pair 'bf16/bf16/bf16' has more than two directions")]
    [InlineData("fp8/bf16", "wire pair 'fp8/bf16': dispatch wire 'fp8' is not one of")]
    [InlineData("bf16/fp8", "wire pair 'bf16/fp8': combine wire 'fp8' is not one of")]
    [InlineData("bf16/", "wire pair 'bf16/': combine wire '' is not one of")]
    [InlineData("fp8", "wire pair 'fp8': wire 'fp8' is not one of")]
    public void A_malformed_pair_is_refused_naming_the_direction_and_the_registrys_names(string? text, string message)
    {
        Assert.False(WirePair.TryParse(text, out var pair, out string? error));
        Assert.Null(pair);
        Assert.StartsWith(message, error, StringComparison.Ordinal);
        Assert.EndsWith(WireCodecs.NameList, error, StringComparison.Ordinal);
        Assert.Equal(error, Assert.Throws<FormatException>(() => WirePair.Parse(text)).Message);
    }

    [Fact]
    public void Long_text_is_cut_in_the_refusal()
    {
        string text = new string('x', 100) + "/bf16";
        Assert.False(WirePair.TryParse(text, out _, out string? error));
        Assert.DoesNotContain(text, error, StringComparison.Ordinal);
        Assert.True(error.Length < 200, error);
    }

    [Fact]
    public void A_specific_direction_overrides_wire_and_the_fallback_fills_what_none_names()
    {
        var fallback = WirePair.Of(WireDType.F16, WireDType.F32);
        Assert.Equal(fallback, WirePair.Resolve(null, null, null, fallback));
        Assert.Equal(WirePair.Of(WireDType.BF16, WireDType.BF16), WirePair.Resolve("bf16", null, null, fallback));
        Assert.Equal(WirePair.Of(WireDType.F32, WireDType.BF16), WirePair.Resolve("bf16", "fp32", null, fallback));
        Assert.Equal(WirePair.Of(WireDType.BF16, WireDType.F16), WirePair.Resolve("bf16", null, "fp16", fallback));
        Assert.Equal(WirePair.Of(WireDType.BF16, WireDType.F32), WirePair.Resolve(null, "bf16", null, fallback));
        Assert.Equal(WirePair.Of(WireDType.F16, WireDType.BF16), WirePair.Resolve(null, null, "bf16", fallback));
        Assert.Equal(WirePair.Of(WireDType.F32, WireDType.F16), WirePair.Resolve("bf16", "fp32", "fp16", fallback));
    }

    [Fact]
    public void Every_unknown_name_is_refused_even_an_overridden_wire()
    {
        var fallback = WirePair.Default;
        Assert.False(WirePair.TryResolve("fp8", "fp32", "fp32", fallback, out _, out string? error));
        Assert.Equal(WireCodecs.NotAWire("fp8"), error);
        Assert.False(WirePair.TryResolve("bf16", "fp8", null, fallback, out _, out error));
        Assert.Equal("wire_dispatch: " + WireCodecs.NotAWire("fp8"), error);
        Assert.False(WirePair.TryResolve(null, null, "e5m2", fallback, out _, out error));
        Assert.Equal("wire_combine: " + WireCodecs.NotAWire("e5m2"), error);
        Assert.Equal("wire_combine: " + WireCodecs.NotAWire("e5m2"), Assert.Throws<FormatException>(() => WirePair.Resolve(null, null, "e5m2", fallback)).Message);
    }

    [Fact]
    public void Overflow_advice_names_wire_for_one_type_and_the_direction_for_a_mixed_pair()
    {
        Assert.Equal(WireCodecs.OverflowAdvice(WireCodecs.Get(WireDType.F16)), WirePair.Parse("fp16/fp16").DispatchOverflowAdvice);
        Assert.Equal($"send it with wire_dispatch {WireCodecs.Wider(WireCodecs.Get(WireDType.F16))}, or scale it down", WirePair.Parse("fp16/fp32").DispatchOverflowAdvice);
        Assert.Equal($"send it with wire_combine {WireCodecs.Wider(WireCodecs.Get(WireDType.F16))}, or scale it down", WirePair.Parse("fp32/fp16").CombineOverflowAdvice);
        Assert.Equal("scale it down", WirePair.Parse("fp16/fp32").CombineOverflowAdvice);
    }
}

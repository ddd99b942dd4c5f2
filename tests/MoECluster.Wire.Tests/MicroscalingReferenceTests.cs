using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace MoECluster.Wire.Tests;

/// <summary>
/// The C# MX and NVFP4 codecs against an independent implementation of docs/MICROSCALING.md
/// (tests/tools/mx_reference.py: numpy, written from the specifications, not from this code): every code point of the
/// element types, encodings bit for bit on fresh random inputs (Gaussian, outlier columns, wide dynamic range, zeros,
/// signed zeros, subnormal and huge floats, exact ties), and decodings of arbitrary bytes value for value.
/// </summary>
public sealed class MicroscalingReferenceTests
{
    private static readonly int[] Widths = [1, 7, 16, 17, 33, 45, 64, 1024];

    public static TheoryData<WireDType> BlockScaled() => MicroscalingTests.BlockScaled();

    [Theory]
    [InlineData("e4m3")]
    [InlineData("e5m2")]
    [InlineData("e3m2")]
    [InlineData("e2m3")]
    [InlineData("e2m1")]
    public void Every_code_point_decodes_as_the_independent_table_says(string type)
    {
        var format = new[] { Microscaling.ElementFormat.E4M3, Microscaling.ElementFormat.E5M2, Microscaling.ElementFormat.E3M2, Microscaling.ElementFormat.E2M3, Microscaling.ElementFormat.E2M1 }
            .Single(f => f.Name == type);
        string[] lines = Encoding(Reference.Run(["codepoints", type], []).Stdout).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(1 << format.Bits, lines.Length);
        foreach (string line in lines)
        {
            string[] parts = line.Split(' ');
            int code = int.Parse(parts[0], CultureInfo.InvariantCulture);
            double expected = parts[1] switch { "nan" => double.NaN, "inf" => double.PositiveInfinity, "-inf" => double.NegativeInfinity, var v => double.Parse(v, CultureInfo.InvariantCulture) };
            float actual = format.Value(code);
            Assert.True(double.IsNaN(expected) ? float.IsNaN(actual) : actual == expected && float.IsNegative(actual) == double.IsNegative(expected), $"{type} code {code}: {actual} vs {parts[1]}");
        }
    }

    [Theory]
    [MemberData(nameof(BlockScaled))]
    public void Encodings_are_bit_exact_with_the_independent_implementation(WireDType id)
    {
        var codec = WireCodecs.Get(id);
        var samples = new WireSamples();
        foreach (int width in Widths)
        {
            const int Rows = 12;
            float[] values = Inputs(samples.Random, Rows, width);
            var ours = new byte[codec.PayloadBytes(Rows, width)];
            codec.Encode(values, Rows, width, ours);
            byte[] theirs = Reference.Run(["encode", codec.Name, Rows.ToString(CultureInfo.InvariantCulture), width.ToString(CultureInfo.InvariantCulture)],
                MemoryMarshal.AsBytes(values.AsSpan()).ToArray()).Stdout;
            Assert.Equal(theirs.Length, ours.Length);
            int first = Enumerable.Range(0, ours.Length).FirstOrDefault(i => ours[i] != theirs[i], -1);
            Assert.True(first < 0, $"seed {samples.Seed} {codec.Name} [{Rows}, {width}]: byte {first} is {(first < 0 ? 0 : ours[first]):X2} here, {(first < 0 ? 0 : theirs[first]):X2} in the reference");
        }
    }

    [Theory]
    [MemberData(nameof(BlockScaled))]
    public void Decodings_of_arbitrary_bytes_agree_value_for_value(WireDType id)
    {
        // Random bytes: every scale byte (E8M0 0xFF, signed and NaN E4M3 scales, any fp32 S) and element code.
        var codec = WireCodecs.Get(id);
        var samples = new WireSamples();
        foreach (int width in Widths)
        {
            const int Rows = 6;
            var data = new byte[codec.PayloadBytes(Rows, width)];
            samples.Random.NextBytes(data);
            if (id == WireDType.NvFp4 && samples.Random.Next(2) == 0)
            {
                BitConverter.TryWriteBytes(data, (float)(samples.Random.NextDouble() * 1e-3));
            }

            var ours = new float[Rows * width];
            codec.Decode(data, Rows, width, ours);
            float[] theirs = MemoryMarshal.Cast<byte, float>(Reference.Run(
                ["decode", codec.Name, Rows.ToString(CultureInfo.InvariantCulture), width.ToString(CultureInfo.InvariantCulture)], data).Stdout).ToArray();
            Assert.Equal(ours.Length, theirs.Length);
            for (int i = 0; i < ours.Length; i++)
            {
                bool same = float.IsNaN(ours[i]) ? float.IsNaN(theirs[i]) : BitConverter.SingleToInt32Bits(ours[i]) == BitConverter.SingleToInt32Bits(theirs[i]);
                Assert.True(same, $"seed {samples.Seed} {codec.Name} [{Rows}, {width}] element {i}: {ours[i]:R} here, {theirs[i]:R} in the reference");
            }

            int firstBad = Array.FindIndex(ours, v => !float.IsFinite(v));
            Assert.Equal(firstBad, codec.FindNonFinite(data, Rows, width));
        }
    }

    /// <summary>Rows of different kinds: what activations look like and what breaks block formats.</summary>
    private static float[] Inputs(Random random, int rows, int width)
    {
        var values = new float[rows * width];
        for (int r = 0; r < rows; r++)
        {
            Span<float> row = values.AsSpan(r * width, width);
            double scale = Math.Pow(2, random.Next(-20, 21));
            for (int c = 0; c < width; c++)
            {
                double gaussian = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
                row[c] = (r % 6) switch
                {
                    0 => (float)gaussian,
                    1 => (float)(gaussian * (c % 13 == 3 ? 50 : 1)), // outlier channels, 50× the rest
                    2 => (float)(gaussian * scale * Math.Pow(2, random.Next(-12, 13))), // wide range inside a block
                    3 => random.Next(4) switch { 0 => 0f, 1 => -0f, 2 => BitConverter.Int32BitsToSingle(random.Next(1, 1 << 23)) * (random.Next(2) == 0 ? 1 : -1), _ => (float)gaussian * 1e-30f },
                    4 => (float)(gaussian * 1e37 * (random.Next(2) == 0 ? 3 : 1)), // near the top of fp32
                    _ => (float)(Math.Round(gaussian * 8) / 8 * scale), // values on a coarse grid: many exact ties
                };
            }
        }

        return values;
    }

    private static string Encoding(byte[] bytes) => System.Text.Encoding.UTF8.GetString(bytes);

    /// <summary>Runs tests/tools/mx_reference.py with Debian's /usr/bin/python3 and python3-numpy, bytes in and out.</summary>
    private static class Reference
    {
        public static (byte[] Stdout, string Stderr) Run(string[] args, byte[] stdin)
        {
            var start = new ProcessStartInfo("/usr/bin/python3")
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            start.ArgumentList.Add(Script);
            foreach (string arg in args)
            {
                start.ArgumentList.Add(arg);
            }

            using var process = Process.Start(start) ?? throw new InvalidOperationException("python3 did not start");
            var stdout = new MemoryStream();
            Task copy = process.StandardOutput.BaseStream.CopyToAsync(stdout);
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            process.StandardInput.BaseStream.Write(stdin);
            process.StandardInput.Close();
            if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
            {
                process.Kill();
                throw new TimeoutException("mx_reference.py took more than 60 s");
            }

            copy.Wait();
            if (process.ExitCode != 0)
            {
                throw new InvalidOperationException($"mx_reference.py {string.Join(' ', args)} exited {process.ExitCode} (is python3-numpy installed?): {stderr.Result}");
            }

            return (stdout.ToArray(), stderr.Result);
        }

        private static string Script
        {
            get
            {
                var dir = new DirectoryInfo(AppContext.BaseDirectory);
                while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MoECluster.sln")))
                {
                    dir = dir.Parent;
                }

                return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repository root not found"), "tests", "tools", "mx_reference.py");
            }
        }
    }
}

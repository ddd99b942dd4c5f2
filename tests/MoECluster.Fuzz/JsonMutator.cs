using System.Text;

namespace MoECluster.Fuzz;

/// <summary>
/// Structure-aware edits of JSON: the text is cut into tokens (strings, numbers, literals, punctuation), then one
/// is changed: a number replaced by a boundary value (huge, negative, fractional, out of float/long range), a string
/// by an interesting one (dtype names, keys, path escapes, lone surrogates, long strings), a token deleted,
/// duplicated or swapped, punctuation inserted, a value wrapped in deep nesting, a member duplicated, or the text
/// truncated. A quarter of the time byte edits follow.
/// </summary>
public sealed class JsonMutator : IMutator
{
    private static readonly string[] Numbers =
    [
        "0", "-0", "1", "-1", "2", "1.5", "-1.5", "1e39", "-1e39", "3.4028235e38", "3.5e38", "1e-46", "1e308", "1e309", "-1e309",
        "2147483647", "2147483648", "-2147483649", "4294967296", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
        "18446744073709551616", "104857600", "104857601", "65536", "8193", "1048577", "0.1e1", "1E+2", "00", "01", "1.", ".5", "+1", "--1", "1e", "NaN", "Infinity",
    ];

    private static readonly string[] Strings =
    [
        "\"\"", "\"F32\"", "\"BF16\"", "\"F16\"", "\"F64\"", "\"I8\"", "\"BOOL\"", "\"F8_E4M3\"", "\"f32\"", "\"hidden_states\"", "\"model\"", "\"wire\"",
        "\"__metadata__\"", "\"weight_map\"", "\"data_offsets\"", "\"shape\"", "\"dtype\"", "\"fp32\"", "\"bf16\"", "\"fp8\"", "\"../x.safetensors\"",
        "\"a/b\"", "\"C:x\"", "\".\"", "\"..\"", "\"\\ud800\"", "\"\\u0000\"", "\"\\uZZZZ\"", "\"\\\"", "\"HIDDEN_STATES\"", "\"Model\"", "\"lat\"", "\"nope\"",
    ];

    private static readonly string[] Punctuation = ["[", "]", "{", "}", ",", ":", "\"", "null", "true", "[]", "{}", "[[]]", ",,", "/*x*/", "\u00ff"];

    public static JsonMutator Instance { get; } = new();

    public byte[] Mutate(byte[] valid, IReadOnlyList<byte[]> seeds, Random random)
    {
        ArgumentNullException.ThrowIfNull(valid);
        ArgumentNullException.ThrowIfNull(random);
        byte[] mutated = MutateText(valid, random);
        return random.Next(4) == 0 ? ByteMutator.Edit(mutated, seeds, random, random.Next(1, 3)) : mutated;
    }

    /// <summary>One structural edit of JSON text (used on its own for the JSON header inside a safetensors file).</summary>
    public static byte[] MutateText(byte[] valid, Random random)
    {
        ArgumentNullException.ThrowIfNull(valid);
        ArgumentNullException.ThrowIfNull(random);
        List<(int Start, int End, char Kind)> tokens = Tokenize(valid);
        if (tokens.Count == 0)
        {
            return valid;
        }

        var (start, end, kind) = tokens[random.Next(tokens.Count)];
        switch (random.Next(10))
        {
            case 0:
            case 1:
            {
                var numbers = tokens.Where(t => t.Kind == 'n').ToList();
                if (numbers.Count > 0)
                {
                    (start, end, _) = numbers[random.Next(numbers.Count)];
                }

                string number = random.Next(4) == 0 ? random.NextInt64(long.MinValue, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture) : Numbers[random.Next(Numbers.Length)];
                return Replace(valid, start, end - start, Encoding.UTF8.GetBytes(number));
            }

            case 2:
            case 3:
            {
                var strings = tokens.Where(t => t.Kind == 's').ToList();
                if (strings.Count > 0)
                {
                    (start, end, _) = strings[random.Next(strings.Count)];
                }

                string text = random.Next(6) == 0 ? "\"" + new string('a', random.Next(100, 5000)) + "\"" : Strings[random.Next(Strings.Length)];
                return Replace(valid, start, end - start, Encoding.UTF8.GetBytes(text));
            }

            case 4:
                return Replace(valid, start, end - start, []);
            case 5:
                return Replace(valid, end, 0, valid.AsSpan(start, end - start).ToArray());
            case 6:
                return Replace(valid, start, 0, Encoding.UTF8.GetBytes(Punctuation[random.Next(Punctuation.Length)]));
            case 7:
            {
                // Wrap a token (a value or the start of one) in deep nesting.
                int depth = random.Next(2, 300);
                string open = new(random.Next(2) == 0 ? '[' : '[', depth);
                string close = new(']', depth);
                byte[] wrapped = [.. Encoding.UTF8.GetBytes(open), .. valid.AsSpan(start, end - start), .. Encoding.UTF8.GetBytes(close)];
                return Replace(valid, start, end - start, kind is 's' or 'n' or 'l' ? wrapped : Encoding.UTF8.GetBytes(open + "1" + close));
            }

            case 8:
            {
                // Duplicate a run of tokens (a member, a row, an entry), after itself, with a comma.
                int first = random.Next(tokens.Count);
                int last = Math.Min(tokens.Count - 1, first + random.Next(1, 12));
                int from = tokens[first].Start, to = tokens[last].End;
                return Replace(valid, to, 0, [(byte)',', .. valid.AsSpan(from, to - from)]);
            }

            default:
            {
                var other = tokens[random.Next(tokens.Count)];
                if (other.Start < start)
                {
                    (other, (start, end, kind)) = ((start, end, kind), other);
                }

                if (other.Start < end)
                {
                    return valid[..start];
                }

                // Swap two tokens.
                return [.. valid.AsSpan(0, start), .. valid.AsSpan(other.Start, other.End - other.Start), .. valid.AsSpan(end, other.Start - end), .. valid.AsSpan(start, end - start), .. valid.AsSpan(other.End)];
            }
        }
    }

    /// <summary>Tokens: 's' string, 'n' number, 'l' literal, 'p' punctuation.</summary>
    public static List<(int Start, int End, char Kind)> Tokenize(ReadOnlySpan<byte> text)
    {
        var tokens = new List<(int, int, char)>();
        int i = 0;
        while (i < text.Length)
        {
            byte c = text[i];
            int start = i;
            if (c is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t')
            {
                i++;
                continue;
            }

            if (c == '"')
            {
                i++;
                while (i < text.Length && text[i] != '"')
                {
                    i += text[i] == '\\' ? 2 : 1;
                }

                i = Math.Min(i + 1, text.Length);
                tokens.Add((start, i, 's'));
            }
            else if (c == '-' || (c >= '0' && c <= '9'))
            {
                while (i < text.Length && (text[i] is (byte)'-' or (byte)'+' or (byte)'.' or (byte)'e' or (byte)'E' || (text[i] >= '0' && text[i] <= '9')))
                {
                    i++;
                }

                tokens.Add((start, i, 'n'));
            }
            else if (c >= 'a' && c <= 'z')
            {
                while (i < text.Length && text[i] >= 'a' && text[i] <= 'z')
                {
                    i++;
                }

                tokens.Add((start, i, 'l'));
            }
            else
            {
                i++;
                tokens.Add((start, i, 'p'));
            }
        }

        return tokens;
    }

    private static byte[] Replace(byte[] source, int offset, int length, ReadOnlySpan<byte> replacement)
    {
        var result = new byte[source.Length - length + replacement.Length];
        source.AsSpan(0, offset).CopyTo(result);
        replacement.CopyTo(result.AsSpan(offset));
        source.AsSpan(offset + length).CopyTo(result.AsSpan(offset + replacement.Length));
        return result;
    }
}

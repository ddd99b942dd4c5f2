using System.Text;

namespace MoECluster.Testing;

/// <summary>One span of an OTLP trace export: the service that sent it, its name and kind, and its W3C ids in hex.</summary>
public sealed record OtlpSpan(string Service, string Name, int Kind, string TraceId, string SpanId, string ParentSpanId)
{
    public const int KindServer = 2;

    public const int KindClient = 3;
}

/// <summary>
/// Reads the spans out of an OTLP/protobuf <c>ExportTraceServiceRequest</c> with a minimal protobuf walker (the fields
/// of opentelemetry/proto/trace/v1/trace.proto that tests look at), so tests can follow a trace across processes.
/// </summary>
public static class OtlpSpans
{
    public static IEnumerable<OtlpSpan> Read(byte[] request)
    {
        foreach (var resourceSpans in Fields(request).Where(f => f.Number == 1))
        {
            string service = string.Empty;
            var fields = Fields(resourceSpans.Bytes).ToList();
            foreach (var resource in fields.Where(f => f.Number == 1))
            {
                foreach (var attribute in Fields(resource.Bytes).Where(f => f.Number == 1))
                {
                    var kv = Fields(attribute.Bytes).ToList();
                    if (kv.FirstOrDefault(f => f.Number == 1)?.Text == "service.name" && kv.FirstOrDefault(f => f.Number == 2) is { } value)
                    {
                        service = Fields(value.Bytes).FirstOrDefault(f => f.Number == 1)?.Text ?? service;
                    }
                }
            }

            foreach (var scopeSpans in fields.Where(f => f.Number == 2))
            {
                foreach (var span in Fields(scopeSpans.Bytes).Where(f => f.Number == 2))
                {
                    var s = Fields(span.Bytes).ToList();
                    yield return new OtlpSpan(
                        service,
                        s.FirstOrDefault(f => f.Number == 5)?.Text ?? string.Empty,
                        (int)(s.FirstOrDefault(f => f.Number == 6)?.Varint ?? 0),
                        Hex(s.FirstOrDefault(f => f.Number == 1)),
                        Hex(s.FirstOrDefault(f => f.Number == 2)),
                        Hex(s.FirstOrDefault(f => f.Number == 4)));
                }
            }
        }
    }

    private static string Hex(Field? field) => field is null ? string.Empty : Convert.ToHexStringLower(field.Bytes);

    private sealed record Field(int Number, ulong Varint, byte[] Bytes)
    {
        public string Text => Encoding.UTF8.GetString(Bytes);
    }

    private static IEnumerable<Field> Fields(byte[] message)
    {
        int at = 0;
        while (at < message.Length)
        {
            ulong key = Varint(message, ref at);
            int number = (int)(key >> 3);
            switch ((int)(key & 7))
            {
                case 0:
                    yield return new Field(number, Varint(message, ref at), []);
                    break;
                case 1:
                    yield return new Field(number, BitConverter.ToUInt64(message, at), message[at..(at + 8)]);
                    at += 8;
                    break;
                case 2:
                    int length = checked((int)Varint(message, ref at));
                    yield return new Field(number, 0, message[at..(at + length)]);
                    at += length;
                    break;
                case 5:
                    yield return new Field(number, BitConverter.ToUInt32(message, at), message[at..(at + 4)]);
                    at += 4;
                    break;
                default:
                    throw new InvalidDataException($"unsupported protobuf wire type {key & 7} at byte {at}");
            }
        }
    }

    private static ulong Varint(byte[] message, ref int at)
    {
        ulong value = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte b = message[at++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }
    }
}

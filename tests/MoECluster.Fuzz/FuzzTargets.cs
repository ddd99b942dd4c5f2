using System.Buffers.Binary;
using System.Text;
using MessagePack;
using MoECluster.Cluster.Contracts;
using MoECluster.Gateway;
using MoECluster.Gateway.KServe;
using MoECluster.Model.Checkpoints;
using MoECluster.Model.Dispatch;
using MoECluster.Wire;

namespace MoECluster.Fuzz;

/// <summary>
/// Every decoder that reads bytes from outside the process, as a fuzz target: the router ↔ shard messages, the
/// gateway's MessagePack messages and request bodies (MessagePack, JSON, KServe v2 JSON and binary), activation blocks, safetensors headers and
/// files, hidden_states files and checkpoint index files. File targets write each input to a file in a temporary
/// directory of their own, removed on dispose.
/// </summary>
public sealed class FuzzTargets : IDisposable
{
    /// <summary>The shape every ShardResponse seed has (a response is checked against its request's shape).</summary>
    private const int ResponseRows = 4;
    private const int ResponseWidth = 10;

    private static readonly WireLimits Limits = new();

    /// <summary>Gateway body limits small enough that mutations reach them: 6 tokens, rows at most 32 wide, depth 8.</summary>
    private static readonly GatewayBodyLimits BodyLimits = new(MaxTokens: 6, MaxJsonDepth: 8, new WireLimits(MaxWidth: 32));

    /// <summary>Where file targets write their inputs: tmpfs (/dev/shm) when there is one, files there cost no disk I/O.</summary>
    private readonly string _directory = Directory.Exists("/dev/shm")
        ? Directory.CreateDirectory(Path.Combine("/dev/shm", "moecluster-fuzz-" + Guid.NewGuid().ToString("N"))).FullName
        : Directory.CreateTempSubdirectory("moecluster-fuzz-").FullName;

    public FuzzTargets()
    {
        All =
        [
            ShardRequestTarget(),
            ShardResponseTarget(),
            GatewayRequestTarget(),
            GatewayResponseTarget(),
            ActivationBlockTarget(),
            ActivationBlockFieldsTarget(),
            .. WireCodecs.All.Where(c => c.BlockSize > 1).Select(BlockScaledTarget),
            GatewayJsonBodyTarget(),
            GatewayMessagePackBodyTarget(),
            KServeJsonBodyTarget(),
            KServeBinaryBodyTarget(),
            SafetensorsHeaderTarget(),
            SafetensorsFileTarget(),
            HiddenStatesTarget(),
            HiddenStatesFileTarget(),
            CheckpointIndexTarget(),
        ];
    }

    public IReadOnlyList<FuzzTarget> All { get; }

    public FuzzTarget Get(string name) =>
        All.FirstOrDefault(t => t.Name == name) ?? throw new ArgumentException($"no fuzz target '{name}'; targets: {string.Join(", ", All.Select(t => t.Name))}", nameof(name));

    public void Dispose()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }

    private static bool IsWireRefusal(Exception e) => e is WireFormatException;

    /// <summary>An ActivationBlock message as a receiver takes it: bounded deserialization, validation, then its values and its non-finite check.</summary>
    private static void DecodeActivationBlock(byte[] input)
    {
        ActivationBlock? block = WireFormat.Deserialize<ActivationBlock>(input, Limits);
        WireFormat.ValidateBlock("block", block, Limits);
        block.Decode();
        block.FindNonFinite();
    }

    private static bool IsCheckpointRefusal(Exception e) => e is SafetensorsFormatException;

    private static FuzzTarget ShardRequestTarget()
    {
        var random = new Random(1);
        byte[] Request(int rows, int width, WireDType dtype, WireDType response, int[] shard)
        {
            var values = new float[rows * width];
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = (float)(random.NextDouble() - 0.5);
            }

            var offsets = new int[rows + 1];
            var experts = new List<int>();
            var weights = new List<float>();
            for (int r = 0; r < rows; r++)
            {
                int pairs = random.Next(1, Math.Min(4, shard.Length) + 1);
                offsets[r + 1] = offsets[r] + pairs;
                foreach (int e in shard.OrderBy(_ => random.Next()).Take(pairs))
                {
                    experts.Add(e);
                    weights.Add((float)random.NextDouble());
                }
            }

            return WireFormat.Serialize(WireFormat.BuildRequest("lat", 3, shard, values, width, dtype, new RoutedPairs(offsets, [.. experts], [.. weights]), response, random.NextInt64()));
        }

        return new FuzzTarget
        {
            Name = "shard-request",
            Description = "WireFormat.DecodeRequest (router -> shard), then the rows, the (expert, weight) pairs and the shard's experts it accepted",
            Seeds =
            [
                Request(3, 8, WireDType.F32, WireDType.BF16, [.. Enumerable.Range(16, 16)]), Request(5, 4, WireDType.BF16, WireDType.F32, [.. Enumerable.Range(0, 4)]),
                Request(2, 6, WireDType.F16, WireDType.F16, [.. Enumerable.Range(60000, 8)]), Request(1, 1, WireDType.F32, WireDType.F32, [0]),
                Request(4, 4, WireDType.F32, WireDType.F32, [3, 17, 40, 1000, 65534]),   // a set, not a range
            ],
            Mutator = MessagePackMutator.Instance,
            Decode = input =>
            {
                ShardRequest request = WireFormat.DecodeRequest(input, Limits);
                request.Rows.Decode();
                WireFormat.ReadPairs(request);
                WireFormat.ReadShardExperts(request);
            },
            IsRefusal = IsWireRefusal,
            Refusals = nameof(WireFormatException),
        };
    }

    private static FuzzTarget ShardResponseTarget()
    {
        var random = new Random(2);
        byte[] Response(WireDType dtype, string silo) => WireFormat.Serialize(new ShardResponse
        {
            Partials = ActivationBlock.Encode(Values(random, ResponseRows * ResponseWidth), ResponseRows, ResponseWidth, dtype),
            Silo = silo,
            RequestId = random.NextInt64(),
            ComputeMicroseconds = random.Next(),
        });

        return new FuzzTarget
        {
            Name = "shard-response",
            Description = "WireFormat.DecodeResponse (shard -> router, checked against a 4x10 request), then the partial sums",
            Seeds = [Response(WireDType.F32, "expert-1"), Response(WireDType.BF16, "127.0.0.1:11111"), Response(WireDType.F16, string.Empty)],
            Mutator = MessagePackMutator.Instance,
            Decode = input => WireFormat.DecodeResponse(input, Limits, ResponseRows, ResponseWidth).Partials.Decode(),
            IsRefusal = IsWireRefusal,
            Refusals = nameof(WireFormatException),
        };
    }

    private static IReadOnlyList<byte[]> GatewayRequestSeeds()
    {
        var random = new Random(3);
        return
        [
            WireFormat.Serialize(new GatewayForwardRequest { Model = "lat", Wire = "bf16", HiddenStates = ActivationBlock.Encode(Values(random, 3 * 8), 3, 8, WireDType.F32) }),
            WireFormat.Serialize(new GatewayForwardRequest { Model = null, Wire = null, HiddenStates = ActivationBlock.Encode(Values(random, 2 * 4), 2, 4, WireDType.BF16) }),
            WireFormat.Serialize(new GatewayForwardRequest { Model = "std", Wire = "fp16", HiddenStates = ActivationBlock.Encode(Values(random, 6 * 2), 6, 2, WireDType.F16) }),
        ];
    }

    private static FuzzTarget GatewayRequestTarget() => new()
    {
        Name = "gateway-request",
        Description = "GatewayWire.DecodeRequest (a client's MessagePack body), then its hidden states",
        Seeds = GatewayRequestSeeds(),
        Mutator = MessagePackMutator.Instance,
        Decode = input => GatewayWire.DecodeRequest(input, Limits).HiddenStates.Decode(),
        IsRefusal = IsWireRefusal,
        Refusals = nameof(WireFormatException),
    };

    private static FuzzTarget GatewayResponseTarget()
    {
        var random = new Random(4);
        GatewayLayerTraffic Traffic(int layer) => new()
        {
            Layer = layer,
            Mode = "latent",
            Wire = "bf16",
            Tokens = 3,
            Width = 16,
            RoutedRows = 5,
            DispatchPayloadBytes = 160,
            CombinePayloadBytes = 160,
            DispatchMessageBytes = 230,
            CombineMessageBytes = 220,
            PredictedPayloadBytes = 320,
            Messages = 4,
            Milliseconds = 1.25,
        };

        return new FuzzTarget
        {
            Name = "gateway-response",
            Description = "GatewayWire.DecodeResponse (what a gateway client reads), then the output",
            Seeds =
            [
                WireFormat.Serialize(new GatewayForwardResponse { Model = "lat", HiddenStates = ActivationBlock.Encode(Values(random, 3 * 8), 3, 8, WireDType.F32), Layers = [Traffic(1)] }),
                WireFormat.Serialize(new GatewayForwardResponse { Model = "std", HiddenStates = ActivationBlock.Encode(Values(random, 2 * 4), 2, 4, WireDType.F32), Layers = [Traffic(1), Traffic(3)] }),
            ],
            Mutator = MessagePackMutator.Instance,
            Decode = input => GatewayWire.DecodeResponse(input, Limits).HiddenStates.Decode(),
            IsRefusal = IsWireRefusal,
            Refusals = nameof(WireFormatException),
        };
    }

    private static FuzzTarget ActivationBlockTarget()
    {
        var random = new Random(5);
        return new FuzzTarget
        {
            Name = "activation-block",
            Description = "an ActivationBlock message: bounded deserialization, validation, Decode and FindNonFinite",
            Seeds =
            [
                WireFormat.Serialize(ActivationBlock.Encode(Values(random, 4 * 6), 4, 6, WireDType.F32)),
                WireFormat.Serialize(ActivationBlock.Encode(Values(random, 3 * 5), 3, 5, WireDType.BF16)),
                WireFormat.Serialize(ActivationBlock.Encode(Values(random, 1 * 9), 1, 9, WireDType.F16)),
            ],
            Mutator = MessagePackMutator.Instance,
            Decode = DecodeActivationBlock,
            IsRefusal = IsWireRefusal,
            Refusals = nameof(WireFormatException),
        };
    }

    /// <summary>
    /// An ActivationBlock of one block-scaled type (MX, NVFP4), mutated as MessagePack and as raw bytes: the scales,
    /// packed elements and (NVFP4) message scale a hostile sender chooses, rows that end in a partial block.
    /// </summary>
    private static FuzzTarget BlockScaledTarget(IWireCodec codec)
    {
        var random = new Random(100 + (int)codec.Id);
        byte[] Seed(int rows, int width) => WireFormat.Serialize(ActivationBlock.Encode(Values(random, rows * width), rows, width, codec.Id));
        return new FuzzTarget
        {
            Name = "block-" + codec.Name,
            Description = $"an ActivationBlock in {codec.Name}: bounded deserialization, validation, Decode and FindNonFinite",
            Seeds = [Seed(2, 64), Seed(3, 45), Seed(1, 7), Seed(4, 33)],
            Mutator = MessagePackMutator.Instance,
            Decode = DecodeActivationBlock,
            IsRefusal = IsWireRefusal,
            Refusals = nameof(WireFormatException),
        };
    }

    /// <summary>
    /// ActivationBlock's own decoding on unvalidated fields (what a deserializer hands over before any validation):
    /// the input is [dtype byte][rows int32 LE][width int32 LE][data...].
    /// </summary>
    private static FuzzTarget ActivationBlockFieldsTarget()
    {
        var random = new Random(6);
        byte[] Fields(WireDType dtype, int rows, int width)
        {
            var input = new byte[9 + WireCodecs.Get(dtype).PayloadBytes(rows, width)];
            input[0] = (byte)dtype;
            BinaryPrimitives.WriteInt32LittleEndian(input.AsSpan(1), rows);
            BinaryPrimitives.WriteInt32LittleEndian(input.AsSpan(5), width);
            ActivationBlock.Encode(Values(random, rows * width), rows, width, dtype).Data.CopyTo(input, 9);
            return input;
        }

        return new FuzzTarget
        {
            Name = "activation-block-fields",
            Description = "ActivationBlock.Decode/FindNonFinite on arbitrary field values (dtype, rows, width, data)",
            Seeds = [Fields(WireDType.F32, 3, 4), Fields(WireDType.BF16, 2, 7), Fields(WireDType.F16, 5, 1), Fields(WireDType.MxFp4, 2, 33), Fields(WireDType.NvFp4, 3, 17)],
            Mutator = ByteMutator.Instance,
            Decode = input =>
            {
                if (input.Length < 9)
                {
                    throw new WireFormatException("short field record");
                }

                var block = new ActivationBlock
                {
                    DType = (WireDType)input[0],
                    Rows = BinaryPrimitives.ReadInt32LittleEndian(input.AsSpan(1)),
                    Width = BinaryPrimitives.ReadInt32LittleEndian(input.AsSpan(5)),
                    Data = input[9..],
                };
                block.Decode();
                block.FindNonFinite();
            },
            IsRefusal = IsWireRefusal,
            Refusals = nameof(WireFormatException),
        };
    }

    private static FuzzTarget GatewayJsonBodyTarget() => new()
    {
        Name = "gateway-json-body",
        Description = "GatewayRequestParser.ParseJson (a forward request's JSON body; limits: 6 tokens, 32 wide, depth 8)",
        Seeds =
        [
            "{\"model\":\"lat\",\"wire\":\"fp32\",\"hidden_states\":[[0.5,-1,2e-3],[1,2,3],[4,5,6]]}"u8.ToArray(),
            "{\"hidden_states\":[[1.25]],\"model\":null,\"extra\":{\"a\":[1,{\"b\":null}]}}"u8.ToArray(),
            "{ \"Model\": \"std\", \"WIRE\": \"bf16\", \"hidden_states\": [ [1, 2], [3, 4], [5, 6], [7, 8], [9, 10] ] }"u8.ToArray(),
            Encoding.UTF8.GetBytes("{\"model\":\"lat\",\"hidden_states\":[[" + string.Join(",", Enumerable.Range(0, 30).Select(i => (i * 0.25).ToString(System.Globalization.CultureInfo.InvariantCulture))) + "]]}"),
        ],
        Mutator = JsonMutator.Instance,
        Decode = input =>
        {
            ForwardInput parsed = GatewayRequestParser.ParseJson(input, BodyLimits);
            if (parsed.Hidden.Length != parsed.Tokens * parsed.Width || parsed.Tokens > BodyLimits.MaxTokens || parsed.Width > BodyLimits.Wire.MaxWidth
                || parsed.Hidden.Any(v => !float.IsFinite(v)))
            {
                throw new InvalidOperationException($"accepted an inconsistent body: {parsed.Tokens} x {parsed.Width}, {parsed.Hidden.Length} values");
            }
        },
        IsRefusal = e => e is GatewayRequestException { StatusCode: >= 400 and < 500 },
        Refusals = nameof(GatewayRequestException) + " (4xx)",
    };

    private static FuzzTarget GatewayMessagePackBodyTarget() => new()
    {
        Name = "gateway-msgpack-body",
        Description = "GatewayRequestParser.ParseMessagePack (a forward request's MessagePack body; limits: 6 tokens, 32 wide)",
        Seeds = GatewayRequestSeeds(),
        Mutator = MessagePackMutator.Instance,
        Decode = input =>
        {
            ForwardInput parsed = GatewayRequestParser.ParseMessagePack(input, BodyLimits);
            if (parsed.Hidden.Length != parsed.Tokens * parsed.Width || parsed.Tokens > BodyLimits.MaxTokens)
            {
                throw new InvalidOperationException($"accepted an inconsistent body: {parsed.Tokens} x {parsed.Width}, {parsed.Hidden.Length} values");
            }
        },
        IsRefusal = e => e is GatewayRequestException { StatusCode: >= 400 and < 500 },
        Refusals = nameof(GatewayRequestException) + " (4xx)",
    };

    private static void CheckKServe(KServeInferRequest parsed, bool finite)
    {
        ForwardInput input = parsed.Input;
        if (input.Hidden.Length != input.Tokens * input.Width || input.Tokens < 1 || input.Tokens > BodyLimits.MaxTokens || input.Width < 1
            || input.Width > BodyLimits.Wire.MaxWidth || (finite && input.Hidden.Any(v => !float.IsFinite(v))) || parsed.Id is { Length: > KServeInferParser.MaxIdLength })
        {
            throw new InvalidOperationException($"accepted an inconsistent body: {input.Tokens} x {input.Width}, {input.Hidden.Length} values");
        }
    }

    private static FuzzTarget KServeJsonBodyTarget() => new()
    {
        Name = "kserve-json-body",
        Description = "KServeInferParser.Parse (a KServe v2 infer request in JSON; limits: 6 tokens, 32 wide, depth 8)",
        Seeds =
        [
            "{\"id\":\"a\",\"parameters\":{\"layer\":1,\"wire\":\"fp32\"},\"inputs\":[{\"name\":\"hidden_states\",\"shape\":[2,3],\"datatype\":\"FP32\",\"data\":[0.5,-1,2e-3,1,2,3]}]}"u8.ToArray(),
            "{\"inputs\":[{\"name\":\"hidden_states\",\"shape\":[3,2],\"datatype\":\"FP32\",\"data\":[[1,2],[3,4],[5,6]]}],\"outputs\":[{\"name\":\"hidden_states\",\"parameters\":{\"binary_data\":false}}]}"u8.ToArray(),
            "{\"parameters\":{\"layer\":\"3\",\"binary_data_output\":true,\"other\":[1,{\"k\":null}]},\"inputs\":[{\"name\":\"hidden_states\",\"datatype\":\"FP32\",\"data\":[1.25],\"shape\":[1,1],\"parameters\":null}]}"u8.ToArray(),
        ],
        Mutator = JsonMutator.Instance,
        Decode = input => CheckKServe(KServeInferParser.Parse(input, headerLength: null, "lat", BodyLimits), finite: true),
        IsRefusal = e => e is GatewayRequestException { StatusCode: >= 400 and < 500 },
        Refusals = nameof(GatewayRequestException) + " (4xx)",
    };

    /// <summary>The binary tensor extension: the input is [Inference-Header-Content-Length, int32 LE][body: JSON header, then tensor bytes].</summary>
    private static FuzzTarget KServeBinaryBodyTarget()
    {
        var random = new Random(8);
        byte[] Binary(int rows, int width, WireDType dtype, string name)
        {
            byte[] data = ActivationBlock.Encode(Values(random, rows * width), rows, width, dtype).Data;
            byte[] header = Encoding.UTF8.GetBytes(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"{{\"inputs\":[{{\"name\":\"hidden_states\",\"shape\":[{rows},{width}],\"datatype\":\"{name}\",\"parameters\":{{\"binary_data_size\":{data.Length}}}}}],\"outputs\":[{{\"name\":\"hidden_states\",\"parameters\":{{\"binary_data\":true}}}}]}}"));
            var input = new byte[4 + header.Length + data.Length];
            BinaryPrimitives.WriteInt32LittleEndian(input, header.Length);
            header.CopyTo(input, 4);
            data.CopyTo(input, 4 + header.Length);
            return input;
        }

        return new FuzzTarget
        {
            Name = "kserve-binary-body",
            Description = "KServeInferParser.Parse with the binary tensor extension (header length, JSON header, raw FP32/FP16/BF16 bytes)",
            Seeds = [Binary(3, 4, WireDType.F32, "FP32"), Binary(2, 7, WireDType.BF16, "BF16"), Binary(5, 1, WireDType.F16, "FP16")],
            Mutator = ByteMutator.Instance,
            Decode = input =>
            {
                if (input.Length < 4)
                {
                    throw new GatewayRequestException("short input");
                }

                CheckKServe(KServeInferParser.Parse(input.AsMemory(4), BinaryPrimitives.ReadInt32LittleEndian(input), "lat", BodyLimits), finite: false);
            },
            IsRefusal = e => e is GatewayRequestException { StatusCode: >= 400 and < 500 },
            Refusals = nameof(GatewayRequestException) + " (4xx)",
        };
    }

    private IReadOnlyList<byte[]> SafetensorsSeeds()
    {
        var random = new Random(7);
        byte[] File(string name, IReadOnlyList<(TensorSpec Spec, ReadOnlyMemory<byte> Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
        {
            string path = Path.Combine(_directory, name);
            SafetensorsWriter.Write(path, tensors, metadata);
            byte[] bytes = System.IO.File.ReadAllBytes(path);
            System.IO.File.Delete(path);
            return bytes;
        }

        (TensorSpec, ReadOnlyMemory<byte>) Tensor(string name, DType dtype, params long[] shape)
        {
            var spec = new TensorSpec(name, dtype, shape);
            var data = new byte[spec.ByteLength];
            if (dtype is DType.F32)
            {
                float[] values = Values(random, (int)spec.ElementCount);
                Buffer.BlockCopy(values, 0, data, 0, data.Length);
            }
            else
            {
                random.NextBytes(data);
                if (dtype is DType.BF16 or DType.F16)
                {
                    // Finite halves: clear the top exponent bit of every element.
                    for (int i = 1; i < data.Length; i += 2)
                    {
                        data[i] &= 0x3f;
                    }
                }
                else if (dtype is DType.F64)
                {
                    for (int i = 7; i < data.Length; i += 8)
                    {
                        data[i] &= 0x3f;
                    }
                }
            }

            return (spec, data);
        }

        return
        [
            File("a.safetensors", [Tensor(HiddenStatesFile.TensorName, DType.F32, 3, 4)]),
            File("b.safetensors", [Tensor(HiddenStatesFile.TensorName, DType.BF16, 2, 8)], new Dictionary<string, string> { ["format"] = "pt", ["note"] = "x" }),
            File("c.safetensors", [Tensor("w.up", DType.F16, 4), Tensor("w.down", DType.I8, 5), Tensor("bias", DType.F64, 1, 2), Tensor("mask", DType.Bool, 0), Tensor("scalar", DType.U8), Tensor(HiddenStatesFile.TensorName, DType.F16, 1, 3)]),
        ];
    }

    private FuzzTarget SafetensorsHeaderTarget() => new()
    {
        Name = "safetensors-header",
        Description = "SafetensorsFile.ParseLayout: the length prefix and the whole JSON header of a safetensors file, from a buffer",
        Seeds = SafetensorsSeeds(),
        Mutator = SafetensorsMutator.Instance,
        Decode = input =>
        {
            var header = SafetensorsFile.ParseLayout("fuzz.safetensors", input, input.Length, out long dataStart);
            foreach (TensorInfo tensor in header.Tensors)
            {
                if (dataStart + tensor.End > input.Length || tensor.ElementCount * DTypes.SizeOf(tensor.DType) != tensor.ByteLength)
                {
                    throw new InvalidOperationException($"accepted a tensor outside the file or of the wrong size: {tensor}");
                }
            }
        },
        IsRefusal = IsCheckpointRefusal,
        Refusals = nameof(SafetensorsFormatException),
    };

    private FuzzTarget SafetensorsFileTarget()
    {
        string path = Path.Combine(_directory, "file.safetensors");
        return new FuzzTarget
        {
            Name = "safetensors-file",
            UsesFiles = true,
            Description = "SafetensorsFile.Open on a file (memory-mapped), then every tensor's bytes and every float tensor as float32",
            Seeds = SafetensorsSeeds(),
            Mutator = SafetensorsMutator.Instance,
            Decode = input =>
            {
                System.IO.File.WriteAllBytes(path, input);
                using var file = SafetensorsFile.Open(path);
                foreach (TensorInfo tensor in file.Tensors)
                {
                    ReadOnlySpan<byte> bytes = file.GetBytes(tensor);
                    if (bytes.Length != tensor.ByteLength)
                    {
                        throw new InvalidOperationException($"tensor {tensor} spans {bytes.Length} bytes");
                    }

                    if (DTypes.IsFloatingPoint(tensor.DType))
                    {
                        new TensorRef(file, tensor).ReadAllAsFloat32();
                    }
                }
            },
            IsRefusal = IsCheckpointRefusal,
            Refusals = nameof(SafetensorsFormatException),
        };
    }

    private FuzzTarget HiddenStatesTarget() => new()
    {
        Name = "hidden-states",
        Description = "HiddenStatesFile.Decode: Read's validation and conversion on a file's bytes in memory",
        Seeds = SafetensorsSeeds(),
        Mutator = SafetensorsMutator.Instance,
        Decode = input =>
        {
            float[] values = HiddenStatesFile.Decode("fuzz.safetensors", input, hiddenSize: null, out int tokens, out int width);
            if (values.Length != tokens * width || values.Any(v => !float.IsFinite(v)))
            {
                throw new InvalidOperationException($"accepted {values.Length} values as [{tokens}, {width}]");
            }
        },
        IsRefusal = e => e is SafetensorsFormatException or InvalidDataException,
        Refusals = nameof(SafetensorsFormatException) + ", " + nameof(InvalidDataException),
    };

    private FuzzTarget HiddenStatesFileTarget()
    {
        string path = Path.Combine(_directory, "hidden.safetensors");
        return new FuzzTarget
        {
            Name = "hidden-states-file",
            UsesFiles = true,
            Description = "HiddenStatesFile.Read (moecluster forward's input file) on a file",
            Seeds = SafetensorsSeeds(),
            Mutator = SafetensorsMutator.Instance,
            Decode = input =>
            {
                System.IO.File.WriteAllBytes(path, input);
                float[] values = HiddenStatesFile.Read(path, hiddenSize: null, out int tokens, out int width);
                if (values.Length != tokens * width || values.Any(v => !float.IsFinite(v)))
                {
                    throw new InvalidOperationException($"accepted {values.Length} values as [{tokens}, {width}]");
                }
            },
            IsRefusal = e => e is SafetensorsFormatException or InvalidDataException,
            Refusals = nameof(SafetensorsFormatException) + ", " + nameof(InvalidDataException),
        };
    }

    private static FuzzTarget CheckpointIndexTarget() => new()
    {
        Name = "checkpoint-index",
        Description = "CheckpointTensors.ParseIndex: model.safetensors.index.json (weight_map, shard file names)",
        Seeds =
        [
            "{\"metadata\":{\"total_size\":4096},\"weight_map\":{\"backbone.layers.1.mixer.gate.weight\":\"model-00001-of-00002.safetensors\",\"backbone.layers.1.norm.weight\":\"model-00002-of-00002.safetensors\"}}"u8.ToArray(),
            "{\"weight_map\":{}}"u8.ToArray(),
            "{\"weight_map\":{\"a\":\"x.safetensors\",\"b\":\"x.safetensors\",\"c\":\"y.safetensors\"},\"other\":[1,2,{\"k\":null}]}"u8.ToArray(),
        ],
        Mutator = JsonMutator.Instance,
        Decode = input =>
        {
            foreach ((string tensor, string shard) in CheckpointTensors.ParseIndex("fuzz/model.safetensors.index.json", input))
            {
                if (shard.Length == 0 || shard.Contains('/', StringComparison.Ordinal) || shard.Contains('\\', StringComparison.Ordinal) || shard is "." or ".." || tensor is null)
                {
                    throw new InvalidOperationException($"accepted shard name '{shard}'");
                }
            }
        },
        IsRefusal = IsCheckpointRefusal,
        Refusals = nameof(SafetensorsFormatException),
    };

    private static float[] Values(Random random, int count)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            values[i] = (float)((random.NextDouble() * 2) - 1) * MathF.Pow(2, random.Next(-6, 7));
        }

        return values;
    }
}

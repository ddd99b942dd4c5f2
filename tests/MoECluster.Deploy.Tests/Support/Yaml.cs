using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;

namespace MoECluster.Deploy.Tests.Support;

/// <summary>
/// YAML as plain objects (mappings are <see cref="Dictionary{TKey, TValue}"/> of string keys, sequences lists,
/// scalars strings), with merge keys (&lt;&lt;: *anchor) resolved, one object per document.
/// </summary>
public static class Yaml
{
    public static List<Node> LoadAll(string path)
    {
        using var reader = new StreamReader(path);
        var parser = new MergingParser(new Parser(reader));
        var deserializer = new DeserializerBuilder().Build();
        var documents = new List<Node>();
        parser.Consume<StreamStart>();
        while (parser.Accept<DocumentStart>(out _))
        {
            object? document = deserializer.Deserialize(parser);
            if (document is not null)
            {
                documents.Add(new Node(document, Path.GetFileName(path)));
            }
        }

        return documents;
    }

    public static Node Load(string path) => Assert.Single(LoadAll(path));
}

/// <summary>A YAML value with the path that reached it, for messages that say where a check failed.</summary>
public sealed class Node(object? value, string where)
{
    public object? Value { get; } = value;

    public string Where { get; } = where;

    public bool IsMap => Value is Dictionary<object, object>;

    public bool Has(string key) => Value is Dictionary<object, object> map && map.ContainsKey(key);

    public Node this[string key] => Value is Dictionary<object, object> map && map.TryGetValue(key, out object? v)
        ? new Node(v, $"{Where}.{key}")
        : throw new KeyNotFoundException($"{Where}.{key} is missing");

    public Node? Get(string key) => Has(key) ? this[key] : null;

    public string Text => Value as string ?? throw new InvalidDataException($"{Where} is not a scalar");

    public int Int => int.Parse(Text, System.Globalization.CultureInfo.InvariantCulture);

    public IEnumerable<Node> Items => Value is List<object> list
        ? list.Select((v, i) => new Node(v, $"{Where}[{i}]"))
        : throw new InvalidDataException($"{Where} is not a sequence");

    public IEnumerable<KeyValuePair<string, Node>> Entries => Value is Dictionary<object, object> map
        ? map.Select(kv => new KeyValuePair<string, Node>((string)kv.Key, new Node(kv.Value, $"{Where}.{kv.Key}")))
        : throw new InvalidDataException($"{Where} is not a mapping");

    public override string ToString() => Where;
}

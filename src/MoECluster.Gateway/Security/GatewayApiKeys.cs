using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;
using MoECluster.Cluster.Hosting;

namespace MoECluster.Gateway.Security;

/// <summary>
/// The API keys the gateway accepts (MoECluster:Gateway:ApiKeys and the lines of MoECluster:Gateway:ApiKeysFile),
/// held only as SHA-256 hashes. A presented key is hashed and compared with every configured hash by
/// <see cref="CryptographicOperations.FixedTimeEquals"/>: the comparison takes the same time whatever the key's
/// content and length (the hashes are all 32 bytes), and no early exit tells which key came close.
/// </summary>
public sealed class GatewayApiKeys
{
    /// <summary>Keys shorter than this draw a warning at start-up (they are guessable).</summary>
    public const int RecommendedMinimumLength = 16;

    private readonly byte[][] _hashes;

    public GatewayApiKeys(IOptions<MoeClusterOptions> options)
        : this(Load((options ?? throw new ArgumentNullException(nameof(options))).Value.Gateway, out int shortKeys))
    {
        ShortKeys = shortKeys;
    }

    private GatewayApiKeys(List<byte[]> hashes) => _hashes = [.. hashes];

    /// <summary>Whether any key is configured: then every endpoint but the health probes needs one.</summary>
    public bool Enabled => _hashes.Length > 0;

    public int Count => _hashes.Length;

    /// <summary>How many configured keys are shorter than <see cref="RecommendedMinimumLength"/>.</summary>
    public int ShortKeys { get; }

    /// <summary>Whether <paramref name="presented"/> is one of the configured keys (constant time in the key).</summary>
    public bool IsValid(string presented)
    {
        ArgumentNullException.ThrowIfNull(presented);
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(presented), hash);
        bool match = false;
        foreach (byte[] expected in _hashes)
        {
            // Non-short-circuiting: every configured key is compared.
            match |= CryptographicOperations.FixedTimeEquals(expected, hash);
        }

        return match;
    }

    /// <summary>Reads and checks the configured keys; a misconfiguration fails start-up with a message that names where, never the key.</summary>
    /// <exception cref="InvalidOperationException">An empty or unusable key, or a key file that cannot be read or holds no key.</exception>
    private static List<byte[]> Load(GatewayOptions options, out int shortKeys)
    {
        var keys = new List<(string Key, string Where)>();
        for (int i = 0; i < options.ApiKeys.Count; i++)
        {
            keys.Add((options.ApiKeys[i]?.Trim() ?? string.Empty, string.Create(CultureInfo.InvariantCulture, $"MoECluster:Gateway:ApiKeys:{i}")));
        }

        if (!string.IsNullOrWhiteSpace(options.ApiKeysFile))
        {
            string path = Path.GetFullPath(options.ApiKeysFile);
            string[] lines;
            try
            {
                lines = File.ReadAllLines(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new InvalidOperationException($"MoECluster:Gateway:ApiKeysFile '{path}' cannot be read: {e.Message}", e);
            }

            int before = keys.Count;
            for (int line = 0; line < lines.Length; line++)
            {
                string key = lines[line].Trim();
                if (key.Length > 0 && !key.StartsWith('#'))
                {
                    keys.Add((key, string.Create(CultureInfo.InvariantCulture, $"line {line + 1} of MoECluster:Gateway:ApiKeysFile '{path}'")));
                }
            }

            if (keys.Count == before)
            {
                throw new InvalidOperationException($"MoECluster:Gateway:ApiKeysFile '{path}' holds no key (one per line; blank lines and # comments are ignored).");
            }
        }

        shortKeys = 0;
        var hashes = new List<byte[]>(keys.Count);
        foreach ((string key, string where) in keys)
        {
            // An empty entry is most likely an unset variable (ApiKeys__0=$KEY): refusing it beats serving an open gateway.
            if (key.Length == 0)
            {
                throw new InvalidOperationException($"{where} is empty: remove it or set a key.");
            }

            // Visible ASCII only, so that the key fits in any header (Bearer token, X-Api-Key, Basic password).
            if (key.Any(c => c is < '!' or > '~'))
            {
                throw new InvalidOperationException($"{where}: an API key may hold only visible ASCII characters (no spaces or control characters).");
            }

            if (key.Length < RecommendedMinimumLength)
            {
                shortKeys++;
            }

            hashes.Add(SHA256.HashData(Encoding.UTF8.GetBytes(key)));
        }

        return hashes;
    }
}

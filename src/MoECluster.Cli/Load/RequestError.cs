using System.Globalization;
using System.Text.Json.Nodes;
using MoECluster.Gateway;

namespace MoECluster.Cli.Load;

/// <summary>Why a request got no 2xx answer.</summary>
internal enum RequestErrorKind
{
    /// <summary>401: no key, or a wrong one.</summary>
    Unauthorized,

    /// <summary>429: an expert shard's queue was full (back-pressure: counted as busy, not as failed).</summary>
    Busy,

    /// <summary>503: the gateway refused the request for overload (a 5xx, counted in both).</summary>
    Overloaded,

    /// <summary>Any other 5xx.</summary>
    ServerError,

    /// <summary>Any other 4xx (400, 403, 404, 413...).</summary>
    ClientError,

    /// <summary>No answer within <c>--timeout</c> (or cut short when the run ended).</summary>
    Timeout,

    /// <summary>No HTTP answer: refused or reset connection, name resolution, TLS, the answer cut off.</summary>
    Connection,

    /// <summary>Anything else: an answer that could not be decoded, for one.</summary>
    Other,
}

/// <summary>One request's error: its kind and HTTP status (0 when there was no HTTP answer).</summary>
internal sealed record RequestError(RequestErrorKind Kind, int Status)
{
    /// <summary>The error of an exception that ended a request (a cancellation is its timeout, or the run's end cutting it short).</summary>
    public static RequestError Of(Exception e) => e switch
    {
        GatewayException { StatusCode: 401 } => new(RequestErrorKind.Unauthorized, 401),
        GatewayException { StatusCode: 429 } => new(RequestErrorKind.Busy, 429),
        GatewayException { StatusCode: 503 } => new(RequestErrorKind.Overloaded, 503),
        GatewayException { StatusCode: >= 500 and < 600 } g => new(RequestErrorKind.ServerError, g.StatusCode),
        GatewayException { StatusCode: >= 400 and < 500 } g => new(RequestErrorKind.ClientError, g.StatusCode),
        OperationCanceledException => new(RequestErrorKind.Timeout, 0),
        HttpRequestException { StatusCode: null } => new(RequestErrorKind.Connection, 0),
        System.IO.IOException or System.Net.Sockets.SocketException => new(RequestErrorKind.Connection, 0),
        GatewayException g => new(RequestErrorKind.Other, g.StatusCode),
        HttpRequestException { StatusCode: { } code } => new(RequestErrorKind.Other, (int)code),
        _ => new(RequestErrorKind.Other, 0),
    };

    /// <summary>The name of the kind in the result JSON and the records.</summary>
    public string Name => Kind switch
    {
        RequestErrorKind.Unauthorized => "unauthorized",
        RequestErrorKind.Busy => "busy",
        RequestErrorKind.Overloaded => "overloaded",
        RequestErrorKind.ServerError => "server_error",
        RequestErrorKind.ClientError => "client_error",
        RequestErrorKind.Timeout => "timeout",
        RequestErrorKind.Connection => "connection_error",
        _ => "other",
    };
}

/// <summary>
/// The errors of a phase, by kind and by HTTP status. failed = unauthorized + client errors + server errors (overloaded
/// included) + timeouts + connection errors + other; busy (429) is counted here too, but not in failed.
/// </summary>
internal sealed class ErrorCounts
{
    private readonly Dictionary<RequestErrorKind, long> _kinds = [];
    private readonly SortedDictionary<int, long> _statuses = [];

    public long this[RequestErrorKind kind] => _kinds.GetValueOrDefault(kind);

    public IReadOnlyDictionary<int, long> ByStatus => _statuses;

    public void Add(RequestError error)
    {
        ArgumentNullException.ThrowIfNull(error);
        _kinds[error.Kind] = this[error.Kind] + 1;
        if (error.Status > 0)
        {
            _statuses[error.Status] = _statuses.GetValueOrDefault(error.Status) + 1;
        }
    }

    public ErrorCounts Copy()
    {
        var copy = new ErrorCounts();
        foreach (var (kind, n) in _kinds)
        {
            copy._kinds[kind] = n;
        }

        foreach (var (status, n) in _statuses)
        {
            copy._statuses[status] = n;
        }

        return copy;
    }

    /// <summary>The <c>errors</c> object of the result JSON.</summary>
    public JsonObject ToJson()
    {
        var byStatus = new JsonObject();
        foreach (var (status, n) in _statuses)
        {
            byStatus[status.ToString(CultureInfo.InvariantCulture)] = n;
        }

        return new JsonObject
        {
            ["unauthorized"] = this[RequestErrorKind.Unauthorized],
            ["busy"] = this[RequestErrorKind.Busy],
            ["overloaded"] = this[RequestErrorKind.Overloaded],
            ["server_errors"] = this[RequestErrorKind.ServerError] + this[RequestErrorKind.Overloaded],
            ["client_errors"] = this[RequestErrorKind.ClientError],
            ["timeouts"] = this[RequestErrorKind.Timeout],
            ["connection_errors"] = this[RequestErrorKind.Connection],
            ["other"] = this[RequestErrorKind.Other],
            ["by_status"] = byStatus,
        };
    }

    /// <summary>One line for the summary, or null when there was no error.</summary>
    public string? Summary()
    {
        if (_kinds.Values.All(n => n == 0))
        {
            return null;
        }

        string statuses = _statuses.Count == 0 ? "none" : string.Join(", ", _statuses.Select(kv => $"{kv.Key} x{kv.Value}"));
        return $"errors: 401 unauthorized {this[RequestErrorKind.Unauthorized]}, 429 busy {this[RequestErrorKind.Busy]}, "
            + $"5xx {this[RequestErrorKind.ServerError] + this[RequestErrorKind.Overloaded]} (503 overloaded {this[RequestErrorKind.Overloaded]}), "
            + $"other 4xx {this[RequestErrorKind.ClientError]}, timeouts {this[RequestErrorKind.Timeout]}, connection errors {this[RequestErrorKind.Connection]}, "
            + $"other {this[RequestErrorKind.Other]}; by HTTP status: {statuses}";
    }
}

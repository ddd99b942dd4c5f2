using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;

namespace MoECluster.Gateway.Limits;

/// <summary>
/// A request body read into one buffer from <see cref="ArrayPool{T}.Shared"/>: sized once from the Content-Length
/// (a chunked body starts at 64 KiB and doubles as data arrives, never past the limit), returned to the pool on dispose. The pool
/// keeps no more buffers than were rented at once, which <see cref="GatewayAdmission"/> bounds.
/// </summary>
public sealed class PooledRequestBody : IDisposable
{
    private const int ChunkedStart = 64 << 10;

    private byte[]? _buffer;

    private PooledRequestBody(byte[] buffer, int length)
    {
        _buffer = buffer;
        Length = length;
    }

    public int Length { get; }

    public ReadOnlyMemory<byte> Memory => (_buffer ?? throw new ObjectDisposedException(nameof(PooledRequestBody))).AsMemory(0, Length);

    /// <summary>
    /// Reads the body of <paramref name="http"/>, at most <paramref name="limit"/> bytes (413 beyond, from the
    /// Content-Length before anything is read, else as soon as what arrives passes it), within
    /// <paramref name="timeout"/> (408 beyond). A malformed body (bad chunk framing, fewer bytes than declared) is a 400;
    /// a client that went away is <see cref="GatewayClientGoneException"/>.
    /// </summary>
    public static async Task<PooledRequestBody> ReadAsync(HttpContext http, int limit, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(http);
        var request = http.Request;
        if (request.ContentLength is long declared && declared > limit)
        {
            throw TooLarge(limit, declared);
        }

        int capacity = request.ContentLength is long length ? (int)length : Math.Min(ChunkedStart, limit);
        if (capacity == 0)
        {
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, "empty request body");
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(capacity);
        int filled = 0;

        // Read through the body's PipeReader without a cancellation token: a token that fires mid-read leaves Kestrel's
        // read pending, and its draining of the rest then fails with an error in the log. The deadline cancels the
        // pending read instead; a client that goes away completes it (with an error) on its own.
        var reader = request.BodyReader;
        using var deadline = new CancellationTokenSource(timeout);
        using var onDeadline = deadline.Token.Register(static r => ((PipeReader)r!).CancelPendingRead(), reader);
        try
        {
            while (true)
            {
                ReadResult result = await reader.ReadAsync();
                if (result.IsCanceled || deadline.IsCancellationRequested)
                {
                    reader.AdvanceTo(result.Buffer.Start);
                    throw new GatewayRequestException(StatusCodes.Status408RequestTimeout, string.Create(CultureInfo.InvariantCulture,
                        $"the request body was not received within {timeout.TotalSeconds} s (MoECluster:Gateway:BodyReadTimeoutSeconds)"));
                }

                ReadOnlySequence<byte> data = result.Buffer;
                if (filled + data.Length > limit)
                {
                    // Only a chunked body gets here: a declared length over the limit was refused above.
                    reader.AdvanceTo(data.End);
                    throw TooLarge(limit, null);
                }

                if (filled + data.Length > buffer.Length)
                {
                    buffer = Grow(buffer, filled, (int)Math.Min(Math.Max((long)buffer.Length * 2, filled + data.Length), limit));
                }

                data.CopyTo(buffer.AsSpan(filled));
                filled += (int)data.Length;
                reader.AdvanceTo(data.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception e) when (IsClientGone(http, e))
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw new GatewayClientGoneException(e);
        }
        catch (BadHttpRequestException e)
        {
            ArrayPool<byte>.Shared.Return(buffer);

            // The server's own guard (MaxRequestBodySize, set to the same limit), a body shorter than declared, bad framing.
            throw e.StatusCode == StatusCodes.Status413PayloadTooLarge
                ? TooLarge(limit, null)
                : new GatewayRequestException(e.StatusCode, $"bad request body: {e.Message}", e);
        }
        catch (IOException e)
        {
            // Kestrel reports a chunk size that overflows as an IOException ("Bad chunk size data."): the client's fault.
            ArrayPool<byte>.Shared.Return(buffer);
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, $"bad request body: {e.Message}", e);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }

        if (filled == 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw new GatewayRequestException(StatusCodes.Status400BadRequest, "empty request body");
        }

        return new PooledRequestBody(buffer, filled);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _buffer, null) is { } buffer)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Whether <paramref name="e"/> means the client went away (reset, closed, or the request was aborted).</summary>
    public static bool IsClientGone(HttpContext http, Exception e)
    {
        ArgumentNullException.ThrowIfNull(http);
        return http.RequestAborted.IsCancellationRequested
            || e is ConnectionResetException or ConnectionAbortedException or GatewayClientGoneException
            || (e is BadHttpRequestException && e.Message.StartsWith(UnexpectedEnd, StringComparison.Ordinal));
    }

    /// <summary>
    /// Kestrel's message when the connection ended before the body did (the client closed it mid-request); the reason
    /// code behind it is not public, and the request-aborted token is not always set yet when the read fails.
    /// </summary>
    private const string UnexpectedEnd = "Unexpected end of request content";

    private static byte[] Grow(byte[] buffer, int filled, int size)
    {
        byte[] larger = ArrayPool<byte>.Shared.Rent(size);
        buffer.AsSpan(0, filled).CopyTo(larger);
        ArrayPool<byte>.Shared.Return(buffer);
        return larger;
    }

    private static GatewayRequestException TooLarge(int limit, long? declared) => new(
        StatusCodes.Status413PayloadTooLarge,
        declared is long d
            ? string.Create(CultureInfo.InvariantCulture, $"request body of {d} bytes exceeds the limit of {limit} bytes (MoECluster:Gateway:MaxRequestBytes)")
            : string.Create(CultureInfo.InvariantCulture, $"request body exceeds the limit of {limit} bytes (MoECluster:Gateway:MaxRequestBytes)"));
}

/// <summary>The client disconnected (or reset the connection) before its request was answered: counted apart, never a server failure.</summary>
public sealed class GatewayClientGoneException : Exception
{
    public GatewayClientGoneException()
        : base("the client went away")
    {
    }

    public GatewayClientGoneException(string message)
        : base(message)
    {
    }

    public GatewayClientGoneException(Exception innerException)
        : base("the client went away", innerException)
    {
    }

    public GatewayClientGoneException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using MoECluster.Cluster.Contracts;

namespace MoECluster.Cluster.Telemetry;

/// <summary>
/// A connection middleware that counts the bytes Orleans' connections hand to the socket transport. It is registered
/// first, so it sits beneath TLS: what it counts is what goes on the TCP stream (TLS records, handshakes and
/// Orleans' own connection preamble included), not the plaintext Orleans writes above TLS.
/// </summary>
public static class TcpByteCounting
{
    /// <summary>Kinds of connection: <c>silo</c> (silo to silo, either side opened it) and <c>gateway</c> (Orleans clients on the gateway port).</summary>
    public const string Silo = "silo";
    public const string Gateway = "gateway";

    public static IConnectionBuilder UseTcpByteCounting(this IConnectionBuilder builder, TrafficLedger ledger, string kind)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Use(next => async context =>
        {
            ledger.TcpConnectionOpened(kind);
            var original = context.Transport;
            context.Transport = new CountingDuplexPipe(original, bytes => ledger.TcpBytesWritten(kind, bytes));
            try
            {
                await next(context);
            }
            finally
            {
                context.Transport = original;
            }
        });
    }

    private sealed class CountingDuplexPipe(IDuplexPipe inner, Action<long> written) : IDuplexPipe
    {
        public PipeReader Input => inner.Input;

        public PipeWriter Output { get; } = new CountingPipeWriter(inner.Output, written);
    }

    /// <summary>Counts every byte committed to the inner writer (Advance, or WriteAsync, which the inner writer does not route through this one).</summary>
    private sealed class CountingPipeWriter(PipeWriter inner, Action<long> written) : PipeWriter
    {
        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

        public override long UnflushedBytes => inner.UnflushedBytes;

        public override void Advance(int bytes)
        {
            inner.Advance(bytes);
            written(bytes);
        }

        public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);

        public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
        {
            written(source.Length);
            return inner.WriteAsync(source, cancellationToken);
        }

        public override void CancelPendingFlush() => inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
    }
}

namespace MoECluster.Testing;

/// <summary>Waits for a cluster started as child processes to reach a state, failing early when one of them dies.</summary>
public static class ProcessWait
{
    /// <summary>
    /// Polls <paramref name="ready"/> every 200 ms until it returns true. An HTTP connection error or timeout counts as
    /// not ready yet. Throws with the output of the first of <paramref name="processes"/> that exits, or, after
    /// <paramref name="timeout"/>, with the output of all of them.
    /// </summary>
    public static async Task UntilAsync(string what, Func<Task<bool>> ready, TimeSpan timeout, params IReadOnlyCollection<BackgroundProcess> processes)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (processes.FirstOrDefault(p => p.HasExited) is { } dead)
            {
                throw new InvalidOperationException($"a process exited (code {dead.ExitCode}) while waiting for {what}:\n{dead.Output}");
            }

            try
            {
                if (await ready())
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException(
                    $"waited {timeout.TotalSeconds:0} s for {what}:\n{string.Join("\n---\n", processes.Select(p => p.Output))}");
            }

            await Task.Delay(200);
        }
    }
}

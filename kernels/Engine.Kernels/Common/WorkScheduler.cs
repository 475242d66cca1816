using System.Runtime.ExceptionServices;

namespace Engine;

/// <summary>
/// The CPU threading contract. An op splits its work into independent items (for the attention ops:
/// one per sequence and key/value head) and sizes one scratch area per worker up front; the
/// scheduler runs the items on at most <see cref="Workers"/> workers and tells each item which
/// worker runs it, so the item uses that worker's scratch and allocates nothing. A scheduler must:
/// <list type="bullet">
/// <item>have <see cref="Workers"/> >= 1 (refused otherwise);</item>
/// <item>never run two items with the same worker index at once (they would share one scratch area: wrong results, which
/// nothing detects);</item>
/// <item>return from <see cref="Run"/> only when every item is done, passing an item's exception on;</item>
/// <item>take calls of <see cref="Run"/> from many threads at once, and from inside its own items (a device's
/// scheduler serves every call on the device).</item>
/// </list>
/// </summary>
public interface IWorkScheduler
{
    int Workers { get; }

    /// <summary>
    /// Runs body(item, worker) for item in [0, count), worker in [0, min(<see cref="Workers"/>, count)) (so scratch
    /// for that many workers is enough), no two items of one worker at once; returns when all are done.
    /// </summary>
    void Run(int count, Action<int, int> body);
}

/// <summary>Runs items on the .NET thread pool, pulling them from a shared counter.</summary>
public sealed class ThreadPoolScheduler : IWorkScheduler
{
    public ThreadPoolScheduler(int workers)
    {
        if (workers < 1) throw new ArgumentOutOfRangeException(nameof(workers), workers, "at least one worker");
        Workers = workers;
    }

    public int Workers { get; }

    /// <summary>Runs a call's items one after another on the calling thread: for work too small to wake a pool.</summary>
    public static IWorkScheduler CallingThread { get; } = new ThreadPoolScheduler(1);

    public void Run(int count, Action<int, int> body)
    {
        int workers = Math.Min(Workers, count);
        if (workers <= 1)
        {
            for (int i = 0; i < count; i++) body(i, 0);
            return;
        }
        int next = -1;
        try
        {
            Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, worker =>
            {
                int item;
                while ((item = Interlocked.Increment(ref next)) < count) body(item, worker);
            });
        }
        catch (AggregateException e)
        {
            // The item's own exception, as one worker (run inline) passes it on: not wrapped by how many workers ran.
            ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
    }
}

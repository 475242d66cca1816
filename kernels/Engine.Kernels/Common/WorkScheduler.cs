namespace Engine;

/// <summary>
/// The CPU threading contract. An op splits its work into independent items (for the attention ops:
/// one per sequence and key/value head) and sizes one scratch area per worker up front; the
/// scheduler runs the items on at most <see cref="Workers"/> workers and tells each item which
/// worker runs it, so the item uses that worker's scratch and allocates nothing.
/// </summary>
public interface IWorkScheduler
{
    int Workers { get; }

    /// <summary>
    /// Runs body(item, worker) for item in [0, count), worker in [0, min(<see cref="Workers"/>, count)) (so scratch
    /// for that many workers is enough); returns when all are done.
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
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, worker =>
        {
            int item;
            while ((item = Interlocked.Increment(ref next)) < count) body(item, worker);
        });
    }
}

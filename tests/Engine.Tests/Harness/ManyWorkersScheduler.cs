namespace Engine.Tests.Harness;

/// <summary>
/// A scheduler that claims far more workers than it runs (as --threads 1000000 would ask for) and runs the items on two
/// threads: a kernel that reserves scratch per claimed worker rather than per worker that can run exhausts memory.
/// </summary>
public sealed class ManyWorkersScheduler : IWorkScheduler
{
    private readonly ThreadPoolScheduler _inner = new(2);

    public int Workers => 1 << 30;

    public void Run(int count, Action<int, int> body) => _inner.Run(count, body);
}

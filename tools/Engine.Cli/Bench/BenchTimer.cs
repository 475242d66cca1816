using System.Diagnostics;

namespace Engine.Cli;

/// <summary>Wall-clock timing: warm-up runs (until tiered compilation settles), then the median of repeats.</summary>
public static class BenchTimer
{
    /// <param name="afterRun">called after each timed run (a progress bar), outside the time.</param>
    public static double Median(Action run, int repeats, double warmupSeconds = 1.0, Action? afterRun = null)
    {
        var clock = Stopwatch.StartNew();
        int warm = 0;
        do { run(); warm++; } while (clock.Elapsed.TotalSeconds < warmupSeconds || warm < 2);
        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            clock.Restart();
            run();
            times[i] = clock.Elapsed.TotalSeconds;
            afterRun?.Invoke();
        }
        return MedianOf(times);
    }

    /// <summary>Longer than ORT's intra-op threads spin after their last work before they sleep.</summary>
    internal static readonly TimeSpan SpinSettle = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Two variants timed in one run: both warmed up, then they take turns, <paramref name="block"/> runs at a time, so that
    /// load on the machine falls on both alike. With blocks longer than one run (sessions whose intra-op threads spin), each
    /// block starts after a pause in which the other variant's threads stop spinning, and its first quarter is left out (its
    /// own threads waking): each session is timed as it runs alone. The median of <paramref name="repeats"/> runs of each.
    /// </summary>
    public static (double First, double Second) MedianInterleaved(Action first, Action second, int repeats, int block, double warmupSeconds = 1.0)
    {
        var clock = Stopwatch.StartNew();
        int warm = 0;
        do { first(); second(); warm++; } while (clock.Elapsed.TotalSeconds < warmupSeconds || warm < 2);
        var a = new List<double>(repeats);
        var b = new List<double>(repeats);
        int skip = block > 1 ? block / 4 : 0;
        while (a.Count < repeats)
        {
            foreach (var (run, times) in new[] { (first, a), (second, b) })
            {
                if (block > 1) Thread.Sleep(SpinSettle);
                for (int i = 0; i < block; i++)
                {
                    clock.Restart();
                    run();
                    if (i >= skip && times.Count < repeats) times.Add(clock.Elapsed.TotalSeconds);
                }
            }
        }
        return (MedianOf(a), MedianOf(b));
    }

    /// <summary>The median of some values (the mean of the middle two for an even count).</summary>
    public static double MedianOf(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    }
}

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

    /// <summary>The median of some values (the mean of the middle two for an even count).</summary>
    public static double MedianOf(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    }
}

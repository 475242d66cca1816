using System.Diagnostics;

namespace Engine.Cli;

/// <summary>Wall-clock timing: warm-up runs (until tiered compilation settles), then the median of repeats.</summary>
public static class BenchTimer
{
    public static double Median(Action run, int repeats, double warmupSeconds = 1.0)
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
        }
        Array.Sort(times);
        return repeats % 2 == 1 ? times[repeats / 2] : 0.5 * (times[repeats / 2 - 1] + times[repeats / 2]);
    }
}

using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Engine.Kernels.Common;

/// <summary>
/// Measures this machine's fp32 FMA peak: every thread runs 12 independent FMA chains (enough to cover the
/// FMA latency on two ports) of the machine's native vectors (<see cref="SimdWidths.Machine"/>: emulated
/// Vector512 lanes would read about half the real peak), all threads at once, best of several rounds.
/// Kernel throughput is reported as a fraction of this figure.
/// </summary>
public static class FmaPeak
{
    private const int Chains = 12;

    /// <summary>Best GFLOP/s over <paramref name="rounds"/> rounds of about <paramref name="secondsPerRound"/> each.</summary>
    public static double Measure(int threads, int rounds = 5, double secondsPerRound = 0.2)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "at least one thread");
        long iterations = 1 << 16;
        // Calibrate on one thread so a round lasts about secondsPerRound.
        Chain(iterations);
        var sw = Stopwatch.StartNew();
        Chain(iterations);
        double perIteration = Math.Max(sw.Elapsed.TotalSeconds / iterations, 1e-12);
        iterations = Math.Max(1 << 12, (long)(secondsPerRound / perIteration));

        double best = 0;
        for (int round = 0; round < rounds; round++)
        {
            // The clock starts before any worker may: started after a barrier released them all, it could start after
            // some (on a busy machine, all) of them had finished, and the peak read far above the machine's.
            using var ready = new CountdownEvent(threads);
            using var go = new ManualResetEventSlim();
            var workers = new Thread[threads];
            for (int t = 0; t < threads; t++)
            {
                workers[t] = new Thread(() => { ready.Signal(); go.Wait(); Chain(iterations); }) { IsBackground = true };
                workers[t].Start();
            }
            ready.Wait();
            var clock = Stopwatch.StartNew();
            go.Set();
            foreach (var w in workers) w.Join();
            double seconds = clock.Elapsed.TotalSeconds;
            double flops = (double)iterations * Chains * Lanes * 2 * threads;
            best = Math.Max(best, flops / seconds / 1e9);
        }
        return best;
    }

    private static int Lanes => SimdWidths.Wide ? Lanes512.Count : Lanes256.Count;

    private static float Chain(long iterations) => SimdWidths.Wide ? Chain<Lanes512>(iterations) : Chain<Lanes256>(iterations);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chain<TV>(long iterations) where TV : unmanaged, ILanes<TV>
    {
        var m = TV.Broadcast(0.999999f);
        var a = TV.Broadcast(1e-7f);
        TV c0 = TV.Broadcast(1f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
        TV c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < iterations; i++)
        {
            c0 = TV.Fma(c0, m, a); c1 = TV.Fma(c1, m, a);
            c2 = TV.Fma(c2, m, a); c3 = TV.Fma(c3, m, a);
            c4 = TV.Fma(c4, m, a); c5 = TV.Fma(c5, m, a);
            c6 = TV.Fma(c6, m, a); c7 = TV.Fma(c7, m, a);
            c8 = TV.Fma(c8, m, a); c9 = TV.Fma(c9, m, a);
            c10 = TV.Fma(c10, m, a); c11 = TV.Fma(c11, m, a);
        }
        var sum = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11));
        return TV.Sum(sum);
    }
}

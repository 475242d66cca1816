using Engine.Kernels.Common;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>The FMA peak every bench line is compared with: never far above what the machine's cores can do.</summary>
[TestFixture]
public sealed class FmaPeakTests
{
    [Test]
    public void ThreadsPastTheCoresDoNotInflateThePeak()
    {
        int cores = Environment.ProcessorCount;
        double single = FmaPeak.Measure(1, rounds: 2, secondsPerRound: 0.05);
        double many = FmaPeak.Measure(4 * cores, rounds: 2, secondsPerRound: 0.05);
        // Each core adds at most one thread's throughput; the slack covers one thread measured while others ran.
        Assert.That(many, Is.LessThanOrEqualTo(4 * cores * single), $"{many:F1} GFLOP/s on {4 * cores} threads, {single:F1} on one");
    }
}

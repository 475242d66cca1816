using System.CommandLine;
using System.Text.Json;
using Engine.Kernels.Common;

namespace Engine.Cli.Commands;

/// <summary>engine bench peak: this machine's fp32 FMA peak, the roofline every bench line is compared with.</summary>
internal sealed class PeakBenchCommand : EngineCommand
{
    private readonly Option<int?> _threads = Opt.Threads();
    /// <summary>The most --rounds takes: a round lasts about 0.4 s (one thread, then all), so 1000 take some 7 minutes.</summary>
    public const int MaxRounds = 1000;

    private readonly Option<int> _rounds = Opt.Int("--rounds", 5, $"rounds (the best is kept), 1..{MaxRounds}", min: 1, max: MaxRounds);
    private readonly Option<bool> _json = Opt.Json();

    public PeakBenchCommand() : base("peak", "measure the fp32 FMA peak (FMA chains at the machine's vector width on all cores)",
        """
        12 independent FMA chains per thread (512-bit with AVX-512, else 256-bit), all threads at once, best of the rounds;
        on at most the machine's cores (threads past them add no FMA throughput).
        """)
    {
        Add(_threads);
        Add(_rounds);
        Add(_json);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        int requested = args.GetValue(_threads) ?? Environment.ProcessorCount, threads = BenchReport.PeakThreads(requested), rounds = args.GetValue(_rounds);
        double single = FmaPeak.Measure(1, rounds);
        double all = threads == 1 ? single : FmaPeak.Measure(threads, rounds);
        if (args.GetValue(_json))
            context.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["threads"] = threads, ["peak_gflops_one_thread"] = Math.Round(single, 1), ["peak_gflops"] = Math.Round(all, 1), ["simd"] = CpuInfo.SimdDescription,
            }));
        else
            context.Out.WriteLine($"fp32 FMA peak: {all:F1} GFLOP/s on {threads} threads ({single:F1} on one), {CpuInfo.SimdDescription}" +
                (threads < requested ? $" (not {requested}: threads past the machine's {threads} cores add no FMA throughput)" : ""));
        return 0;
    }
}

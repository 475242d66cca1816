using Engine.Kernels.Common;

namespace Engine.Cli.Commands;

/// <summary>engine bench peak: this machine's fp32 FMA peak, the roofline every bench line is compared with.</summary>
internal sealed class PeakBenchCommand : ICommand
{
    public string Name => "peak";
    public string Summary => "measure the fp32 FMA peak (Vector512 FMA chains on all cores)";
    public IReadOnlyCollection<string> Options { get; } = ["threads", "rounds", "json"];
    public string Usage => """
        engine bench peak [--threads N] [--rounds 5] [--json]
          12 independent Vector512 FMA chains per thread, all threads at once, best of the rounds.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        int threads = args.Int("threads", Environment.ProcessorCount, min: 1);
        int rounds = args.Int("rounds", 5, min: 1);
        bool json = args.Flag("json");
        double single = FmaPeak.Measure(1, rounds);
        double all = threads == 1 ? single : FmaPeak.Measure(threads, rounds);
        if (json)
            context.Out.WriteLine($$"""{ "threads": {{threads}}, "peak_gflops_one_thread": {{single:F1}}, "peak_gflops": {{all:F1}}, "simd": "{{CpuInfo.SimdDescription}}" }""");
        else
            context.Out.WriteLine($"fp32 FMA peak: {all:F1} GFLOP/s on {threads} threads ({single:F1} on one), {CpuInfo.SimdDescription}");
        return 0;
    }
}

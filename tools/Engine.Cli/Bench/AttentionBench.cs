using Engine.Cli.Commands;
using Engine.Kernels.Common;

namespace Engine.Cli;

/// <summary>
/// What the attention bench commands share: --T (one length or a list), B, H, K, V (defaults 1, 8, 128, 128),
/// --mode, the timing options, --json and --plot; a run makes a workload per length and times one variant per mode.
/// </summary>
public sealed record AttentionBench(int[] Tokens, BenchShape Shape, AttentionMode[] Modes, BenchTiming Timing, bool Json, string? Chart)
{
    public static AttentionBench Parse(CommandLine args)
    {
        var tokens = BenchShape.TokenList(args, 8192);
        return new AttentionBench(tokens, BenchShape.Parse(args, t: tokens[0], h: 8, k: 128, v: 128),
            BenchShape.Modes(args), BenchTiming.Parse(args, 7), args.Flag("json"), BenchChart.Target(args));
    }

    /// <summary>Times every length × mode on the device the options name and prints the table (or JSON), and the chart if asked.</summary>
    /// <param name="variant">a mode's label, model flops and call on a workload.</param>
    public int Run<TWork>(CommandLine args, CliContext context, string op, Func<int, TWork> make,
        Func<TWork, AttentionMode, (string Label, double Flops, Action<EngineDevice> Run)> variant)
    {
        using var device = OpIo.Device(args);
        var results = BenchReport.Sweep(op, device, Shape, Tokens, Timing, make,
            work => Modes.Select(mode =>
            {
                var (label, flops, run) = variant(work, mode);
                return (label, flops, (Action)(() => run(device)));
            }));
        BenchReport.Report(context, results, device, Timing, Json, Chart);
        return 0;
    }
}

using System.CommandLine;
using Engine.Cli.Commands;
using Engine.Kernels.Common;
using Engine.Onnx;
using Engine.Workloads;

namespace Engine.Cli;

/// <summary>The options every bench command shares: --T (one length or a list), the timing, the device, --json and --plot.</summary>
internal sealed class BenchOptions(int tokens, int repeats)
{
    public Option<int[]> T { get; } = Opt.TimedLengths("--T", tokens, "sequence length, or a comma-separated list (e.g. 2048,8192,32768) to show how time grows with T");
    /// <summary>
    /// The most --repeats and --best-of take: each timed call's time is held until the median is taken (and on the GPU each
    /// is profiled once more), so a count far past any useful one (a typo) would allocate gigabytes and time for days.
    /// </summary>
    public const int MaxRounds = 1_000_000;

    public Option<int?> Repeats { get; } = Opt.OptionalInt("--repeats", $"median of N runs after a one-second warm-up, 1..{MaxRounds} (default {repeats})", min: 1, max: MaxRounds);
    public Option<int?> BestOf { get; } = Opt.OptionalInt("--best-of", $"best of N rounds, every configuration once per round in turn (steadier on a noisy machine), 1..{MaxRounds}", min: 1, max: MaxRounds);
    public DeviceOptions Device { get; } = new();
    public Option<bool> Json { get; } = Opt.Json();
    public Option<string> Plot { get; } = Opt.Text("--plot", "draw the results against T into an .svg or .png file", "FILE.svg|FILE.png");

    public IEnumerable<Option> All => [T, Repeats, BestOf, .. Device.All, Json, Plot];

    public BenchTiming Timing(ParseResult args) => (args.GetValue(Repeats), args.GetValue(BestOf)) switch
    {
        (not null, not null) => throw new UsageException("give --repeats or --best-of, not both"),
        (_, int rounds) => new BenchTiming(rounds, Interleaved: true),
        (int rounds, _) => new BenchTiming(rounds, Interleaved: false),
        _ => new BenchTiming(repeats, Interleaved: false),
    };
}

/// <summary>The options of the attention bench commands: the bench options, B, H, K, V (defaults 1, 8, 128, 128) and --mode.</summary>
internal sealed class AttentionBenchOptions
{
    public BenchOptions Bench { get; } = new(tokens: 8192, repeats: 7);
    public Option<int> B { get; } = Opt.Int("--B", 1, "batch", min: 1);
    public Option<int> H { get; } = Opt.Int("--H", 8, "heads", min: 1);
    public Option<int> K { get; } = Opt.Int("--K", 128, "key head dim", min: 1);
    public Option<int> V { get; } = Opt.Int("--V", 128, "value head dim", min: 1);
    public Option<string> Mode { get; } = Opt.Choice("--mode", "chunked", ["chunked", "recurrent", "both"], "the chunked form, the recurrent (decode) form, or both");
    public Option<GpuPrecision> Precision { get; } = Opt.Choice("--gpu-precision", GpuPrecision.Fp32,
        "how the GPU kernels multiply the chunk products: fp32, or on tensor cores tf32 or fp16 (--backend gpu only; " +
        "without CUDA emulated on ILGPU's CPU accelerator in warps of 32, seconds per call even at tiny shapes)");

    public IEnumerable<Option> All => [B, H, K, V, Mode, Precision, .. Bench.All];
}

/// <summary>A parsed attention bench command line: a run makes a workload per length and times one variant per mode.</summary>
internal sealed record AttentionBench(int[] Tokens, BenchShape Shape, AttentionMode[] Modes, GpuPrecision Precision, BenchTiming Timing, bool Json, string? Chart)
{
    /// <summary>What --backend gpu adds, for the commands' help.</summary>
    public const string GpuNotes = """
        --backend gpu: each kernel's launches and median device time per call (the GPU profile of as many more calls
        as were timed), and, where ONNX Runtime's CUDA provider runs, ORT's own CUDA kernels on the same data with
        the ratio of their time to the engine's (otherwise a note says why they were left out).
        """;

    /// <summary>
    /// A chunk (or block) size given with --mode recurrent, which runs token by token: refused, not ignored (with --mode both
    /// it sizes the chunked form's chunks).
    /// </summary>
    public static void RequireChunked(ParseResult args, AttentionBenchOptions options, Option<int> chunk)
    {
        if (args.GetValue(options.Mode) == "recurrent" && Opt.Given(args, chunk))
            throw new UsageException($"{chunk.Name} applies to --mode chunked or both: the recurrent form runs token by token");
    }

    public static AttentionBench Parse(ParseResult args, AttentionBenchOptions options)
    {
        var tokens = args.GetValue(options.Bench.T)!;
        int b = args.GetValue(options.B), h = args.GetValue(options.H), k = args.GetValue(options.K), v = args.GetValue(options.V);
        // Before anything is timed: the sweep holds the workload of every T until it ends.
        AttentionWorkload.RequireSizes(b, tokens, h, k, v);
        AttentionMode[] modes = args.GetValue(options.Mode) switch
        {
            "recurrent" => [AttentionMode.Recurrent],
            "both" => [AttentionMode.Chunked, AttentionMode.Recurrent],
            _ => [AttentionMode.Chunked],
        };
        return new AttentionBench(tokens, new BenchShape(b, tokens[0], h, k, v),
            modes, args.GetValue(options.Precision), options.Bench.Timing(args), args.GetValue(options.Bench.Json), BenchChart.Target(args.GetValue(options.Bench.Plot)));
    }

    /// <summary>
    /// Times every length × mode on the device the options name and prints the table (or JSON), and the chart if asked. On
    /// the GPU backend, <paramref name="ortCuda"/>'s models (ONNX Runtime's own CUDA kernels of the op) are timed too, on the
    /// same data, as peers of the first mode; where ORT's CUDA provider cannot run, a note says why and the rest runs.
    /// </summary>
    /// <param name="variant">a mode's label, model flops and call on a workload.</param>
    public int Run<TWork>(ParseResult args, AttentionBenchOptions options, CliContext context, string op, Func<int, TWork> make,
        Func<TWork, AttentionMode, (string Label, double Flops, Action<EngineDevice> Run)> variant,
        Func<IEnumerable<(string Variant, OnnxModel Model, Func<AttentionWorkload, Dictionary<string, TensorData>> Inputs)>>? ortCuda = null)
        where TWork : AttentionWorkload
    {
        using var device = options.Bench.Device.Create(args, tensorCores: Precision != GpuPrecision.Fp32);
        if (Precision != GpuPrecision.Fp32 && device.Backend != Backend.Gpu)
            throw new UsageException($"--gpu-precision {Opt.Kebab(Precision)}: the {Opt.Kebab(device.Backend)} backend multiplies in {(device.Backend == Backend.Reference ? "float64" : "fp32")}; it applies to --backend gpu");
        var notes = new List<string>();
        var (opened, unavailable) = device.Backend == Backend.Gpu && ortCuda is not null ? OrtCudaPeer.Open(ortCuda()) : ([], null);
        if (unavailable is not null) notes.Add($"ort-cuda rows left out: {unavailable}");
        var peers = opened.ToList();
        try
        {
            var results = BenchReport.Sweep(context, op, device, Shape, Tokens, Timing, make, work =>
            {
                var cases = Modes.Select(mode =>
                {
                    var (label, flops, run) = variant(work, mode);
                    return new BenchCase(Precision == GpuPrecision.Fp32 ? label : $"{label} {Opt.Kebab(Precision)}", flops, () => run(device));
                }).ToList();
                foreach (var peer in peers.ToList())
                {
                    try
                    {
                        cases.Add(new BenchCase(peer.Variant, cases[0].Flops, peer.Prepare(work), PeerOf: cases[0].Variant));
                    }
                    catch (ModelRunException e)
                    {
                        notes.Add($"{peer.Variant} rows left out: ONNX Runtime's kernel refused the call: {OrtCudaPeer.Reason(e)}");
                        peers.Remove(peer);
                    }
                }
                return cases;
            });
            BenchReport.Report(context, results, device, Timing, Json, Chart, notes);
        }
        finally
        {
            foreach (var peer in opened) peer.Dispose();
        }
        return 0;
    }
}

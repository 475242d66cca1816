using System.CommandLine;
using System.Numerics.Tensors;
using Engine.IO;
using Engine.Kernels.Common;
using Engine.Kernels.Lssl;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>The discretization options every LSSL command shares: --method and --alpha.</summary>
internal sealed class LsslMethodOptions
{
    public Option<string> Method { get; } = Opt.Choice("--method", null, ["bilinear", "zoh", "gbt"],
        "discretization (default bilinear, the generalized bilinear transform with alpha 0.5; gbt where --alpha is given)");
    // float64, as the discretization computes: --alpha 0.3 is 0.3, not the float nearest it.
    public Option<double?> Alpha { get; } = Opt.OptionalDouble("--alpha", "the generalized bilinear transform's alpha in [0, 1] (gbt; given alone it selects gbt; default 0.5)");

    public IEnumerable<Option> All => [Method, Alpha];

    /// <summary>The discretization as the options name it: bilinear (gbt with alpha 0.5), zoh, or gbt(alpha=0.3) as --alpha gave it.</summary>
    public static string Describe(LsslDiscretization discretization) => discretization switch
    {
        { Method: LsslMethod.Zoh } => "zoh",
        { Alpha: 0.5 } => "bilinear",
        var gbt => FormattableString.Invariant($"gbt(alpha={gbt.Alpha})"),
    };

    public LsslDiscretization Discretization(ParseResult args)
    {
        double? alpha = args.GetValue(Alpha);
        string method = args.GetValue(Method) ?? (alpha is null ? "bilinear" : "gbt");
        if (alpha is not null && method != "gbt") throw new UsageException($"--alpha goes with --method gbt, not {method}");
        return method switch
        {
            "zoh" => LsslDiscretization.ZeroOrderHold,
            "gbt" when alpha is >= 0 and <= 1 => LsslDiscretization.Gbt(alpha.Value),
            "gbt" when alpha is not null => throw new UsageException($"--alpha must lie in [0, 1], got {alpha}"),
            _ => LsslDiscretization.Bilinear,
        };
    }
}

/// <summary>engine op lssl: the LSSL state-space scan on .npy files.</summary>
internal sealed class LsslOpCommand : EngineCommand
{
    private readonly Option<string> _u = Opt.Text("--u", "input [B,L,H] float32 or float16", "u.npy", required: true);
    private readonly Option<string> _a = Opt.Text("--A", "state matrix: [N,N] shared, [H,N,N] per channel or [H,N] diagonal", "A.npy", required: true);
    private readonly Option<string> _b = Opt.Text("--B", "input matrix [N] or [H,N]", "B.npy", required: true);
    private readonly Option<string> _c = Opt.Text("--C", "output matrix [H,N]", "C.npy", required: true);
    private readonly Option<string> _d = Opt.Text("--D", "skip [H]", "D.npy", required: true);
    private readonly Option<string> _dt = Opt.Text("--dt", "steps [H] > 0 (log steps with --log-dt)", "dt.npy", required: true);
    private readonly Option<bool> _logDt = Opt.Flag("--log-dt", "dt holds log steps");
    private readonly Option<string> _x0 = Opt.Text("--x0", "initial state [B,H,N] float32", "x0.npy");
    private readonly LsslMethodOptions _method = new();
    private readonly Option<LsslMode> _mode = Opt.Choice("--mode", LsslMode.Auto, "recurrent, chunked scan, convolution, or auto (the cost rule)");
    private readonly Option<LsslStateMatrix?> _aForm = Opt.OptionalChoice<LsslStateMatrix>("--a-form", "the form of A where its shape is ambiguous (H = N)");
    private readonly Option<int?> _chunk = Opt.OptionalOneOf("--chunk", LsslConfig.ChunkLengths, "the scan's chunk length (default: the smallest power of two >= N, within 16..256)");
    private readonly DeviceOptions _device = new();
    private readonly Option<string> _y = Opt.Text("--y", "the output [B,L,H] to write (u's type)", "y.npy", required: true);
    private readonly Option<string> _xt = Opt.Text("--xt", "the final state [B,H,N] float32 to write", "xt.npy");
    private readonly Option<bool> _json = Opt.Json();

    public LsslOpCommand() : base("lssl", "LSSL state-space scan (recurrent, chunked scan or FFT convolution)", """
        u [B,L,H] float32 or float16 (y has u's type); A [N,N] shared, [H,N,N] per channel or [H,N] diagonal
        (--a-form when H = N makes [N,N] ambiguous); B [N] or [H,N]; C [H,N]; D [H]; dt [H] > 0 (log dt with
        --log-dt); x0/xt [B,H,N] float32. Prints the mode that ran (what auto picked).
        """)
    {
        foreach (var option in (Option[])[_u, _a, _b, _c, _d, _dt, _logDt, _x0, .. _method.All, _mode, _aForm, _chunk, .. _device.All, _y, _xt, _json])
            Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        // The chunk length is the scan's (and auto's cost rule's): the recurrence and the convolution have none, and would ignore it.
        if (args.GetValue(_mode) is LsslMode.Recurrent or LsslMode.Conv && Opt.Given(args, _chunk))
            throw new UsageException($"{_chunk.Name} applies to --mode scan or auto: the {Opt.Kebab(args.GetValue(_mode))} mode has no chunks");
        var options = new LsslOptions
        {
            Discretization = _method.Discretization(args),
            StateMatrix = args.GetValue(_aForm),
            LogDt = args.GetValue(_logDt),
            ChunkLength = args.GetValue(_chunk),
        };
        var mode = args.GetValue(_mode);
        string yPath = args.GetValue(_y)!;
        string? statePath = args.GetValue(_xt);
        using var files = new OpFiles();
        var u = files.Open(args, _u);
        var x0 = files.Optional(args, _x0);
        Tensor<float> Parameter(Option<string> option) => files.Open(args, option).ToTensorFloat32();
        var a = Parameter(_a);
        var c = Parameter(_c);
        // A [N, N] with C [N, N] is both one shared matrix and the diagonals of H = N channels: the library asks for
        // LsslOptions.StateMatrix, which this command sets from --a-form.
        if (options.StateMatrix is null && a.Rank == 2 && a.Lengths[0] == a.Lengths[1] && c.Lengths.SequenceEqual(a.Lengths))
            throw new ArgumentException($"--A ({args.GetValue(_a)}): shape [{a.Lengths[0]}, {a.Lengths[1]}] is both [N, N] (shared) and [H, N] (diagonal) " +
                $"as H = N = {a.Lengths[0]}: give --a-form {Opt.Kebab(LsslStateMatrix.DenseShared)} or --a-form {Opt.Kebab(LsslStateMatrix.Diagonal)}");
        using var layer = files.Named(() => new LsslLayer(a, Parameter(_b), c, Parameter(_d), Parameter(_dt), options));
        files.Claim("y", yPath);
        if (statePath is not null) files.Claim("xt", statePath);
        using var device = _device.Create(args);
        if (u.Shape.Length != 3) throw new ArgumentException($"--u ({args.GetValue(_u)}): expected rank 3 (B, L, H), got shape [{string.Join(", ", u.Shape)}]");
        var finalState = statePath is null ? null : Tensor.CreateFromShapeUninitialized<float>(layer.StateShape((int)u.Shape[0]));
        var ran = u.Type == NpyType.Float16 ? Forward<Half>() : Forward<float>();
        if (finalState is not null) files.Write("xt", statePath!, finalState);
        // The chunk length Q is the scan's alone: the recurrence and the convolution have no chunks.
        string chunk = ran == LsslMode.Scan ? $", Q = {layer.ChunkLength}" : "";
        files.Report(context, args.GetValue(_json), Name, device.Description,
            new Dictionary<string, object> { ["mode"] = $"{Opt.Kebab(ran)} ({LsslMethodOptions.Describe(layer.Discretization)}{chunk})" });
        return 0;

        LsslMode Forward<T>() where T : unmanaged
        {
            var y = Tensor.CreateFromShapeUninitialized<T>(u.Shape);
            LsslMode ran = default;
            files.Time(() => ran = layer.Forward(device, u.AsTensorSpan<T>(), y.AsTensorSpan(),
                x0 is null ? default : x0.AsTensorSpan<float>(), finalState is null ? default : finalState.AsTensorSpan(), mode));
            files.Write("y", yPath, y);
            return ran;
        }
    }
}

/// <summary>engine lssl-init: writes an LSSL parameter set (HiPPO or S4D-real, log-uniform Δ) as .npy files.</summary>
internal sealed class LsslInitCommand : EngineCommand
{
    private readonly Option<int> _n = Opt.Int("--N", 64, "state size", min: 1);
    private readonly Option<int> _h = Opt.Int("--H", 8, "channels", min: 1);
    private readonly Option<LsslInitKind> _kind = Opt.Choice("--kind", LsslInitKind.Legs, "HiPPO-LegS, HiPPO-LegT, or S4D-real diagonal");
    private readonly Option<int> _seed = Opt.Int("--seed", 0, "random seed of C, D and dt");
    private readonly Option<double> _dtMin = Opt.Double("--dt-min", 1e-3, "smallest step (> 0, at least float32's smallest normal 1.1754944E-38)");
    private readonly Option<double> _dtMax = Opt.Double("--dt-max", 1e-1, "largest step (at most float32's largest 3.4028235E+38)");
    private readonly Option<string> _outDir = Opt.Text("--out-dir", "the folder to write A, B, C, D, dt .npy into", "DIR", required: true);

    public LsslInitCommand() : base("lssl-init", "write LSSL parameters A, B, C, D, dt (HiPPO-LegS/LegT or diagonal) as .npy", """
        writes DIR/A.npy ([N,N]; [H,N] for diagonal), B.npy ([N]; [H,N]), C.npy [H,N] ~ N(0, 1/N), D.npy [H] ~ N(0, 1),
        dt.npy [H] log-uniform in [dt-min, dt-max]; float32, the same files for the same seed.
        """)
    {
        foreach (var option in new Option[] { _n, _h, _kind, _seed, _dtMin, _dtMax, _outDir }) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        int n = args.GetValue(_n), h = args.GetValue(_h), seed = args.GetValue(_seed);
        var kind = args.GetValue(_kind);
        double dtMin = args.GetValue(_dtMin), dtMax = args.GetValue(_dtMax);
        if (!(dtMin > 0) || dtMax < dtMin) throw new UsageException($"--dt-min must be > 0 and <= --dt-max, got {dtMin} and {dtMax}");
        // dt is written as float32: a bound past its range would write steps of 0 or infinity, which `engine op lssl` refuses.
        if (dtMin < Lssl.MinStep || dtMax > Lssl.MaxStep)
            throw new UsageException($"--dt-min and --dt-max must lie in [{Lssl.MinStep}, {Lssl.MaxStep}] (dt is written as float32), got {dtMin} and {dtMax}");
        string dir = args.GetValue(_outDir)!;
        LsslSizes.RequireParameters(h, n, kind);
        var p = Lssl.Parameters(kind, h, n, seed, dtMin, dtMax);
        OutputFolder.Create(dir, "--out-dir");
        foreach (var (name, tensor) in new[] { ("A", p.A), ("B", p.B), ("C", p.C), ("D", p.D), ("dt", p.Dt) })
            Npy.Write(Path.Combine(dir, name + ".npy"), tensor.AsReadOnlyTensorSpan());
        context.Out.WriteLine($"wrote A, B, C, D, dt ({Opt.Kebab(kind)}, H = {h}, N = {n}, seed {seed}) to {dir}");
        return 0;
    }
}

/// <summary>
/// What an LSSL parameter set and the layer built from it allocate, refused by --H and --N before anything is made: a
/// size past one array would overflow or crash the build, a layer past the machine's memory would swap it to a halt.
/// </summary>
internal static class LsslSizes
{
    /// <summary>A [N, N] (HiPPO) or [H, N] (diagonal), B and C [H, N].</summary>
    public static void RequireParameters(int h, int n, LsslInitKind kind)
    {
        if (kind == LsslInitKind.Diagonal) ArraySize.Require($"--H {h} --N {n}: A [H, N]", h, n);
        else ArraySize.Require($"--N {n}: A [N, N]", n, n);
        ArraySize.Require($"--H {h} --N {n}: C [H, N]", h, n);
    }

    /// <summary>The parameters and the layer's tables: per channel Ā − I and Ā^Q − I [N, N] (HiPPO), the scan's output weights [N + Q, Q] and state columns [Q, N].</summary>
    public static void RequireLayer(int h, int n, LsslInitKind kind)
    {
        RequireParameters(h, n, kind);
        int np = HeadLayout.RoundUp16(n), q = LsslConfig.DefaultChunkLength(n);
        bool dense = kind != LsslInitKind.Diagonal;
        if (dense) ArraySize.Require($"--H {h} --N {n}: the discretized A of every channel [H, {np}, {np}]", h, np, np);
        ArraySize.Require($"--H {h} --N {n}: the scan's output weights [H, {np + q}, {q}]", h, np + q, q);
        ArraySize.Require($"--H {h} --N {n}: the scan's state columns [H, {q}, {np}]", h, q, np);
        // Ā − I in float64 and float32, Ā^Q − I in float32 (HiPPO), the output weights and the state columns in float32.
        long perChannel = (dense ? (long)n * n * 8 + 2L * np * np * 4 : 0) + ((long)(np + q) * q + (long)q * np) * 4;
        ArraySize.RequireMemory($"--H {h} --N {n}: the layer's tables", (double)perChannel * h);
    }
}

/// <summary>engine bench lssl: times the LSSL modes on random inputs.</summary>
internal sealed class LsslBenchCommand : EngineCommand
{
    private readonly BenchOptions _bench = new(tokens: 4096, repeats: 5);
    private readonly Option<int> _b = Opt.Int("--B", 1, "batch", min: 1);
    private readonly Option<int> _h = Opt.Int("--H", 256, "channels", min: 1);
    private readonly Option<int> _n = Opt.Int("--N", 64, "state size", min: 1);
    private readonly Option<LsslInitKind> _kind = Opt.Choice("--kind", LsslInitKind.Legs, "HiPPO-LegS, HiPPO-LegT, or S4D-real diagonal");
    private readonly Option<string> _mode = Opt.Choice("--mode", "auto", ["recurrent", "scan", "conv", "auto", "all"], "the mode to time, or all three");

    public LsslBenchCommand() : base("lssl", "time the LSSL state-space scan (recurrent, scan, conv)", """
        T is the sequence length L; the shape prints as B T H K V with K = N (state size) and V = 1 (one input per channel).
        model flops per channel: recurrent 2L(N²+2N) (diagonal 6LN); scan 2L((Q+1)/2 + 2N + N²/Q) (diagonal N/Q) over
        the whole chunks, the recurrence's count for the L mod Q steps after them;
        conv 5n·log2(n) + 8n with n = the FFT size (the GPU's conv mode is a direct O(L²) convolution), and the scan's
        state pass for the final state, which the bench writes.
        """)
    {
        foreach (var option in _bench.All.Concat([_b, _h, _n, _kind, _mode])) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        var lengths = args.GetValue(_bench.T)!;
        int b = args.GetValue(_b), h = args.GetValue(_h), n = args.GetValue(_n);
        var kind = args.GetValue(_kind);
        LsslSizes.RequireLayer(h, n, kind);
        // Before anything is timed: the sweep holds the workload of every L until it ends.
        LsslWorkload.RequireSizes(b, lengths, h, n);
        string which = args.GetValue(_mode)!;
        LsslMode[] modes = which == "all" ? [LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv] : [Enum.Parse<LsslMode>(which, ignoreCase: true)];
        var timing = _bench.Timing(args);
        bool json = args.GetValue(_bench.Json);
        string? chart = BenchChart.Target(args.GetValue(_bench.Plot));
        using var device = _bench.Device.Create(args);
        var results = BenchReport.Sweep(context, "lssl", device, new BenchShape(b, 0, h, n, 1), lengths, timing,
            l => new LsslWorkload(b, l, h, n, kind),
            // The reference runs the recurrence whatever mode is asked: one row per mode that runs.
            work => modes.Select(mode => (Asked: mode, Ran: work.Run(device, mode))).DistinctBy(c => c.Ran).Select(c =>
            {
                string variant = $"{Opt.Kebab(kind)} {Opt.Kebab(c.Ran)}" + (c.Asked == LsslMode.Auto ? " (auto)" : "");
                return new BenchCase(variant, work.ModelFlops(c.Ran), () => work.Run(device, c.Asked));
            }));
        BenchReport.Report(context, results, device, timing, json, chart);
        return 0;
    }
}

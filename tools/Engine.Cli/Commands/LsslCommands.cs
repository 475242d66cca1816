using System.Globalization;
using System.Numerics.Tensors;
using Engine.IO;
using Engine.Kernels.Lssl;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>The discretization options every LSSL command shares.</summary>
internal static class LsslArgs
{
    public const string MethodUsage = "[--method bilinear|zoh|gbt [--alpha 0.5]]";

    public static LsslDiscretization Method(CommandLine args)
    {
        float? alpha = args.Float("alpha");
        string method = args.Value("method") ?? (alpha is null ? "bilinear" : "gbt");
        if (alpha is not null && method != "gbt") throw new UsageException($"--alpha goes with --method gbt, not {method}");
        return method switch
        {
            "bilinear" => LsslDiscretization.Bilinear,
            "zoh" => LsslDiscretization.ZeroOrderHold,
            "gbt" when alpha is >= 0f and <= 1f => LsslDiscretization.Gbt(alpha.Value),
            "gbt" when alpha is null => LsslDiscretization.Bilinear,
            "gbt" => throw new UsageException($"--alpha must lie in [0, 1], got {alpha}"),
            _ => throw new UsageException($"--method must be bilinear, zoh or gbt, got '{method}'"),
        };
    }

    public static LsslMode Mode(CommandLine args) => args.Choice("mode", LsslMode.Auto);

    /// <summary>A float64 option (the Δ range is used in float64, and 1e-3 is not a float).</summary>
    public static double Double(CommandLine args, string name, double fallback)
    {
        string? text = args.Value(name);
        if (text is null) return fallback;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value))
            throw new UsageException($"--{name} must be a finite number, got '{text}'");
        return value;
    }
}

/// <summary>engine op lssl: the LSSL state-space scan on .npy files.</summary>
internal sealed class LsslOpCommand : ICommand
{
    public string Name => "lssl";
    public string Summary => "LSSL state-space scan (recurrent, chunked scan or FFT convolution)";
    public IReadOnlyCollection<string> Options { get; } =
        ["u", "A", "B", "C", "D", "dt", "log-dt", "a-form", "x0", "method", "alpha", "mode", "chunk", "backend", "threads", "y", "xt", "json"];
    public string Usage => $"""
        engine op lssl --u u.npy --A A.npy --B B.npy --C C.npy --D D.npy --dt dt.npy [--log-dt] [--x0 x0.npy]
                       {LsslArgs.MethodUsage} [--mode recurrent|scan|conv|auto]
                       [--a-form dense-shared|dense-per-channel|diagonal] [--chunk 16..256]
                       {OpIo.BackendUsage} --y y.npy [--xt xt.npy] [--json]
          u [B,L,H] float32 or float16 (y has u's type); A [N,N] shared, [H,N,N] per channel or [H,N] diagonal
          (--a-form when H = N makes [N,N] ambiguous); B [N] or [H,N]; C [H,N]; D [H]; dt [H] > 0 (log dt with
          --log-dt); x0/xt [B,H,N] float32. Prints the mode that ran (what auto picked).
        """;

    public int Run(CommandLine args, CliContext context)
    {
        using var files = new OpFiles(args);
        var u = files.Required("u");
        var options = new LsslOptions
        {
            Discretization = LsslArgs.Method(args),
            StateMatrix = args.Has("a-form") ? args.Choice("a-form", LsslStateMatrix.DenseShared) : null,
            LogDt = args.Flag("log-dt"),
            ChunkLength = args.Has("chunk") ? args.Int("chunk", 0) : null,
        };
        var mode = LsslArgs.Mode(args);
        string yPath = args.Require("y");
        string? statePath = args.Value("xt");
        var x0 = files.Optional("x0");
        using var layer = new LsslLayer(files.Required("A").ToTensorFloat32(), files.Required("B").ToTensorFloat32(),
            files.Required("C").ToTensorFloat32(), files.Required("D").ToTensorFloat32(), files.Required("dt").ToTensorFloat32(), options);
        using var device = OpIo.Device(args);
        if (u.Shape.Length != 3) throw new ArgumentException($"u: expected rank 3 (B, L, H), got shape [{string.Join(", ", u.Shape)}]", "u");
        var finalState = statePath is null ? null : Tensor.CreateFromShapeUninitialized<float>(layer.StateShape((int)u.Shape[0]));
        var ran = u.Type == NpyType.Float16 ? Forward<Half>() : Forward<float>();
        if (finalState is not null) files.Write("xt", statePath!, finalState);
        files.Report(context, Name, device.Description,
            new Dictionary<string, string> { ["mode"] = $"{CommandLine.Kebab(ran.ToString())} ({layer.Discretization}, Q = {layer.ChunkLength})" });
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
internal sealed class LsslInitCommand : ICommand
{
    public string Name => "lssl-init";
    public string Summary => "write LSSL parameters A, B, C, D, dt (HiPPO-LegS/LegT or diagonal) as .npy";
    public IReadOnlyCollection<string> Options { get; } = ["N", "H", "kind", "seed", "dt-min", "dt-max", "out-dir"];
    public string Usage => """
        engine lssl-init [--N 64] [--H 8] [--kind legs|legt|diagonal] [--seed 0] [--dt-min 0.001] [--dt-max 0.1] --out-dir DIR
          writes DIR/A.npy ([N,N]; [H,N] for diagonal), B.npy ([N]; [H,N]), C.npy [H,N] ~ N(0, 1/N), D.npy [H] ~ N(0, 1),
          dt.npy [H] log-uniform in [dt-min, dt-max]; float32, the same files for the same seed.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        int n = args.Int("N", 64, min: 1), h = args.Int("H", 8, min: 1), seed = args.Int("seed", 0);
        var kind = args.Choice("kind", LsslInitKind.Legs);
        double dtMin = LsslArgs.Double(args, "dt-min", 1e-3), dtMax = LsslArgs.Double(args, "dt-max", 1e-1);
        if (!(dtMin > 0) || dtMax < dtMin) throw new UsageException($"--dt-min must be > 0 and <= --dt-max, got {dtMin} and {dtMax}");
        string dir = args.Require("out-dir");
        var p = Lssl.Parameters(kind, h, n, seed, dtMin, dtMax);
        Directory.CreateDirectory(dir);
        foreach (var (name, tensor) in new[] { ("A", p.A), ("B", p.B), ("C", p.C), ("D", p.D), ("dt", p.Dt) })
            Npy.Write(Path.Combine(dir, name + ".npy"), tensor.AsReadOnlyTensorSpan());
        context.Out.WriteLine($"wrote A, B, C, D, dt ({CommandLine.Kebab(kind.ToString())}, H = {h}, N = {n}, seed {seed}) to {dir}");
        return 0;
    }
}

/// <summary>engine bench lssl: times the LSSL modes on random inputs.</summary>
internal sealed class LsslBenchCommand : ICommand
{
    public string Name => "lssl";
    public string Summary => "time the LSSL state-space scan (recurrent, scan, conv)";
    public IReadOnlyCollection<string> Options { get; } = ["B", "T", "H", "N", "kind", "mode", "repeats", "best-of", "backend", "threads", "json", "plot"];
    public string Usage => $"""
        engine bench lssl [--B 1] [--T 4096[,...]] [--H 256] [--N 64] [--kind legs|legt|diagonal]
                          [--mode recurrent|scan|conv|auto|all] {BenchTiming.Usage} {OpIo.BackendUsage} [--json] {BenchChart.Usage}
          T is the sequence length L; the shape prints as B T H K V with K = N (state size) and V = 1 (one input per channel).
          model flops per channel: recurrent 2L(N²+N) (diagonal 6LN); scan 2L((Q+1)/2 + 2N + N²/Q) (diagonal N/Q);
          conv 5n·log2(n) + 8n with n = the FFT size (the GPU's conv mode is a direct O(L²) convolution).
        """;

    public int Run(CommandLine args, CliContext context)
    {
        var lengths = BenchShape.TokenList(args, 4096);
        int b = args.Int("B", 1, min: 1), h = args.Int("H", 256, min: 1), n = args.Int("N", 64, min: 1);
        var kind = args.Choice("kind", LsslInitKind.Legs);
        LsslMode[] modes = args.Value("mode") is "all" ? [LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv] : [LsslArgs.Mode(args)];
        var timing = BenchTiming.Parse(args, 5);
        bool json = args.Flag("json");
        string? chart = BenchChart.Target(args);
        using var device = OpIo.Device(args);
        var results = BenchReport.Sweep("lssl", device, new BenchShape(b, 0, h, n, 1), lengths, timing,
            l => new LsslWorkload(b, l, h, n, kind),
            work => modes.Select(mode =>
            {
                var ran = work.Run(device, mode);
                string variant = $"{CommandLine.Kebab(kind.ToString())} {CommandLine.Kebab(ran.ToString())}" + (mode == LsslMode.Auto ? " (auto)" : "");
                return (variant, work.ModelFlops(ran), (Action)(() => work.Run(device, mode)));
            }));
        BenchReport.Report(context, results, device, timing, json, chart);
        return 0;
    }
}

using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Engine.IO;
using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>What the model commands share: the model argument, the hand-over backend and threads, inputs from .npy files.</summary>
internal sealed class ModelOptions
{
    public Argument<string> Model { get; } = Opt.PathArgument("model", "model.onnx", "the model file (.onnx)");
    public Option<HandoverBackend> Backend { get; } = Opt.Choice("--backend", HandoverBackend.Cpu, "the engine's kernels for the hot nodes: cpu or gpu; none: ONNX Runtime alone");
    public Option<int?> Threads { get; } = Opt.Threads();
    public Option<string[]> Input { get; } = Opt.Repeated("--input", "an input from a .npy file, as the element type the model declares (repeat per input)", "NAME=FILE.npy");
    public Option<bool> Json { get; } = Opt.Json();

    public KernelHost Host(ParseResult args) => new(new KernelHostOptions { IntraOpThreads = args.GetValue(Threads) });

    public OnnxModel Load(ParseResult args) => OnnxModel.Load(args.GetValue(Model)!);

    /// <summary>
    /// --input NAME=FILE.npy, each as the element type the model declares: the file's mapped data where it holds
    /// that type (valid until <paramref name="files"/> is disposed), else converted.
    /// </summary>
    public Dictionary<string, TensorData> Inputs(ParseResult args, OnnxModel model, OpFiles files)
    {
        var declared = model.Inputs.ToDictionary(i => i.Name);
        var inputs = new Dictionary<string, TensorData>();
        foreach (var (name, path) in ModelIo.Pairs(args, Input))
        {
            if (!declared.TryGetValue(name, out var info))
                throw new ArgumentException($"--input {name}: the model has no input '{name}' (inputs: {string.Join(", ", declared.Keys)})");
            inputs[name] = ModelInputs.FromNpy(files.Open(path, $"{Input.Name} {name}"), info.ElementType, name);
        }
        return inputs;
    }
}

/// <summary>How the model commands read NAME=VALUE pairs and report model errors.</summary>
internal static class ModelIo
{
    /// <summary>The NAME=VALUE pairs of a repeated option, each refused as the help spells the option (NAME=FILE.npy, NAME=VALUE).</summary>
    public static IEnumerable<(string Name, string Value)> Pairs(ParseResult args, Option<string[]> option)
    {
        var seen = new HashSet<string>();
        foreach (var text in args.GetValue(option)!)
        {
            int eq = text.IndexOf('=');
            if (eq <= 0 || eq == text.Length - 1) throw new UsageException($"{option.Name} takes {option.HelpName}, got '{text}'");
            if (!seen.Add(text[..eq])) throw new UsageException($"{option.Name} {text[..eq]} is given more than once");
            yield return (text[..eq], text[(eq + 1)..]);
        }
    }

    /// <summary>An element type as `op` and `run` spell it (NumPy's names): float32, float16, bfloat16, int64...</summary>
    public static string TypeName(TensorElementType type) => type switch
    {
        TensorElementType.Float => "float32",
        TensorElementType.Double => "float64",
        _ => type.ToString().ToLowerInvariant(),
    };

    public static string Shape(IEnumerable<long> dims) => "[" + string.Join(", ", dims) + "]";
}

/// <summary>engine run: runs a model with the hot nodes on the engine's kernels and writes every output as .npy.</summary>
internal sealed class RunModelCommand : EngineCommand
{
    private readonly ModelOptions _model = new();
    private readonly Option<string> _outputDir = Opt.Text("--output-dir", "the folder to write each output into as NAME.npy", "DIR", required: true);

    public RunModelCommand() : base("run", "run an ONNX model, hot nodes on the engine (outputs as .npy)", """
        Runs the model in ONNX Runtime with LinearAttention (and the engine's own ops) on the engine's kernels;
        --backend none runs ONNX Runtime alone. Writes each output as DIR/NAME.npy.
        An --input file holds the element type the model declares: float32, float16, float64, int8, int16, int32, int64,
        uint8, uint16, uint32, uint64 or bool; besides, any float file converts to a float input (bfloat16 included) and
        int32 widens to int64. bfloat16 outputs, which .npy has no type for, are written as float32.
        """)
    {
        Add(_model.Model);
        foreach (var option in new Option[] { _model.Input, _outputDir, _model.Backend, _model.Threads, _model.Json }) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        var model = _model.Load(args);
        using var files = new OpFiles();
        var inputs = _model.Inputs(args, model, files);
        string dir = args.GetValue(_outputDir)!;
        using var host = _model.Host(args);
        var backend = args.GetValue(_model.Backend);
        using var session = ModelSession.Open(model, new ModelSessionOptions { Backend = backend, Host = host });
        var missing = model.Inputs.Select(i => i.Name).Where(n => !inputs.ContainsKey(n)).ToArray();
        if (missing.Length > 0) throw new ArgumentException($"the model needs inputs {string.Join(", ", missing)}: give each as --input NAME=FILE.npy");
        // Before the run, so a mistaken output folder costs no run: an output would replace an input file or another output's.
        var outputPaths = session.OutputNames.ToDictionary(name => name, name => Path.Combine(dir, FileName(name) + ".npy"));
        foreach (var (name, path) in outputPaths) files.Claim(name, path);
        OutputFolder.Create(dir, "--output-dir");
        // Each output is written from ORT's own memory as the run hands it over.
        context.Progress.Run(context.Out, progress =>
        {
            var step = progress.Add($"run {Path.GetFileName(args.GetValue(_model.Model))}");
            files.Time(() => session.Run(inputs, (name, type, shape, bytes) =>
            {
                var values = ModelInputs.NpyBytes(type, bytes, name, out var npyType);
                files.Write(name, outputPaths[name], npyType, shape, values);
            }, check: (name, type, _, bytes) => RequireFinite(name, type, bytes)));
            step.Finish();
        });
        // Report puts the device in parentheses: ONNX Runtime alone is named without its own.
        files.Report(context, args.GetValue(_model.Json), "run", backend == HandoverBackend.None ? "ONNX Runtime only" : host.Describe(backend),
            new Dictionary<string, object> { ["engine kernel nodes"] = session.Handover.EngineKernelNodes });
        return 0;
    }

    /// <summary>
    /// A float output holds no NaN or infinity: ONNX Runtime's own nodes pass on what they make of inputs they overflow on
    /// (the engine's refuse them), and a file of NaNs is no result. Every output is checked before any is written.
    /// </summary>
    private static void RequireFinite(string name, TensorElementType type, ReadOnlySpan<byte> bytes)
    {
        (long count, long first) = type switch
        {
            TensorElementType.Float => NonFinite(MemoryMarshal.Cast<byte, float>(bytes), float.IsFinite),
            TensorElementType.Float16 => NonFinite(MemoryMarshal.Cast<byte, Half>(bytes), Half.IsFinite),
            TensorElementType.Double => NonFinite(MemoryMarshal.Cast<byte, double>(bytes), double.IsFinite),
            // A bfloat16 is NaN or infinite where its exponent bits are all ones, as a float32's.
            TensorElementType.BFloat16 => NonFinite(MemoryMarshal.Cast<byte, ushort>(bytes), bits => (bits & 0x7F80) != 0x7F80),
            _ => (0, -1),
        };
        if (count > 0)
            throw new InvalidDataException($"output '{name}': {count} of its values are NaN or infinite (the first at flat index {first}): the model overflowed on these inputs; it is not written");
    }

    private static (long Count, long First) NonFinite<T>(ReadOnlySpan<T> values, Func<T, bool> isFinite)
    {
        long count = 0, first = -1;
        for (int i = 0; i < values.Length; i++)
            if (!isFinite(values[i]) && count++ == 0) first = i;
        return (count, first);
    }

    /// <summary>An output name as a file name: characters a path cannot hold become '_'.</summary>
    private static string FileName(string name)
    {
        var invalid = Path.GetInvalidFileNameChars();
        return string.Concat(name.Select(c => invalid.Contains(c) || c == '\\' ? '_' : c));
    }
}

/// <summary>engine inspect: a model's inputs, outputs, opsets and the nodes the engine takes over.</summary>
internal sealed class InspectModelCommand : EngineCommand
{
    private readonly ModelOptions _model = new();

    public InspectModelCommand() : base("inspect", "list a model's inputs, outputs and the nodes the engine takes over")
    {
        Add(_model.Model);
        Add(_model.Json);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        string path = args.GetValue(_model.Model)!;
        var model = _model.Load(args);
        var plan = HandoverRewriter.Rewrite(model);
        string Domain(string domain) => domain.Length == 0 ? "ai.onnx" : domain;
        var opTypes = model.NodeOpTypes.GroupBy(t => t).OrderByDescending(g => g.Count()).ToArray();
        var engine = plan.EngineNodes.ToArray();
        var w = context.Out;
        if (args.GetValue(_model.Json))
        {
            // Fixed dims as numbers, symbolic ones as their names.
            static object Value(ModelValueInfo v) => new Dictionary<string, object?>
            {
                ["name"] = v.Name, ["dtype"] = ModelIo.TypeName(v.ElementType),
                ["shape"] = v.Dims?.Select(d => long.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? (object)n : d).ToArray(),
            };
            static object Node(HandoverNode n) => new Dictionary<string, object>
            {
                ["name"] = n.NodeName, ["op_type"] = n.OpType, ["from_domain"] = n.FromDomain, ["to_domain"] = n.ToDomain, ["detail"] = n.Detail,
            };
            w.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["model"] = path, ["ir_version"] = model.IrVersion, ["producer"] = model.ProducerName, ["producer_version"] = model.ProducerVersion,
                ["opsets"] = model.Opsets.Select(o => new Dictionary<string, object> { ["domain"] = Domain(o.Domain), ["version"] = o.Version }).ToArray(),
                ["inputs"] = model.Inputs.Select(Value).ToArray(), ["outputs"] = model.Outputs.Select(Value).ToArray(),
                ["node_counts"] = opTypes.ToDictionary(g => g.Key, g => g.Count()),
                ["engine_nodes"] = engine.Select(Node).ToArray(), ["engine_kernel_nodes"] = plan.EngineKernelNodes, ["ort_nodes"] = plan.Nodes.Where(n => !n.ToEngine).Select(Node).ToArray(),
                ["notes"] = plan.Notes,
            }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        string producer = $"{model.ProducerName} {model.ProducerVersion}".Trim();
        w.WriteLine($"model: {path} (IR {model.IrVersion}{(producer.Length > 0 ? ", from " + producer : "")})");
        w.WriteLine($"opsets: {string.Join(", ", model.Opsets.Select(o => $"{Domain(o.Domain)} {o.Version}"))}");
        w.WriteLine("inputs:");
        foreach (var i in model.Inputs) w.WriteLine($"  {i}");
        w.WriteLine("outputs:");
        foreach (var o in model.Outputs) w.WriteLine($"  {o}");
        w.WriteLine($"nodes: {model.NodeOpTypes.Count} ({string.Join(", ", opTypes.Select(g => $"{g.Key} ×{g.Count()}"))})");
        int kernels = plan.EngineKernelNodes;
        w.WriteLine($"the engine takes over {engine.Length} node{(engine.Length == 1 ? "" : "s")}" +
            (kernels == engine.Length ? ":" : $", run as {kernels} engine node{(kernels == 1 ? "" : "s")} once folded:"));
        foreach (var n in engine) w.WriteLine($"  {n}");
        foreach (var n in plan.Nodes.Where(n => !n.ToEngine)) w.WriteLine($"  (ONNX Runtime) {n}");
        foreach (var note in plan.Notes) w.WriteLine($"note: {note}");
        return 0;
    }
}

/// <summary>engine bench-model: times a model with and without the hand-over in one run.</summary>
internal sealed class BenchModelCommand : EngineCommand
{
    private readonly ModelOptions _model = new();
    private readonly Option<string[]> _dim = Opt.Repeated("--dim", "a symbolic dim of the random inputs (repeat per dim)", "NAME=VALUE");
    private readonly Option<string> _sample = Opt.Choice("--sample", null, [.. SampleNames, GatedDeltaNetSample, "all"], "time a sample model (instead of a model file) at each --T");
    private readonly Option<int[]> _t = Opt.TimedLengths("--T", 4096, "with --sample: sequence length, or a comma-separated list");
    private readonly Option<bool> _decode = Opt.Flag("--decode", "with --sample: also one token with past states (T=1)");
    private readonly Option<int> _repeats = Opt.Int("--repeats", 7, "runs of each session (the median is reported)", min: 1);
    private readonly Option<bool> _noSpinning = Opt.Flag("--no-spinning", "turn ORT's intra-op spinning off in both sessions and alternate single runs");
    private readonly Option<string> _plot = Opt.Text("--plot", "with --sample: draw the runs against T into an .svg or .png file", "FILE.svg|FILE.png");

    public BenchModelCommand() : base("bench-model", "time an ONNX model with and without the hand-over, side by side", """
        Times the model with the engine's kernels (--backend, default cpu) and with ONNX Runtime alone, runs
        interleaved (outputs written into tensors kept across runs), median of --repeats; then, from ORT's profile, the
        time spent in the engine's nodes and, with ORT alone, in every node they replace (the nodes taken over and those
        folded into them: Transposes, Splits, normalizations, gate chains). Inputs not given as files are random, their
        symbolic dims from --dim (names with 'state' zeros, but 'hidden_state' N(0,1), 'decay' log gates, 'beta' in (0,1),
        other floats N(0,1); integers zeros and bools false, 'mask' ones and true).
        --sample times the LinearAttention block (B=1, Hq=Hkv=8, dk=dv=128, hidden 256) and the node alone, or the
        Gated DeltaNet layer as ONNX Runtime GenAI's builder writes it (hidden 2048, 16 query/key and 32 value heads of
        128, K=4; gdn-layer-fused: its fused-gate export; gdn-layer-int4: its CPU int4 export, the projections MatMulNBits),
        at each --T, and with --decode one token with past states.
        gated-delta-net times a com.microsoft GatedDeltaNet node (B=1, Hq=16, Hv=32, dk=dv=128, and Hq=4, Hv=8,
        dk=dv=64, update_rule gated_delta; and Hq=16, Hv=32 with update_rule gated; log-gate decay, unit keys) against
        ORT's GatedDeltaNet kernel, and the same math as a LinearAttention node ("as LA") against ORT's LinearAttention kernel.
        The last column is the share of the hand-over's run spent in ORT's MatMuls and MatMulNBits (its profile).
        Both sessions run with ORT's default options, whose intra-op threads spin between runs: the two take turns in
        blocks of eight runs, the first two of each block (where the other session's threads may still spin) left out.
        Runs of a few ms can still meet the other session's spinning threads: --no-spinning turns spinning off in both
        (session.intra_op.allow_spinning = 0) and alternates single runs.
        --plot (with --sample) draws, per model, the engine and ONNX Runtime alone against T: whole model and taken-over
        nodes (decode at T=1), with this machine's fp32 FMA peak measured after the runs.
        """)
    {
        _model.Model.Arity = ArgumentArity.ZeroOrOne;
        Add(_model.Model);
        foreach (var option in new Option[] { _model.Input, _dim, _sample, _t, _decode, _repeats, _model.Backend, _model.Threads, _noSpinning, _model.Json, _plot })
            Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        using var files = new OpFiles();
        int repeats = args.GetValue(_repeats);
        var backend = args.GetValue(_model.Backend);
        if (backend == HandoverBackend.None) throw new UsageException("--backend must be cpu or gpu (ONNX Runtime alone is always timed)");
        using var host = _model.Host(args);
        bool spinning = !args.GetValue(_noSpinning);
        string? sample = args.GetValue(_sample);
        string? chart = BenchChart.Target(args.GetValue(_plot));
        if (chart is not null && sample is null) throw new UsageException("--plot draws the --sample runs against T: give --sample");
        // Each timing is a job, so that the progress knows how many there are.
        var jobs = new List<(string Label, Func<ModelTiming> Time)>();
        if (sample is not null)
        {
            if (args.GetValue(_model.Model) is not null) throw new UsageException("give either a model file or --sample");
            foreach (var option in new Option[] { _model.Input, _dim })
                if (Opt.Given(args, option)) throw new UsageException($"{option.Name} goes with a model file: --sample makes its own inputs");
            bool decode = args.GetValue(_decode);
            // --decode adds T=1 unless --T has it; a length given twice is timed once.
            var lengths = (decode ? args.GetValue(_t)!.Append(1) : args.GetValue(_t)!).Distinct().ToArray();
            if (sample is GatedDeltaNetSample or "all")
            {
                // The same gated delta rule as ORT's GatedDeltaNet node and as its LinearAttention node: each timed with the
                // engine's kernels against ORT's own kernel of that node.
                foreach (var (label, hq, hv, d, rule) in GatedDeltaNetShapes)
                    foreach (int t in lengths)
                    {
                        string what = t == 1 ? "decode T=1" : $"T={t}";
                        var pair = new Lazy<IReadOnlyList<(OnnxModel Model, Dictionary<string, TensorData> Inputs)>>(() => SampleModels.GatedDeltaNetAndLinearAttention(hq, hv, d, d, t, rule));
                        jobs.Add(($"gdn {label} {what}", () => Time(pair.Value[0].Model, $"gdn {label}", what, t, pair.Value[0].Inputs, host, backend, repeats, spinning)));
                        jobs.Add(($"gdn {label} as LA {what}", () => Time(pair.Value[1].Model, $"gdn {label} as LA", what, t, pair.Value[1].Inputs, host, backend, repeats, spinning)));
                    }
            }
            foreach (var (label, model, batch, time) in sample == GatedDeltaNetSample ? [] : Samples(sample))
            {
                foreach (int t in lengths)
                {
                    string what = t == 1 ? "decode T=1" : $"T={t}";
                    jobs.Add(($"{label} {what}", () => Time(model, label, what, t, ModelInputs.Random(model, new Dictionary<string, long> { [batch] = 1, [time] = t }),
                        host, backend, repeats, spinning)));
                }
            }
        }
        else
        {
            if (args.GetValue(_model.Model) is null) throw new UsageException($"give {_model.Model.Description} or --sample");
            foreach (var option in new Option[] { _t, _decode })
                if (Opt.Given(args, option)) throw new UsageException($"{option.Name} goes with --sample: a model file's dims come from --dim");
            var model = _model.Load(args);
            var dims = ModelIo.Pairs(args, _dim).ToDictionary(p => p.Name, p => long.TryParse(p.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long v)
                ? v : throw new UsageException($"--dim {p.Name} must be an integer >= 0, got '{p.Value}'"));
            var symbolic = model.Inputs.SelectMany(i => i.Dims ?? []).Where(d => !long.TryParse(d, out _)).Distinct().ToArray();
            foreach (var name in dims.Keys.Where(name => !symbolic.Contains(name)))
                throw new ArgumentException($"--dim {name}: the model has no symbolic dim '{name}' " +
                    (symbolic.Length == 0 ? "(its inputs have none)" : $"(its symbolic dims: {string.Join(", ", symbolic)})"));
            var inputs = _model.Inputs(args, model, files);
            var randomDims = model.Inputs.Where(i => !inputs.ContainsKey(i.Name)).SelectMany(i => i.Dims ?? []).ToHashSet();
            foreach (var name in dims.Keys.Where(name => !randomDims.Contains(name)))
                throw new UsageException($"--dim {name}: only inputs given as files have it ({string.Join(", ", model.Inputs.Where(i => i.Dims?.Contains(name) == true).Select(i => i.Name))}), " +
                    "and a file's shape sets it: --dim sets the random inputs' dims");
            var unset = model.Inputs.Where(i => !inputs.ContainsKey(i.Name)).SelectMany(i => i.Dims ?? [])
                .Where(d => !long.TryParse(d, out _) && !dims.ContainsKey(d)).Distinct().ToArray();
            if (unset.Length > 0)
                throw new ArgumentException($"the random inputs have the symbolic dim{(unset.Length == 1 ? "" : "s")} {string.Join(", ", unset)}: " +
                    $"give {(unset.Length == 1 ? "its value" : "each value")} as {string.Join(" ", unset.Select(d => $"--dim {d}=VALUE"))}");
            var random = ModelInputs.Random(model, dims, except: inputs.Keys);
            foreach (var (name, tensor) in random) inputs[name] = tensor;
            string label = Path.GetFileName(args.GetValue(_model.Model)!);
            jobs.Add((label, () => Time(model, label, "", 0, inputs, host, backend, repeats, spinning)));
        }
        var rows = context.Progress.Run(context.Out, progress =>
        {
            var step = progress.Add($"bench-model: {jobs.Count} timings", jobs.Count);
            return jobs.Select(job =>
            {
                step.Describe($"bench-model: {job.Label}");
                var row = job.Time();
                step.Advance();
                return row;
            }).ToList();
        });
        bool json = args.GetValue(_model.Json);
        // The chart before the report: a chart that cannot be written is an error, and an error leaves stdout empty.
        if (chart is not null) Chart(chart, rows, host.Describe(backend), BenchReport.Peak(host.IntraOpThreads), spinning);
        Print(context.Out, rows, host.Describe(backend), spinning, json);
        if (chart is not null) BenchChart.Report(context, chart, json);
        return 0;
    }

    /// <summary>Per model, the engine (filled circles) and ONNX Runtime alone (open squares) against T: the whole model, and the taken-over nodes.</summary>
    private static void Chart(string path, IReadOnlyList<ModelTiming> rows, string device, double peakGFlops, bool spinning)
    {
        ChartSeries[] Lines(Func<ModelTiming, double> engine, Func<ModelTiming, double> ort) => rows.GroupBy(r => r.Model).SelectMany(g => new[]
        {
            new ChartSeries($"{g.Key}: engine", g.Select(r => ((double)r.Tokens, engine(r))).ToArray(), ColorKey: g.Key),
            new ChartSeries($"{g.Key}: ORT", g.Select(r => ((double)r.Tokens, ort(r))).ToArray(), OpenMarkers: true, ColorKey: g.Key),
        }).ToArray();
        string options = spinning ? "ORT's default options" : "intra-op spinning off";
        BenchChart.Save(path, BenchChart.Caption($"engine: {device}", peakGFlops),
        [
            BenchChart.Panel($"engine bench-model: whole model, median ms per run ({options})", "ms per run", Lines(r => r.EngineMs, r => r.OrtMs)),
            BenchChart.Panel("taken-over nodes: median ms per run (ORT's profile)", "ms per run", Lines(r => r.EngineNodeMs, r => r.OrtNodeMs)),
        ]);
    }

    private const string GatedDeltaNetSample = "gated-delta-net";

    /// <summary>GatedDeltaNet samples: Qwen3.5's layer (16 query/key heads, 32 value heads of 128) and a smaller one.</summary>
    private static readonly (string Label, int QHeads, int ValueHeads, int HeadDim, string Rule)[] GatedDeltaNetShapes =
        [("16/32x128", 16, 32, 128, "gated_delta"), ("4/8x64", 4, 8, 64, "gated_delta"), ("16/32x128 gated", 16, 32, 128, "gated")];

    /// <summary>Whole-model medians, and the medians of the time spent in the taken-over nodes (from ORT's profile).</summary>
    /// <param name="MatMulShare">the share of the hand-over's node time in ORT's MatMuls, from one profile; null where the profile timed no node.</param>
    /// <param name="Tokens">T of the run (1: one decode step; 0: a model file's own dims).</param>
    private sealed record ModelTiming(string Model, string Case, int Tokens, int EngineNodes, double EngineMs, double OrtMs, double EngineNodeMs, double OrtNodeMs,
        double? MatMulShare)
    {
        public double Speedup => OrtMs / EngineMs;

        /// <summary>Null where the engine takes no node (no node time to compare).</summary>
        public double? NodeSpeedup => EngineNodes > 0 && EngineNodeMs > 0 ? OrtNodeMs / EngineNodeMs : null;
    }

    private static ModelTiming Time(OnnxModel model, string label, string what, int tokens, Dictionary<string, TensorData> inputs,
        KernelHost host, HandoverBackend backend, int repeats, bool spinning)
    {
        double engineSeconds, ortSeconds;
        int engineNodes;
        IReadOnlySet<string> engineNames, replacedNames;
        using (var engine = ModelSession.Open(model, BenchOptions(backend, host, spinning)))
        using (var ort = ModelSession.Open(model, BenchOptions(HandoverBackend.None, host, spinning)))
        {
            // Outputs go to tensors held across runs (RunInto), as a decode loop keeps them: what is timed is the model.
            var engineOutputs = OutputTensors(engine.Run(inputs));
            var ortOutputs = OutputTensors(ort.Run(inputs));
            (engineSeconds, ortSeconds) = BenchTimer.MedianInterleaved(() => engine.RunInto(inputs, engineOutputs), () => ort.RunInto(inputs, ortOutputs), repeats,
                block: spinning ? 8 : 1);
            engineNodes = engine.Handover.EngineKernelNodes;
            engineNames = engine.Handover.EngineKernelNodeNames;
            replacedNames = engine.Handover.ReplacedNodeNames;
        }
        // The engine's nodes against every node of the model they replace, folded ones too (Transposes, Split, normalizations).
        var engineProfile = ProfileMilliseconds(model, inputs, BenchOptions(backend, host, spinning), repeats,
            n => engineNames.Contains(n.Name), n => MatMul.Contains(n.OpType), null);
        var ortProfile = ProfileMilliseconds(model, inputs, BenchOptions(HandoverBackend.None, host, spinning), repeats, n => replacedNames.Contains(n.Name));
        double? matMulShare = engineProfile[2] > 0 ? engineProfile[1] / engineProfile[2] : null;
        return new ModelTiming(label, what, tokens, engineNodes, engineSeconds * 1e3, ortSeconds * 1e3, engineProfile[0], ortProfile[0], matMulShare);
    }

    private static readonly IReadOnlySet<string> MatMul = new HashSet<string> { "MatMul", "MatMulNBits" };

    /// <summary>Tensors of the outputs' types and shapes, for runs that write into them.</summary>
    private static Dictionary<string, TensorData> OutputTensors(IReadOnlyDictionary<string, TensorData> outputs) =>
        outputs.ToDictionary(p => p.Key, p => TensorData.FromBytes(p.Value.ElementType, p.Value.Shape, p.Value.Bytes));

    /// <summary>ORT's default options (its intra-op threads spin), or spinning off.</summary>
    private static ModelSessionOptions BenchOptions(HandoverBackend backend, KernelHost host, bool spinning) =>
        new() { Backend = backend, Host = host, AllowSpinning = spinning ? null : false };

    /// <summary>
    /// Median time per run in each selection of nodes (null: every node), read from ORT's profile of one separate profiled
    /// session; 0 for a selection that picks no node of the model.
    /// </summary>
    private static double[] ProfileMilliseconds(OnnxModel model, Dictionary<string, TensorData> inputs, ModelSessionOptions options,
        int repeats, params Func<ProfiledNode, bool>?[] selections)
    {
        string prefix = Path.Combine(Path.GetTempPath(), $"engine-profile-{Environment.ProcessId}-{options.Backend}");
        string file;
        int warmup = 0;
        using (var session = ModelSession.Open(model, options with { ProfilePrefix = prefix }))
        {
            // Warm up as the timed runs do (until tiered compilation settles); those runs are left out of the median.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            do { session.Run(inputs); warmup++; } while (clock.Elapsed.TotalSeconds < 1.0 || warmup < 2);
            for (int i = 0; i < repeats; i++) session.Run(inputs);
            file = session.EndProfiling();
        }
        try
        {
            return selections.Select(selects =>
            {
                var runs = OrtProfile.MillisecondsPerRun(file, selects).Skip(warmup).ToArray();
                return runs.Length == 0 ? 0 : BenchTimer.MedianOf(runs);
            }).ToArray();
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>
    /// The models of the benchmark tables: each LinearAttention block (projections and activations in ORT around the node)
    /// and its node alone, dims B and T; the Gated DeltaNet layers, dims batch_size and sequence_length.
    /// </summary>
    private static IEnumerable<(string Label, OnnxModel Model, string Batch, string Time)> Samples(string which)
    {
        foreach (var (label, _, rule, decay) in Blocks.Where(s => which == "all" || s.Name == which))
        {
            var spec = BlockSpec(rule, decay);
            yield return ($"{label} block", SampleModels.LinearAttentionBlock(spec), "B", "T");
            yield return ($"{label} node", SampleModels.LinearAttentionNode(spec), "B", "T");
        }
        foreach (var layer in Layers.Where(l => which == "all" || l == which))
        {
            var spec = new GatedDeltaNetSpec { Hidden = 2048, QkHeads = 16, ValueHeads = 32, KeyDim = 128, ValueDim = 128, ConvKernel = 4, FusedGates = layer.EndsWith("fused"), Int4Weights = layer.EndsWith("int4") };
            yield return (layer, GatedDeltaNetLayer.Model(spec), "batch_size", "sequence_length");
        }
    }

    /// <summary>The LinearAttention block samples (the demo times them too): name on the command line, title, rule, decay form.</summary>
    internal static readonly (string Name, string Title, UpdateRule Rule, DecayForm Decay)[] Blocks =
    [
        ("linear", "linear", UpdateRule.Linear, DecayForm.PerHead),
        ("gated-per-key", "gated, per-key decay (GLA)", UpdateRule.Gated, DecayForm.PerKey),
        ("gated-per-head", "gated, per-head decay (RetNet)", UpdateRule.Gated, DecayForm.PerHead),
        ("delta", "delta (DeltaNet)", UpdateRule.Delta, DecayForm.PerHead),
        ("gated-delta-per-head", "gated_delta (Gated DeltaNet)", UpdateRule.GatedDelta, DecayForm.PerHead),
        ("gated-delta-per-key", "gated_delta, per-key decay", UpdateRule.GatedDelta, DecayForm.PerKey),
    ];

    /// <summary>A block sample's shape: B = 1, hidden 256, 8 heads of 128.</summary>

    internal static LinearAttentionBlockSpec BlockSpec(UpdateRule rule, DecayForm decay) =>
        new() { Hidden = 256, QHeads = 8, KvHeads = 8, KeyDim = 128, ValueDim = 128, Rule = rule, Decay = decay };

    private static readonly string[] Layers = ["gdn-layer", "gdn-layer-fused", "gdn-layer-int4"];

    private static readonly string[] SampleNames = [.. Blocks.Select(b => b.Name), .. Layers];

    private static void Print(TextWriter w, IReadOnlyList<ModelTiming> rows, string device, bool spinning, bool json)
    {
        if (json)
        {
            w.WriteLine(JsonSerializer.Serialize(rows.Select(r => new Dictionary<string, object?>
            {
                ["model"] = r.Model, ["case"] = r.Case, ["engine_kernel_nodes"] = r.EngineNodes, ["device"] = device, ["ort_spinning"] = spinning,
                ["engine_ms"] = r.EngineMs, ["ort_ms"] = r.OrtMs, ["speedup"] = r.Speedup,
                ["engine_node_ms"] = r.EngineNodeMs, ["ort_node_ms"] = r.OrtNodeMs, ["node_speedup"] = r.NodeSpeedup,
                ["engine_matmul_share"] = r.MatMulShare,
            }), new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        w.WriteLine($"engine: {device}; ONNX Runtime {OrtInfo.Version} alone for comparison (median, runs interleaved); " +
            (spinning ? "ORT's default options (intra-op threads spin)" : "intra-op spinning off"));
        w.WriteLine("whole model: median ms per run; nodes: median ms in the engine's nodes and, with ORT alone, in the nodes they replace (ORT's profile, separate runs)");
        w.WriteLine($"{"model",-28} {"case",-12} {"nodes",5} {"engine ms",10} {"ORT ms",10} {"speedup",8} {"node engine",12} {"node ORT",10} {"speedup",8} {"MatMul",7}");
        foreach (var r in rows)
            w.WriteLine($"{r.Model,-28} {r.Case,-12} {r.EngineNodes,5} {r.EngineMs,10:F3} {r.OrtMs,10:F3} {r.Speedup,7:F2}x {r.EngineNodeMs,12:F3} {r.OrtNodeMs,10:F3} " +
                $"{(r.NodeSpeedup is double node ? $"{node:F2}x" : "-"),8} {(r.MatMulShare is double share ? share.ToString("P0", CultureInfo.InvariantCulture) : "-"),6}");
    }
}

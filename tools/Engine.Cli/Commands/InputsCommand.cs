using System.CommandLine;
using System.Numerics.Tensors;
using System.Text.Json;
using Engine.IO;
using Engine.Kernels.Common;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine inputs: writes the random inputs `engine bench` times as .npy files, for `engine op`.</summary>
internal sealed class InputsCommand : EngineCommand
{
    private static readonly string[] Ops = ["gla", "delta", "gated-delta", "lightning"];

    private readonly Argument<string> _op = new("op")
    {
        HelpName = string.Join("|", Ops), Description = "the op: " + string.Join("|", Ops),
        CustomParser = r => Ops.Contains(r.Tokens[0].Value) ? r.Tokens[0].Value
            : Fail(r, $"unknown op '{r.Tokens[0].Value}': one of {string.Join(", ", Ops)}"),
    };
    private readonly Option<int> _b = Opt.Int("--B", 1, "batch", min: 1);
    private readonly Option<int> _t = Opt.Int("--T", 4096, "tokens", min: 0);
    private readonly Option<int> _h = Opt.Int("--H", 8, "heads", min: 1);
    private readonly Option<int> _k = Opt.Int("--K", 128, "key head dim", min: 1);
    private readonly Option<int> _v = Opt.Int("--V", 128, "value head dim", min: 1);
    private readonly Option<GateKind?> _gate = Opt.OptionalChoice("--gate", "gla: per-key (default), per-head or none; gated-delta: per-head (default) or per-key",
        GateKind.None, GateKind.PerHead, GateKind.PerKey);
    private readonly Option<int> _seed = Opt.Int("--seed", 0, "random seed");
    private readonly Option<string> _outDir = Opt.Text("--out-dir", "the folder to write the .npy files into", "DIR", required: true);
    private readonly Option<bool> _json = Opt.Json();

    public InputsCommand() : base("inputs", "write random attention inputs (q, k, v, g, beta) as .npy for engine op", """
        writes DIR/q.npy, k.npy [B,T,H,K], v.npy [B,T,H,V] and what the op takes besides: g ([B,T,H,K] per key,
        [B,T,H] per head; gla default per-key, gated-delta default per-head), beta [B,T,H] (delta rules); float32,
        the data `engine bench` times, the same files for the same seed.
        """)
    {
        _op.CompletionSources.Add(Ops);
        Add(_op);
        foreach (var option in new Option[] { _b, _t, _h, _k, _v, _gate, _seed, _outDir, _json }) Add(option);
    }

    private static string Fail(System.CommandLine.Parsing.ArgumentResult r, string message)
    {
        r.AddError(message);
        return "";
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        int b = args.GetValue(_b), t = args.GetValue(_t), h = args.GetValue(_h), k = args.GetValue(_k), v = args.GetValue(_v), seed = args.GetValue(_seed);
        var gate = args.GetValue(_gate);
        if (args.GetValue(_op) is "delta" or "gated-delta") DeltaRuleBenchCommand.RequireHeadDims(args, _k, _v);
        AttentionWorkload work = args.GetValue(_op) switch
        {
            "gla" => new GlaWorkload(b, t, h, k, v, Gate(gate ?? GateKind.PerKey, orNone: true), seed),
            "delta" when gate is null => new DeltaRuleWorkload(b, t, h, k, v, GateKind.None, seed),
            "delta" => throw new UsageException("DeltaNet takes no gate: use gated-delta"),
            "gated-delta" => new DeltaRuleWorkload(b, t, h, k, v, Gate(gate ?? GateKind.PerHead, orNone: false), seed),
            _ when gate is null => new LightningWorkload(b, t, h, k, v, seed),
            _ => throw new UsageException("Lightning attention's decay is its slopes: it takes no --gate"),
        };
        string dir = args.GetValue(_outDir)!;
        OutputFolder.Create(dir, "--out-dir");
        var written = new List<Dictionary<string, object>>();
        bool json = args.GetValue(_json);
        foreach (var (name, values, shape) in work.Inputs())
        {
            string path = Path.Combine(dir, name + ".npy");
            Npy.Write(path, new ReadOnlyTensorSpan<float>(values, shape));
            var dims = Array.ConvertAll(shape, d => (long)d);
            if (json) written.Add(OpIo.WroteJson(name, NpyType.Float32, dims, path));
            else context.Out.WriteLine(OpIo.Wrote(name, NpyType.Float32, dims, path));
        }
        if (json) context.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["op"] = args.GetValue(_op)!, ["outputs"] = written }));
        return 0;
    }

    /// <summary>--gate, per-key or per-head (or none where <paramref name="orNone"/> allows it).</summary>
    private static GateKind Gate(GateKind gate, bool orNone) =>
        gate is GateKind.PerKey or GateKind.PerHead || (orNone && gate == GateKind.None) ? gate
            : throw new UsageException($"--gate must be {(orNone ? "per-key, per-head or none" : "per-key or per-head")}, got {Opt.Kebab(gate)}");
}

using System.Numerics.Tensors;
using Engine.IO;
using Engine.Kernels.Common;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine inputs: writes the random inputs `engine bench` times as .npy files, for `engine op`.</summary>
internal sealed class InputsCommand : ICommand
{
    public string Name => "inputs";
    public string Summary => "write random attention inputs (q, k, v, g, beta) as .npy for engine op";
    public int Positionals => 1;
    public IReadOnlyCollection<string> Options { get; } = ["B", "T", "H", "K", "V", "gate", "seed", "out-dir"];
    public string Usage => """
        engine inputs gla|delta|gated-delta|lightning [--B 1] [--T 4096] [--H 8] [--K 128] [--V 128]
                      [--gate per-key|per-head|none] [--seed 0] --out-dir DIR
          writes DIR/q.npy, k.npy [B,T,H,K], v.npy [B,T,H,V] and what the op takes besides: g ([B,T,H,K] per key,
          [B,T,H] per head; gla default per-key, gated-delta default per-head), beta [B,T,H] (delta rules); float32,
          the data `engine bench` times, the same files for the same seed.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        if (args.Positionals.Count != 1) throw new UsageException("give the op: engine inputs gla|delta|gated-delta|lightning ...");
        string op = args.Positionals[0];
        int t = args.Int("T", 4096, min: 0);
        var s = BenchShape.Parse(args, t, h: 8, k: 128, v: 128);
        int seed = args.Int("seed", 0);
        AttentionWorkload work = op switch
        {
            "gla" => new GlaWorkload(s.B, s.T, s.H, s.K, s.V, Gate(args, GateKind.PerKey, GateKind.None), seed),
            "delta" when !args.Has("gate") => new DeltaRuleWorkload(s.B, s.T, s.H, s.K, s.V, GateKind.None, seed),
            "delta" => throw new UsageException("DeltaNet takes no gate: use gated-delta"),
            "gated-delta" => new DeltaRuleWorkload(s.B, s.T, s.H, s.K, s.V, Gate(args, GateKind.PerHead), seed),
            "lightning" when !args.Has("gate") => new LightningWorkload(s.B, s.T, s.H, s.K, s.V, seed),
            "lightning" => throw new UsageException("Lightning attention's decay is its slopes: it takes no --gate"),
            _ => throw new UsageException($"unknown op '{op}': one of gla, delta, gated-delta, lightning"),
        };
        string dir = args.Require("out-dir");
        Directory.CreateDirectory(dir);
        foreach (var (name, values, shape) in work.Inputs())
        {
            string path = Path.Combine(dir, name + ".npy");
            Npy.Write(path, new ReadOnlyTensorSpan<float>(values, shape));
            context.Out.WriteLine(OpIo.Wrote(name, NpyType.Float32, Array.ConvertAll(shape, d => (long)d), path));
        }
        return 0;
    }

    /// <summary>--gate, per-key or per-head (or none where <paramref name="orNone"/> allows it).</summary>
    private static GateKind Gate(CommandLine args, GateKind fallback, GateKind? orNone = null)
    {
        var gate = args.Choice("gate", fallback);
        return gate is GateKind.PerKey or GateKind.PerHead || gate == orNone ? gate
            : throw new UsageException($"--gate must be per-key, per-head{(orNone is null ? "" : " or none")}, got {CommandLine.Kebab(gate.ToString())}");
    }
}

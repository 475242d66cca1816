using Engine.IO;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine op delta | gated-delta: runs DeltaNet or Gated DeltaNet on .npy files.</summary>
internal sealed class DeltaRuleOpCommand(bool gated) : ICommand
{
    public string Name => gated ? "gated-delta" : "delta";
    public string Summary => gated ? "Gated DeltaNet (delta rule with a per-head log decay)" : "DeltaNet (delta rule)";
    public IReadOnlyCollection<string> Options { get; } = gated
        ? ["q", "k", "v", "beta", "g", "h0", "cu-seqlens", "scale", "chunk", "mode", "qk-l2norm", "backend", "threads", "o", "ht"]
        : ["q", "k", "v", "beta", "h0", "cu-seqlens", "scale", "chunk", "mode", "qk-l2norm", "backend", "threads", "o", "ht"];
    public string Usage => $"""
        engine op {Name} --q q.npy --k k.npy --v v.npy --beta beta.npy{(gated ? " --g g.npy" : "")} [--h0 h0.npy] [--cu-seqlens c.npy]
                 [--scale S] [--chunk 16|32|64] [--mode chunked|recurrent] [--qk-l2norm]
                 [--backend reference|cpu|gpu] [--threads N] --o o.npy [--ht ht.npy]
          q [B,T,Hq,K]; k [B,T,Hkv,K]; v [B,T,Hkv,V]; beta [B,T,Hkv] (finite; (0,1] is the stable range){(gated ? ";\n  g [B,T,Hkv] log decay <= 0" : "")};
          h0/ht [N,Hkv,K,V] float32; cu-seqlens int32/int64 offsets of packed sequences (then B = 1);
          Hkv divides Hq; K, V <= 256; --qk-l2norm normalizes q and k rows in the kernel.
          float16 q runs the fp16 path (output float16); otherwise float32.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        var q = OpIo.Required(args, "q");
        var k = OpIo.Required(args, "k");
        var v = OpIo.Required(args, "v");
        var beta = OpIo.Required(args, "beta");
        var g = gated ? OpIo.Required(args, "g") : null;
        var h0 = OpIo.Optional(args, "h0");
        var cu = OpIo.Optional(args, "cu-seqlens");
        var options = new DeltaRuleOptions
        {
            Scale = args.Float("scale"),
            ChunkSize = args.Int("chunk", 64),
            Mode = args.Choice("mode", AttentionMode.Chunked),
            QkL2Norm = args.Flag("qk-l2norm"),
        };
        string outPath = args.Require("o");
        string? statePath = args.Value("ht");
        using var device = OpIo.Device(args);

        var initial = h0 is null ? null : OpIo.Float32(h0);
        int[]? cuSeqlens = cu?.ToInt32();
        if (q.Type == NpyType.Float16)
        {
            var r = Engine.DeltaRule.Forward(device, OpIo.Float16(q), OpIo.Float16(k), OpIo.Float16(v), OpIo.Float16(beta),
                g is null ? null : OpIo.Float16(g), options, initial, cuSeqlens);
            OpIo.Write(outPath, r.Output);
            if (statePath is not null) OpIo.Write(statePath, r.FinalState);
        }
        else
        {
            var r = Engine.DeltaRule.Forward(device, OpIo.Float32(q), OpIo.Float32(k), OpIo.Float32(v), OpIo.Float32(beta),
                g is null ? null : OpIo.Float32(g), options, initial, cuSeqlens);
            OpIo.Write(outPath, r.Output);
            if (statePath is not null) OpIo.Write(statePath, r.FinalState);
        }
        return 0;
    }
}

/// <summary>engine bench delta | gated-delta: times DeltaNet or Gated DeltaNet on random inputs.</summary>
internal sealed class DeltaRuleBenchCommand(bool gated) : ICommand
{
    public string Name => gated ? "gated-delta" : "delta";
    public string Summary => gated ? "time Gated DeltaNet" : "time DeltaNet";
    public IReadOnlyCollection<string> Options { get; } = ["B", "T", "H", "K", "V", "mode", "chunk", "repeats", "backend", "threads", "json"];
    public string Usage => $"""
        engine bench {Name} [--B 1] [--T 8192[,...]] [--H 8] [--K 128] [--V 128] [--mode chunked|recurrent|both]
                 [--chunk 64] [--repeats 7] {OpIo.BackendUsage} [--json]
          model flops (both modes), per chunk of C tokens and head: 2·C²·K (K Kᵀ) + C³/3 (inverse)
          + 2·C²·(K+V) (W, U) + 2·C·K·V (W S) + 2·C²·K + 2·C²·V + 2·C·K·V (output) + 2·C·K·V (state)
        """;

    public int Run(CommandLine args, CliContext context)
    {
        var tokens = BenchShape.TokenList(args, 8192);
        var shape = BenchShape.Parse(args, t: tokens[0], h: 8, k: 128, v: 128);
        int chunk = args.Int("chunk", 64);
        var modes = BenchShape.Modes(args);
        int repeats = args.Int("repeats", 7, min: 1);
        bool json = args.Flag("json");
        using var device = OpIo.Device(args);

        var results = new List<BenchResult>();
        foreach (int t in tokens)
        {
            var workload = new DeltaRuleWorkload(shape.B, t, shape.H, shape.K, shape.V, gated);
            foreach (var mode in modes)
            {
                var options = new DeltaRuleOptions { ChunkSize = chunk, Mode = mode };
                double seconds = BenchTimer.Median(() => workload.Run(device, options), repeats);
                results.Add(new BenchResult(Name, $"C{chunk} {CommandLine.Kebab(mode.ToString())}", device.Description,
                    shape with { T = t }, seconds, workload.ModelFlops(chunk)));
            }
        }
        BenchReport.Print(context.Out, results, device.Backend == Backend.Cpu ? BenchReport.MeasurePeak(device) : null, json);
        return 0;
    }
}

using System.Numerics.Tensors;
using Engine.IO;
using Engine.Kernels.Common;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine op delta | gated-delta: runs DeltaNet or Gated DeltaNet on .npy files.</summary>
internal sealed class DeltaRuleOpCommand(bool gated) : ICommand
{
    public string Name => gated ? "gated-delta" : "delta";
    public string Summary => gated ? "Gated DeltaNet (delta rule with a per-head or per-key log decay)" : "DeltaNet (delta rule)";
    public IReadOnlyCollection<string> Options { get; } =
        [.. AttentionFiles.Options, "beta", "scale", "chunk", "mode", "qk-l2norm", .. (gated ? new[] { "g" } : [])];
    public string Usage => $"""
        engine op {Name} --q q.npy --k k.npy --v v.npy --beta beta.npy{(gated ? " --g g.npy" : "")} [--h0 h0.npy] [--cu-seqlens c.npy]
                 [--scale S] [--chunk 16|32|64] [--mode chunked|recurrent] [--qk-l2norm]
                 [--backend reference|cpu|gpu] [--threads N] --o o.npy [--ht ht.npy] [--json]
          q [B,T,Hq,K]; k [B,T,Hk,K]; v [B,T,Hv,V]; beta [B,T,Hv] (finite; (0,1] is the stable range){(gated ? ";\n  g [B,T,Hv] (per head) or [B,T,Hv,K] (per key dim) log decay <= 0" : "")};
          h0/ht [N,Hv,K,V] float32; cu-seqlens int32/int64 offsets of packed sequences (then B = 1);
          heads: Hk = Hv dividing Hq, or Hq = Hk dividing Hv (grouped value heads); o [B,T,max(Hq,Hv),V];
          K, V <= 256; --qk-l2norm normalizes q and k rows in the kernel.
          float16 q runs the fp16 path (output float16); otherwise float32.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        using var files = AttentionFiles.Read(args);
        var beta = files.Required("beta");
        var g = gated ? files.Required("g") : null;
        var options = new DeltaRuleOptions
        {
            Scale = args.Float("scale"),
            ChunkSize = args.Int("chunk", DeltaRuleOptions.DefaultChunkSize),
            Mode = args.Choice("mode", AttentionMode.Chunked),
            QkL2Norm = args.Flag("qk-l2norm"),
        };
        using var device = OpIo.Device(args);
        if (files.Half) files.Run<Half>(Forward);
        else files.Run<float>(Forward);
        files.Report(context, Name, device.Description);
        return 0;

        void Forward<T>(TensorSpan<T> output, TensorSpan<float> finalState) where T : unmanaged =>
            Engine.DeltaRule.Forward(device, files.Q.AsTensorSpan<T>(), files.K.AsTensorSpan<T>(), files.V.AsTensorSpan<T>(), beta.AsTensorSpan<T>(),
                g is null ? default : g.AsTensorSpan<T>(), output, files.InitialState, finalState, files.CuSeqlens, options);
    }
}

/// <summary>engine bench delta | gated-delta: times DeltaNet or Gated DeltaNet on random inputs.</summary>
internal sealed class DeltaRuleBenchCommand(bool gated) : ICommand
{
    public string Name => gated ? "gated-delta" : "delta";
    public string Summary => gated ? "time Gated DeltaNet" : "time DeltaNet";
    public IReadOnlyCollection<string> Options { get; } =
        ["B", "T", "H", "K", "V", "mode", "chunk", "repeats", "best-of", "backend", "threads", "json", "plot", .. (gated ? new[] { "gate" } : [])];
    public string Usage => $"""
        engine bench {Name} [--B 1] [--T 8192[,...]] [--H 8] [--K 128] [--V 128]{(gated ? " [--gate per-head|per-key]" : "")} [--mode chunked|recurrent|both]
                 [--chunk 32] {BenchTiming.Usage} {OpIo.BackendUsage} [--json] {BenchChart.Usage}
          model flops (both modes), per chunk of C tokens and head: 2·C²·K (K Kᵀ) + C³/3 (inverse)
          + 2·C²·(K+V) (W, U) + 2·C·K·V (W S) + 2·C²·K + 2·C²·V + 2·C·K·V (output) + 2·C·K·V (state)
        """;

    public int Run(CommandLine args, CliContext context)
    {
        var bench = AttentionBench.Parse(args);
        int chunk = args.Int("chunk", DeltaRuleOptions.DefaultChunkSize);
        var gate = gated ? args.Choice("gate", GateKind.PerHead) : GateKind.None;
        if (gate is not (GateKind.None or GateKind.PerHead or GateKind.PerKey))
            throw new UsageException($"--gate {CommandLine.Kebab(gate.ToString())}: Gated DeltaNet takes per-head or per-key");
        var s = bench.Shape;
        return bench.Run(args, context, Name, t => new DeltaRuleWorkload(s.B, t, s.H, s.K, s.V, gate),
            (work, mode) => ($"{(gated ? CommandLine.Kebab(gate.ToString()) + " " : "")}C{chunk} {CommandLine.Kebab(mode.ToString())}", work.ModelFlops(chunk),
                device => work.Run(device, new DeltaRuleOptions { ChunkSize = chunk, Mode = mode })));
    }
}

using System.Numerics.Tensors;
using Engine.IO;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine op gla: runs gated linear attention on .npy files.</summary>
internal sealed class GlaOpCommand : ICommand
{
    public string Name => "gla";
    public string Summary => "gated linear attention (per-key, per-head or no gate)";
    public IReadOnlyCollection<string> Options { get; } = [.. AttentionFiles.Options, "g", "scale", "chunk", "mode"];
    public string Usage => """
        engine op gla --q q.npy --k k.npy --v v.npy [--g g.npy] [--h0 h0.npy] [--cu-seqlens c.npy]
                      [--scale S] [--chunk 16|32|64] [--mode chunked|recurrent]
                      [--backend reference|cpu|gpu] [--threads N] --o o.npy [--ht ht.npy] [--json]
          q [B,T,Hq,K]; k [B,T,Hk,K]; v [B,T,Hv,V]; g [B,T,Hv,K] (per key dim) or [B,T,Hv] (per head), log space <= 0;
          h0/ht [N,Hv,K,V] float32; cu-seqlens int32/int64 offsets of packed sequences (then B = 1);
          heads: Hk = Hv dividing Hq, or Hq = Hk dividing Hv (grouped value heads); o [B,T,max(Hq,Hv),V].
          float16 q runs the fp16 path (output float16); otherwise float32.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        using var files = AttentionFiles.Read(args);
        var g = files.Optional("g");
        var options = new GlaOptions
        {
            Scale = args.Float("scale"),
            ChunkSize = args.Int("chunk", 64),
            Mode = args.Choice("mode", AttentionMode.Chunked),
        };
        using var device = OpIo.Device(args);
        if (files.Half) files.Run<Half>(Forward);
        else files.Run<float>(Forward);
        files.Report(context, Name, device.Description);
        return 0;

        void Forward<T>(TensorSpan<T> output, TensorSpan<float> finalState) where T : unmanaged =>
            Engine.Gla.Forward(device, files.Q.AsTensorSpan<T>(), files.K.AsTensorSpan<T>(), files.V.AsTensorSpan<T>(),
                g is null ? default : g.AsTensorSpan<T>(), output, files.InitialState, finalState, files.CuSeqlens, options);
    }
}

/// <summary>engine bench gla: times GLA on random inputs of a given shape.</summary>
internal sealed class GlaBenchCommand : ICommand
{
    public string Name => "gla";
    public string Summary => "time gated linear attention";
    public IReadOnlyCollection<string> Options { get; } = ["B", "T", "H", "K", "V", "gate", "mode", "chunk", "repeats", "best-of", "backend", "threads", "json", "plot"];
    public string Usage => $"""
        engine bench gla [--B 1] [--T 8192[,...]] [--H 8] [--K 128] [--V 128] [--gate per-key|per-head|none]
                         [--mode chunked|recurrent|both] [--chunk 64] {BenchTiming.Usage} {OpIo.BackendUsage} [--json] {BenchChart.Usage}
          model flops per token and head: 2·C·(K+V) + 4·K·V chunked, 4·K·V recurrent (C = chunk size)
        """;

    public int Run(CommandLine args, CliContext context)
    {
        var bench = AttentionBench.Parse(args);
        var gate = args.Choice("gate", GateKind.PerKey);
        if (gate == GateKind.Constant) throw new UsageException("--gate constant is Lightning attention: use engine bench lightning");
        int chunk = args.Int("chunk", 64);
        var s = bench.Shape;
        return bench.Run(args, context, "gla", t => new GlaWorkload(s.B, t, s.H, s.K, s.V, gate),
            (work, mode) => ($"{CommandLine.Kebab(gate.ToString())} {CommandLine.Kebab(mode.ToString())}", work.ModelFlops(mode, chunk),
                device => work.Run(device, new GlaOptions { ChunkSize = chunk, Mode = mode })));
    }
}

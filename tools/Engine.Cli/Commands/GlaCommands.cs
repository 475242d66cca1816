using System.CommandLine;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine op gla: runs gated linear attention on .npy files.</summary>
internal sealed class GlaOpCommand : EngineCommand
{
    private readonly AttentionOptions _files = new();
    private readonly Option<string> _g = Opt.Text("--g", "log gates <= 0: [B,T,Hv,K] per key dim or [B,T,Hv] per head (none: no gate)", "g.npy");
    private readonly Option<float?> _scale = Opt.Float("--scale", "the scale of q (default 1/sqrt(K))");
    private readonly Option<int> _chunk = Opt.OneOf("--chunk", 64, GlaConfig.ChunkSizes, "chunk size");
    private readonly Option<AttentionMode> _mode = Opt.Choice("--mode", AttentionMode.Chunked, "the chunked form or the recurrent (decode) form");

    public GlaOpCommand() : base("gla", "gated linear attention (per-key, per-head or no gate)", """
        q [B,T,Hq,K]; k [B,T,Hk,K]; v [B,T,Hv,V]; g [B,T,Hv,K] (per key dim) or [B,T,Hv] (per head), log space <= 0;
        h0/ht [N,Hv,K,V] float32; cu-seqlens int32/int64 offsets of packed sequences (then B = 1);
        heads: Hk = Hv dividing Hq, or Hq = Hk dividing Hv (grouped value heads); o [B,T,max(Hq,Hv),V].
        float16 q runs the fp16 path (output float16); otherwise float32.
        """)
    {
        foreach (var option in _files.All.Concat([_g, _scale, _chunk, _mode])) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        Opt.RequireChunked(args, _mode, _chunk);
        using var files = new AttentionFiles(_files, args);
        var g = files.Optional(args, _g);
        var options = new GlaOptions { Scale = args.GetValue(_scale), ChunkSize = args.GetValue(_chunk), Mode = args.GetValue(_mode) };
        using var device = _files.Device.Create(args);
        if (files.Half) files.Run<Half>(Forward);
        else files.Run<float>(Forward);
        files.Report(context, args.GetValue(_files.Json), Name, device.Description);
        return 0;

        void Forward<T>(TensorSpan<T> output, TensorSpan<float> finalState) where T : unmanaged =>
            Engine.Gla.Forward(device, files.Q.AsTensorSpan<T>(), files.K.AsTensorSpan<T>(), files.V.AsTensorSpan<T>(),
                g is null ? default : g.AsTensorSpan<T>(), output, files.InitialState, finalState, files.CuSeqlens, options);
    }
}

/// <summary>engine bench gla: times GLA on random inputs of a given shape.</summary>
internal sealed class GlaBenchCommand : EngineCommand
{
    private readonly AttentionBenchOptions _bench = new();
    private readonly Option<GateKind> _gate = Opt.Choice("--gate", GateKind.PerKey, "the decay (a constant one is Lightning attention: engine bench lightning)",
        GateKind.PerKey, GateKind.PerHead, GateKind.None);
    private readonly Option<int> _chunk = Opt.OneOf("--chunk", 64, GlaConfig.ChunkSizes, "chunk size");

    public GlaBenchCommand() : base("gla", "time gated linear attention",
        $"""
        model flops per token and head: 2·C·(K+V) + 4·K·V chunked, 4·K·V recurrent (C = chunk size; T mod C in a last,
        shorter chunk).
        {AttentionBench.GpuNotes}
        ort-cuda linear-attention: ORT's com.microsoft.LinearAttention CUDA kernel (update_rule linear or gated).
        """)
    {
        foreach (var option in _bench.All.Concat([_gate, _chunk])) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        AttentionBench.RequireChunked(args, _bench, _chunk);
        var bench = AttentionBench.Parse(args, _bench);
        var gate = args.GetValue(_gate);
        int chunk = args.GetValue(_chunk);
        var s = bench.Shape;
        return bench.Run(args, _bench, context, "gla", t => new GlaWorkload(s.B, t, s.H, s.K, s.V, gate),
            (work, mode) => ($"{Opt.Kebab(gate)} {Opt.Kebab(mode)}", work.ModelFlops(mode, chunk),
                device => work.Run(device, new GlaOptions { ChunkSize = chunk, Mode = mode, GpuPrecision = bench.Precision })),
            ortCuda: () => [OrtCudaPeer.LinearAttention(s, gate, delta: false)]);
    }
}

using System.CommandLine;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine op delta | gated-delta: runs DeltaNet or Gated DeltaNet on .npy files.</summary>
internal sealed class DeltaRuleOpCommand : EngineCommand
{
    private readonly AttentionOptions _files = new();
    private readonly Option<string> _beta = Opt.Text("--beta", "beta [B,T,Hv] (finite; (0,1] is the stable range)", "beta.npy", required: true);
    private readonly Option<string>? _g;
    private readonly Option<float?> _scale = Opt.Float("--scale", "the scale of q (default 1/sqrt(K))");
    private readonly Option<int> _chunk = Opt.OneOf("--chunk", DeltaRuleOptions.DefaultChunkSize, DeltaRuleConfig.ChunkSizes, "chunk size");
    private readonly Option<AttentionMode> _mode = Opt.Choice("--mode", AttentionMode.Chunked, "the chunked form or the recurrent (decode) form");
    private readonly Option<bool> _qkL2Norm = Opt.Flag("--qk-l2norm", "normalize q and k rows in the kernel");

    public DeltaRuleOpCommand(bool gated) : base(gated ? "gated-delta" : "delta",
        gated ? "Gated DeltaNet (delta rule with a per-head or per-key log decay)" : "DeltaNet (delta rule)", $"""
        q [B,T,Hq,K]; k [B,T,Hk,K]; v [B,T,Hv,V]; beta [B,T,Hv] (finite; (0,1] is the stable range){(gated ? ";\n  g [B,T,Hv] (per head) or [B,T,Hv,K] (per key dim) log decay <= 0" : "")};
        h0/ht [N,Hv,K,V] float32; cu-seqlens int32/int64 offsets of packed sequences (then B = 1);
        heads: Hk = Hv dividing Hq, or Hq = Hk dividing Hv (grouped value heads); o [B,T,max(Hq,Hv),V];
        K, V <= 256; --qk-l2norm normalizes q and k rows in the kernel.
        float16 q runs the fp16 path (output float16); otherwise float32.
        """)
    {
        if (gated) _g = Opt.Text("--g", "log decay <= 0: [B,T,Hv] per head or [B,T,Hv,K] per key dim", "g.npy", required: true);
        foreach (var option in _files.All.Concat([_beta, .. _g is null ? Array.Empty<Option>() : [_g], _scale, _chunk, _mode, _qkL2Norm])) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        Opt.RequireChunked(args, _mode, _chunk);
        using var files = new AttentionFiles(_files, args);
        var beta = files.Open(args, _beta);
        var g = _g is null ? null : files.Open(args, _g);
        var options = new DeltaRuleOptions
        {
            Scale = args.GetValue(_scale),
            ChunkSize = args.GetValue(_chunk),
            Mode = args.GetValue(_mode),
            QkL2Norm = args.GetValue(_qkL2Norm),
        };
        using var device = _files.Device.Create(args);
        if (files.Half) files.Run<Half>(Forward);
        else files.Run<float>(Forward);
        files.Report(context, args.GetValue(_files.Json), Name, device.Description);
        return 0;

        void Forward<T>(TensorSpan<T> output, TensorSpan<float> finalState) where T : unmanaged =>
            Engine.DeltaRule.Forward(device, files.Q.AsTensorSpan<T>(), files.K.AsTensorSpan<T>(), files.V.AsTensorSpan<T>(), beta.AsTensorSpan<T>(),
                g is null ? default : g.AsTensorSpan<T>(), output, files.InitialState, finalState, files.CuSeqlens, options);
    }
}

/// <summary>engine bench delta | gated-delta: times DeltaNet or Gated DeltaNet on random inputs.</summary>
internal sealed class DeltaRuleBenchCommand : EngineCommand
{
    private readonly AttentionBenchOptions _bench = new();
    private readonly Option<int> _chunk = Opt.OneOf("--chunk", DeltaRuleOptions.DefaultChunkSize, DeltaRuleConfig.ChunkSizes, "chunk size");
    private readonly Option<GateKind>? _gate;

    public DeltaRuleBenchCommand(bool gated) : base(gated ? "gated-delta" : "delta", gated ? "time Gated DeltaNet" : "time DeltaNet", $"""
        model flops (both modes), per chunk of C tokens and head: 2·C²·K (K Kᵀ) + C³/3 (inverse)
        + 2·C²·(K+V) (W, U) + 2·C·K·V (W S) + 2·C²·K + 2·C²·V + 2·C·K·V (output) + 2·C·K·V (state).
        {AttentionBench.GpuNotes}
        ort-cuda linear-attention, ort-cuda gated-delta-net: ORT's com.microsoft.LinearAttention and GatedDeltaNet CUDA kernels.
        """)
    {
        if (gated) _gate = Opt.Choice("--gate", GateKind.PerHead, "the decay", GateKind.PerHead, GateKind.PerKey);
        foreach (var option in _bench.All.Concat([_chunk, .. _gate is null ? Array.Empty<Option>() : [_gate]])) Add(option);
    }

    /// <summary>
    /// The kernels' head-dim limits, named by the options that set them (the op's own refusal names its tensors, q and v):
    /// for `bench`, and for `inputs`, whose files `op` would then refuse.
    /// </summary>
    public static void RequireHeadDims(ParseResult args, Option<int> k, Option<int> v)
    {
        foreach (var (option, limit) in new[] { (k, DeltaRuleConfig.MaxKeyDim), (v, DeltaRuleConfig.MaxValueDim) })
            if (args.GetValue(option) > limit)
                throw new UsageException($"{option.Name} must be <= {limit} (the delta-rule kernels' limit), got {args.GetValue(option)}");
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        AttentionBench.RequireChunked(args, _bench, _chunk);
        RequireHeadDims(args, _bench.K, _bench.V);
        var bench = AttentionBench.Parse(args, _bench);
        int chunk = args.GetValue(_chunk);
        var gate = _gate is null ? GateKind.None : args.GetValue(_gate);
        var s = bench.Shape;
        return bench.Run(args, _bench, context, Name, t => new DeltaRuleWorkload(s.B, t, s.H, s.K, s.V, gate),
            (work, mode) => ($"{(_gate is null ? "" : Opt.Kebab(gate) + " ")}C{chunk} {Opt.Kebab(mode)}", work.ModelFlops(chunk),
                device => work.Run(device, new DeltaRuleOptions { ChunkSize = chunk, Mode = mode, GpuPrecision = bench.Precision })),
            ortCuda: () => [OrtCudaPeer.LinearAttention(s, gate, delta: true), OrtCudaPeer.GatedDeltaNet(s, gate)]);
    }
}

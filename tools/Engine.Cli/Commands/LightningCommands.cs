using System.Numerics.Tensors;
using Engine.IO;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine op lightning: Lightning attention on .npy files.</summary>
internal sealed class LightningOpCommand : ICommand
{
    public string Name => "lightning";
    public string Summary => "Lightning attention (constant per-head decay, ALiBi slopes)";
    public IReadOnlyCollection<string> Options { get; } = [.. AttentionFiles.Options, "slopes", "layer", "layers", "scale", "block", "mode"];
    public string Usage => """
        engine op lightning --q q.npy --k k.npy --v v.npy [--slopes s.npy | --layer l --layers L]
                            [--h0 h0.npy] [--cu-seqlens c.npy] [--scale 1] [--block 64|256]
                            [--mode chunked|recurrent] [--backend reference|cpu|gpu] [--threads N] --o o.npy [--ht ht.npy] [--json]
          q [B,T,Hq,K]; k [B,T,Hk,K]; v [B,T,Hv,V] (Hk = Hv dividing Hq, or Hq = Hk dividing Hv); o [B,T,max(Hq,Hv),V];
          slopes [Hv] (decay exp(-s) per value head; default the ALiBi schedule for Hv, scaled by
          1 - l/(L-1) + 1e-5 with --layer/--layers); no 1/sqrt(K) scale unless --scale is given.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        using var files = AttentionFiles.Read(args);
        var slopes = files.Optional("slopes");
        int? layer = args.Has("layer") ? args.Int("layer", 0) : null;
        int? layers = args.Has("layers") ? args.Int("layers", 0) : null;
        var options = new LightningOptions
        {
            Slopes = slopes?.ToFloat32(),
            Layer = layer,
            Layers = layers,
            Scale = args.Float("scale") ?? 1f,
            BlockSize = args.Int("block", 64),
            Mode = args.Choice("mode", AttentionMode.Chunked),
        };
        using var device = OpIo.Device(args);
        if (files.Half) files.Run<Half>(Forward);
        else files.Run<float>(Forward);
        files.Report(context, Name, device.Description);
        return 0;

        void Forward<T>(TensorSpan<T> output, TensorSpan<float> finalState) where T : unmanaged =>
            Engine.Lightning.Forward(device, files.Q.AsTensorSpan<T>(), files.K.AsTensorSpan<T>(), files.V.AsTensorSpan<T>(),
                output, files.InitialState, finalState, files.CuSeqlens, options);
    }
}

/// <summary>engine bench lightning: times Lightning attention on random inputs.</summary>
internal sealed class LightningBenchCommand : ICommand
{
    public string Name => "lightning";
    public string Summary => "time Lightning attention";
    public IReadOnlyCollection<string> Options { get; } = ["B", "T", "H", "K", "V", "block", "mode", "repeats", "best-of", "backend", "threads", "json", "plot"];
    public string Usage => $"""
        engine bench lightning [--B 1] [--T 8192] [--H 8] [--K 128] [--V 128] [--block 64] [--mode chunked|recurrent|both]
                               {BenchTiming.Usage} {OpIo.BackendUsage} [--json] {BenchChart.Usage}
          --T takes a comma-separated list (e.g. 2048,8192,32768) to show how time grows with T.
          model flops per token and head: 2·B·(K+V) + 4·K·V in blocks of B tokens, 4·K·V recurrent
        """;

    public int Run(CommandLine args, CliContext context)
    {
        var bench = AttentionBench.Parse(args);
        int block = args.Int("block", 64);
        var s = bench.Shape;
        return bench.Run(args, context, "lightning", t => new LightningWorkload(s.B, t, s.H, s.K, s.V),
            (work, mode) => ($"block{block} {CommandLine.Kebab(mode.ToString())}", work.ModelFlops(mode, block),
                device => work.Run(device, new LightningOptions { BlockSize = block, Mode = mode })));
    }
}

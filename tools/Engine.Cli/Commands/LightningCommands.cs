using System.CommandLine;
using System.Numerics.Tensors;
using Engine.Kernels.Gla;
using Engine.Workloads;

namespace Engine.Cli.Commands;

/// <summary>engine op lightning: Lightning attention on .npy files.</summary>
internal sealed class LightningOpCommand : EngineCommand
{
    private readonly AttentionOptions _files = new();
    private readonly Option<string> _slopes = Opt.Text("--slopes", "decay slopes [Hv] (default the ALiBi schedule for Hv)", "s.npy");
    private readonly Option<int?> _layer = Opt.OptionalInt("--layer", "this layer's index l (with --layers)");
    private readonly Option<int?> _layers = Opt.OptionalInt("--layers", "the model's layer count L (with --layer)");
    private readonly Option<float?> _scale = Opt.Float("--scale", "the scale of q (default 1: no 1/sqrt(K))");
    private readonly Option<int> _block = Opt.OneOf("--block", 64, GlaConfig.ChunkSizes, "block size");
    private readonly Option<AttentionMode> _mode = Opt.Choice("--mode", AttentionMode.Chunked, "the chunked form or the recurrent (decode) form");

    public LightningOpCommand() : base("lightning", "Lightning attention (constant per-head decay, ALiBi slopes)", """
        q [B,T,Hq,K]; k [B,T,Hk,K]; v [B,T,Hv,V] (Hk = Hv dividing Hq, or Hq = Hk dividing Hv); o [B,T,max(Hq,Hv),V];
        slopes [Hv] (decay exp(-s) per value head; default the ALiBi schedule for Hv, scaled by
        1 - l/(L-1) + 1e-5 with --layer/--layers); no 1/sqrt(K) scale unless --scale is given.
        """)
    {
        foreach (var option in _files.All.Concat([_slopes, _layer, _layers, _scale, _block, _mode])) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        var (layer, layers) = (args.GetValue(_layer), args.GetValue(_layers));
        if (layer.HasValue != layers.HasValue)
            throw new UsageException("--layer and --layers go together: give both or neither");
        if (layer.HasValue && Opt.Given(args, _slopes))
            throw new UsageException("--slopes and --layer/--layers are two ways to give the slopes: give one");
        // Checked here, as the options are named: the library's refusals name its own parameters and exit as bad input.
        if (layers < 2) throw new UsageException($"--layers must be >= 2 for the per-layer slope schedule, got {layers}");
        if (layer < 0 || layer >= layers) throw new UsageException($"--layer must be in [0, {layers - 1}] (--layers {layers}), got {layer}");
        Opt.RequireChunked(args, _mode, _block);
        using var files = new AttentionFiles(_files, args);
        var slopes = files.Optional(args, _slopes);
        if (slopes is not null && slopes.Shape.Length != 1)
            throw new ArgumentException($"--slopes ({slopes.SourceFile}): expected shape [Hv] (one slope per value head), got [{string.Join(", ", slopes.Shape)}]");
        var options = new LightningOptions
        {
            Slopes = slopes?.ToFloat32(),
            Layer = layer,
            Layers = layers,
            Scale = args.GetValue(_scale) ?? 1f,
            BlockSize = args.GetValue(_block),
            Mode = args.GetValue(_mode),
        };
        using var device = _files.Device.Create(args);
        if (files.Half) files.Run<Half>(Forward);
        else files.Run<float>(Forward);
        files.Report(context, args.GetValue(_files.Json), Name, device.Description);
        return 0;

        void Forward<T>(TensorSpan<T> output, TensorSpan<float> finalState) where T : unmanaged =>
            Engine.Lightning.Forward(device, files.Q.AsTensorSpan<T>(), files.K.AsTensorSpan<T>(), files.V.AsTensorSpan<T>(),
                output, files.InitialState, finalState, files.CuSeqlens, options);
    }
}

/// <summary>engine bench lightning: times Lightning attention on random inputs.</summary>
internal sealed class LightningBenchCommand : EngineCommand
{
    private readonly AttentionBenchOptions _bench = new();
    private readonly Option<int> _block = Opt.OneOf("--block", 64, GlaConfig.ChunkSizes, "block size");

    public LightningBenchCommand() : base("lightning", "time Lightning attention",
        "model flops per token and head: 2·B·(K+V) + 4·K·V in blocks of B tokens (T mod B in a last, shorter block),\n4·K·V recurrent")
    {
        foreach (var option in _bench.All.Append(_block)) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        AttentionBench.RequireChunked(args, _bench, _block);
        var bench = AttentionBench.Parse(args, _bench);
        int block = args.GetValue(_block);
        var s = bench.Shape;
        return bench.Run(args, _bench, context, "lightning", t => new LightningWorkload(s.B, t, s.H, s.K, s.V),
            (work, mode) => ($"block{block} {Opt.Kebab(mode)}", work.ModelFlops(mode, block),
                device => work.Run(device, new LightningOptions { BlockSize = block, Mode = mode, GpuPrecision = bench.Precision })));
    }
}

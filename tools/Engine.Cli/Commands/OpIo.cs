using System.Numerics.Tensors;
using Engine.IO;

namespace Engine.Cli.Commands;

/// <summary>What every op command shares: the device option and .npy tensors in and out.</summary>
internal static class OpIo
{
    public const string BackendUsage = "[--backend reference|cpu|gpu] [--threads N]";

    public static EngineDevice Device(CommandLine args, Backend fallback = Backend.Cpu)
    {
        var backend = args.Choice("backend", fallback);
        int threads = args.Int("threads", Environment.ProcessorCount, min: 1);
        return EngineDevice.Create(backend, new EngineDeviceOptions { CpuThreads = threads });
    }

    public static NpyArray? Optional(CommandLine args, string option)
    {
        string? path = args.Value(option);
        return path is null ? null : Npy.Read(path);
    }

    public static NpyArray Required(CommandLine args, string option) => Npy.Read(args.Require(option));

    public static Tensor<float> Float32(NpyArray a) => Tensor.Create(a.ToFloat32(), a.Shape);

    public static Tensor<Half> Float16(NpyArray a) => Tensor.Create(a.ToFloat16(), a.Shape);

    /// <summary>Writes an attention op's output and, when asked, its final state.</summary>
    public static void WriteResult<T>(AttentionResult<T> result, string outputPath, string? statePath) where T : unmanaged
    {
        Write(outputPath, result.Output);
        if (statePath is not null) Write(statePath, result.FinalState);
    }

    public static void Write<T>(string path, Tensor<T> tensor) where T : unmanaged
    {
        var values = new T[tensor.FlattenedLength];
        tensor.FlattenTo(values);
        NpyArray array = values switch
        {
            float[] f => NpyArray.From(f, tensor.Lengths),
            Half[] h => NpyArray.From(h, tensor.Lengths),
            _ => throw new NotSupportedException($"cannot write {typeof(T).Name} tensors"),
        };
        Npy.Write(path, array);
    }
}

/// <summary>
/// The files every attention op command shares: q, k, v, the optional initial state and packed-sequence
/// offsets in; the output and the optional final state out. The element type follows q (float16 runs fp16).
/// </summary>
internal sealed class AttentionFiles
{
    private readonly string _outputPath;
    private readonly string? _statePath;

    private AttentionFiles(CommandLine args)
    {
        Q = OpIo.Required(args, "q");
        K = OpIo.Required(args, "k");
        V = OpIo.Required(args, "v");
        var h0 = OpIo.Optional(args, "h0");
        InitialState = h0 is null ? null : OpIo.Float32(h0);
        CuSeqlens = OpIo.Optional(args, "cu-seqlens")?.ToInt32();
        _outputPath = args.Require("o");
        _statePath = args.Value("ht");
    }

    /// <summary>Options every attention op command takes, besides its own.</summary>
    public static readonly string[] Options = ["q", "k", "v", "h0", "cu-seqlens", "o", "ht", "backend", "threads"];

    public NpyArray Q { get; }
    public NpyArray K { get; }
    public NpyArray V { get; }
    public Tensor<float>? InitialState { get; }
    public int[]? CuSeqlens { get; }

    /// <summary>q is float16: run the op in System.Half.</summary>
    public bool Half => Q.Type == NpyType.Float16;

    public static AttentionFiles Read(CommandLine args) => new(args);

    public void Write<T>(AttentionResult<T> result) where T : unmanaged => OpIo.WriteResult(result, _outputPath, _statePath);
}

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

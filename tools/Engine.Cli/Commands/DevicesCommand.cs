using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Cli.Commands;

/// <summary>engine devices: the backends and devices this machine offers.</summary>
internal sealed class DevicesCommand : ICommand
{
    public string Name => "devices";
    public string Summary => "list backends and devices (CPU SIMD, ILGPU accelerators, CUDA GPUs)";
    public IReadOnlyCollection<string> Options { get; } = [];
    public string Usage => "engine devices";

    public int Run(CommandLine args, CliContext context)
    {
        var w = context.Out;
        w.WriteLine("reference  float64 loops (the oracle; slow)");
        w.WriteLine($"cpu        {Environment.ProcessorCount} cores, {CpuInfo.SimdDescription}; " +
                    $"Vector512 {(Vector512.IsHardwareAccelerated ? "accelerated" : "not accelerated")}, Vector256 {(Vector256.IsHardwareAccelerated ? "accelerated" : "not accelerated")}");
        IReadOnlyList<string> cuda;
        try { cuda = GpuRuntime.CudaDevices(); }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or InvalidOperationException) { cuda = []; }
        if (cuda.Count == 0)
            w.WriteLine("gpu        no CUDA device: the GPU kernels run on ILGPU's CPU accelerator (correctness only)");
        foreach (var d in cuda) w.WriteLine($"gpu        CUDA: {d}");
        return 0;
    }
}

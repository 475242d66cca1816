using System.CommandLine;
using System.Runtime.Intrinsics;
using System.Text.Json;
using Engine.Kernels.Common;

namespace Engine.Cli.Commands;

/// <summary>engine devices: the backends and devices this machine offers.</summary>
internal sealed class DevicesCommand : EngineCommand
{
    private readonly Option<bool> _json = Opt.Json();

    public DevicesCommand() : base("devices", "list backends and devices (CPU SIMD, ILGPU accelerators, CUDA GPUs)") => Add(_json);

    protected override int Run(ParseResult args, CliContext context)
    {
        IReadOnlyList<string> cuda;
        try { cuda = GpuRuntime.CudaDevices(); }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or InvalidOperationException) { cuda = []; }
        var w = context.Out;
        if (args.GetValue(_json))
        {
            w.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["cpu_cores"] = Environment.ProcessorCount, ["simd"] = CpuInfo.SimdDescription,
                ["vector512_accelerated"] = Vector512.IsHardwareAccelerated, ["vector256_accelerated"] = Vector256.IsHardwareAccelerated,
                ["vector128_accelerated"] = Vector128.IsHardwareAccelerated,
                ["cuda_devices"] = cuda,
                // Where the gpu backend's kernels run: CUDA, or without a CUDA device ILGPU's CPU accelerator (correctness only).
                ["gpu_backend_runs_on"] = cuda.Count == 0 ? "ilgpu-cpu-accelerator" : "cuda",
            }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        w.WriteLine("reference  float64 loops (the oracle; slow)");
        w.WriteLine($"cpu        {Environment.ProcessorCount} cores, {CpuInfo.SimdDescription}; " +
                    $"Vector512 {(Vector512.IsHardwareAccelerated ? "accelerated" : "not accelerated")}, Vector256 {(Vector256.IsHardwareAccelerated ? "accelerated" : "not accelerated")}, " +
                    $"Vector128 {(Vector128.IsHardwareAccelerated ? "accelerated" : "not accelerated")}");
        if (cuda.Count == 0)
            w.WriteLine("gpu        no CUDA device: the GPU kernels run on ILGPU's CPU accelerator (correctness only)");
        foreach (var d in cuda) w.WriteLine($"gpu        CUDA: {d}");
        return 0;
    }
}

using Engine.Kernels.Common;
using NUnit.Framework;

namespace Engine.Tests.Harness;

/// <summary>The backends every op is tested on. Devices are made once per test run (ILGPU contexts are slow to make).</summary>
public enum TestBackend
{
    Cpu,
    /// <summary>The GPU kernels on ILGPU's CPU accelerator: always available, slow, so only small shapes.</summary>
    GpuOnCpuAccelerator,
    /// <summary>The GPU kernels on CUDA: only where a CUDA device is present.</summary>
    GpuOnCuda,
}

public static class TestDevices
{
    private static readonly Lazy<EngineDevice> CpuDevice = new(() => EngineDevice.Create(Backend.Cpu));
    private static readonly Lazy<EngineDevice> ReferenceDevice = new(() => EngineDevice.Create(Backend.Reference));
    private static readonly Lazy<EngineDevice> SimulatedGpu = new(() => EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator }));
    private static readonly Lazy<EngineDevice?> CudaGpu = new(() => HasCuda ? EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.Cuda }) : null);
    private static readonly Lazy<bool> CudaPresent = new(() =>
    {
        try { return GpuRuntime.CudaDevices().Count > 0; }
        catch (Exception) { return false; }
    });

    public static bool HasCuda => CudaPresent.Value;

    public static EngineDevice Reference => ReferenceDevice.Value;

    /// <summary>The device for a backend; the test is ignored-as-inconclusive when that backend is absent here.</summary>
    public static EngineDevice Get(TestBackend backend)
    {
        switch (backend)
        {
            case TestBackend.Cpu: return CpuDevice.Value;
            case TestBackend.GpuOnCpuAccelerator: return SimulatedGpu.Value;
            default:
                if (CudaGpu.Value is null) Assert.Inconclusive("no CUDA device on this machine");
                return CudaGpu.Value!;
        }
    }

    /// <summary>The device of a backend as the API names it: the float64 reference, the CPU, or the GPU kernels on ILGPU's CPU accelerator.</summary>
    public static EngineDevice Of(Backend backend) => backend switch
    {
        Backend.Reference => Reference,
        Backend.Cpu => CpuDevice.Value,
        _ => SimulatedGpu.Value,
    };

    /// <summary>The backends a case of this size runs on: all, or without the slow simulated GPU for big shapes.</summary>
    public static IEnumerable<TestBackend> For(bool small)
    {
        yield return TestBackend.Cpu;
        if (small) yield return TestBackend.GpuOnCpuAccelerator;
        if (HasCuda) yield return TestBackend.GpuOnCuda;
    }

    public static void DisposeAll()
    {
        foreach (var d in new[] { CpuDevice, ReferenceDevice, SimulatedGpu })
            if (d.IsValueCreated) d.Value.Dispose();
        if (CudaGpu.IsValueCreated) CudaGpu.Value?.Dispose();
    }
}

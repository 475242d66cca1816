// In namespace Engine: EngineDevice.StopGpuProfile and EngineDevice.GpuTraffic return them, so users name them.
namespace Engine;

/// <summary>One kernel's launches while a profile was taken and their summed device time.</summary>
public readonly record struct GpuKernelTime(string Kernel, long Launches, TimeSpan Elapsed);

/// <summary>What a GPU runtime has done: kernel launches, bytes copied each way between host and device, device buffers allocated.</summary>
public readonly record struct GpuTraffic(long Launches, long BytesToDevice, long BytesToHost, long Allocations)
{
    /// <summary>What happened between <paramref name="earlier"/> and this reading.</summary>
    public GpuTraffic Since(GpuTraffic earlier) =>
        new(Launches - earlier.Launches, BytesToDevice - earlier.BytesToDevice, BytesToHost - earlier.BytesToHost, Allocations - earlier.Allocations);
}

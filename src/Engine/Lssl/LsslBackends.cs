using Engine.Kernels.Lssl;

namespace Engine;

/// <summary>Sends a validated LSSL call to the device's backend. u and y are fp32 here.</summary>
internal static class LsslBackends
{
    public static void Run(EngineDevice device, IWorkScheduler scheduler, LsslSystem system, LsslMode mode, int batch, int length,
        ReadOnlySpan<float> u, Span<float> y, DeviceState state, bool initialStateIsZero, bool needFinalState)
    {
        switch (device.Backend)
        {
            case Backend.Reference:
                RunReference(system, batch, length, u, y, (HostState)state);
                break;
            case Backend.Cpu:
            {
                using var lease = device.Lease(system.Config, () => new LsslCpu(system.Config));
                lease.Kernel.Run(scheduler, mode, system, batch, length, u, y, ((HostState)state).Span, initialStateIsZero, needFinalState);
                break;
            }
            default:
            {
                using var lease = LsslCall.LeaseGpu(device, scheduler, system, mode, length);
                lease.Kernel.Run(mode, system, batch, length, u, y, ((GpuState)state).View, initialStateIsZero, needFinalState);
                break;
            }
        }
    }

    /// <summary>The float64 oracle as a backend.</summary>
    private static void RunReference(LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<float> y, HostState state)
    {
        using var run = Float64Run.Begin(state.Span, y.Length);
        LsslReference.Forward(system, batch, length, u, run.Output, run.State);
        run.End(y, state.Span);
    }
}

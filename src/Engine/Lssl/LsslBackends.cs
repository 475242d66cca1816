using System.Buffers;
using Engine.Kernels.Lssl;

namespace Engine;

/// <summary>Sends a validated LSSL call to the device's backend. u and y are fp32 here.</summary>
internal static class LsslBackends
{
    public static void Run(EngineDevice device, LsslSystem system, LsslMode mode, int batch, int length,
        ReadOnlySpan<float> u, Span<float> y, DeviceState state, bool initialStateIsZero, bool needFinalState)
    {
        switch (device.Backend)
        {
            case Backend.Reference:
                RunReference(system, batch, length, u, y, (HostState)state);
                break;
            case Backend.Cpu:
            {
                using var lease = device.Lease(system.Config, () => new LsslCpu(system.Config, device.Scheduler));
                lease.Kernel.Run(mode, system, batch, length, u, y, ((HostState)state).Span, initialStateIsZero, needFinalState);
                break;
            }
            default:
            {
                // K̄ is built on the device's CPU scheduler; the GPU kernel then finds it made.
                if (mode == LsslMode.Conv) system.ConvKernel(length, device.Scheduler);
                using var lease = device.Lease(system.Config, () => new LsslGpu(system.Config, device.Gpu));
                lease.Kernel.Run(mode, system, batch, length, u, y, ((GpuState)state).View, initialStateIsZero, needFinalState);
                break;
            }
        }
    }

    /// <summary>The float64 oracle as a backend: state and output go through double.</summary>
    private static void RunReference(LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<float> y, HostState state)
    {
        var s = ArrayPool<double>.Shared.Rent(state.Length);
        var o = ArrayPool<double>.Shared.Rent(y.Length);
        try
        {
            var sd = s.AsSpan(0, state.Length);
            for (int i = 0; i < sd.Length; i++) sd[i] = state.Span[i];
            LsslReference.Forward(system, batch, length, u, o.AsSpan(0, y.Length), sd);
            for (int i = 0; i < y.Length; i++) y[i] = (float)o[i];
            for (int i = 0; i < sd.Length; i++) state.Span[i] = (float)sd[i];
        }
        finally
        {
            ArrayPool<double>.Shared.Return(s);
            ArrayPool<double>.Shared.Return(o);
        }
    }
}

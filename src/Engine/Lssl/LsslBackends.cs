using System.Buffers;
using Engine.Kernels.Common;
using Engine.Kernels.Lssl;

namespace Engine;

/// <summary>Sends a validated LSSL call to the device's backend. u and y are fp32 here.</summary>
internal static class LsslBackends
{
    /// <summary>
    /// Runs the call; returns the final state's check where the GPU keeps it (with <paramref name="needFinalState"/>, made on the
    /// device: the state is not read back), null where it passed or lies on the host, for the caller to check there.
    /// </summary>
    public static GpuCheckFailure? Run(EngineDevice device, IWorkScheduler scheduler, LsslSystem system, LsslMode mode, int batch, int length,
        ReadOnlySpan<float> u, Span<float> y, DeviceState state, bool initialStateIsZero, bool needFinalState)
    {
        switch (device.Backend)
        {
            case Backend.Reference:
                RunReference(system, batch, length, u, y, (HostState)state);
                break;
            case Backend.Cpu:
            {
                using var lease = device.Lease(system.Config, static (c, _) => new LsslCpu(c));
                // The conv mode's state pass reads u after the kernel wrote y: y written over u (an in-place call) reads a copy.
                float[]? copy = null;
                if (mode == LsslMode.Conv && u.Overlaps(y))
                {
                    copy = ArrayPool<float>.Shared.Rent(u.Length);
                    u.CopyTo(copy);
                    u = copy.AsSpan(0, u.Length);
                }
                try { lease.Kernel.Run(scheduler, mode, system, batch, length, u, y, ((HostState)state).Span, initialStateIsZero, needFinalState); }
                finally { if (copy is not null) ArrayPool<float>.Shared.Return(copy); }
                break;
            }
            default:
            {
                using var lease = LsslCall.LeaseGpu(device, scheduler, system, mode, length);
                var view = ((GpuState)state).View;
                lease.Kernel.Run(mode, system, batch, length, u, y, view, initialStateIsZero, needFinalState);
                if (!needFinalState) return null;
                using (device.Gpu.Enter()) return lease.Kernel.Buffers.Checks.CheckNow(view, DeviceCall.FinalState, ValueRule.Finite);
            }
        }
        return null;
    }

    /// <summary>The float64 oracle as a backend.</summary>
    private static void RunReference(LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<float> y, HostState state)
    {
        using var run = Float64Run.Begin(state.Span, y.Length);
        LsslReference.Forward(system, batch, length, u, run.Output, run.State);
        run.End(y, state.Span);
    }
}

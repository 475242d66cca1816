using System.Buffers;
using Engine.Kernels.Gla;

namespace Engine;

/// <summary>Sends a validated GLA call to the device's backend. Inputs and output are fp32 here.</summary>
internal static class GlaBackends
{
    public static void Run(EngineDevice device, GlaCall call, AttentionMode mode,
        ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> g,
        Span<float> output, DeviceState state)
    {
        switch (device.Backend)
        {
            case Backend.Reference:
                RunReference(call, q, k, v, g, output, (HostState)state);
                break;
            case Backend.Cpu:
            {
                using var lease = device.Lease(call.Config, () => new GlaCpu(call.Config, device.Scheduler));
                var s = ((HostState)state).Span;
                if (mode == AttentionMode.Chunked) lease.Kernel.Chunked(call.Sequences, q, k, v, g, output, s);
                else lease.Kernel.Recurrent(call.Sequences, q, k, v, g, output, s);
                break;
            }
            default:
            {
                using var lease = device.Lease(call.Config, () => new GlaGpu(call.Config, device.Gpu));
                lease.Kernel.Run(mode == AttentionMode.Chunked, call.Sequences, q, k, v, g, output, ((GpuState)state).View);
                break;
            }
        }
    }

    /// <summary>The float64 oracle as a backend: state and output go through double.</summary>
    private static void RunReference(GlaCall call, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, HostState state)
    {
        var s = ArrayPool<double>.Shared.Rent(state.Length);
        var o = ArrayPool<double>.Shared.Rent(output.Length);
        try
        {
            var sd = s.AsSpan(0, state.Length);
            for (int i = 0; i < sd.Length; i++) sd[i] = state.Span[i];
            GlaReference.Forward(call.Config, call.Sequences, q, k, v, g, o.AsSpan(0, output.Length), sd);
            for (int i = 0; i < output.Length; i++) output[i] = (float)o[i];
            for (int i = 0; i < sd.Length; i++) state.Span[i] = (float)sd[i];
        }
        finally
        {
            ArrayPool<double>.Shared.Return(s);
            ArrayPool<double>.Shared.Return(o);
        }
    }
}

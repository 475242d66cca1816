using System.Buffers;
using Engine.Kernels.DeltaRule;

namespace Engine;

/// <summary>Sends a validated delta-rule call to the device's backend. Inputs and output are fp32 here.</summary>
internal static class DeltaRuleBackends
{
    public static void Run(EngineDevice device, DeltaRuleCall call, AttentionMode mode,
        ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> beta, ReadOnlySpan<float> g,
        Span<float> output, DeviceState state)
    {
        switch (device.Backend)
        {
            case Backend.Reference:
                RunReference(call, q, k, v, beta, g, output, (HostState)state);
                break;
            case Backend.Cpu:
            {
                using var lease = device.Lease(call.Config, () => new DeltaRuleCpu(call.Config, device.Scheduler));
                var s = ((HostState)state).Span;
                if (mode == AttentionMode.Chunked) lease.Kernel.Chunked(call.Sequences, q, k, v, beta, g, output, s);
                else lease.Kernel.Recurrent(call.Sequences, q, k, v, beta, g, output, s);
                break;
            }
            default:
            {
                using var lease = device.Lease(call.Config, () => new DeltaRuleGpu(call.Config, device.Gpu));
                lease.Kernel.Run(mode == AttentionMode.Chunked, call.Sequences, q, k, v, beta, g, output, ((GpuState)state).View);
                break;
            }
        }
    }

    /// <summary>The float64 oracle as a backend: state and output go through double.</summary>
    private static void RunReference(DeltaRuleCall call, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, HostState state)
    {
        var s = ArrayPool<double>.Shared.Rent(state.Length);
        var o = ArrayPool<double>.Shared.Rent(output.Length);
        try
        {
            var sd = s.AsSpan(0, state.Length);
            for (int i = 0; i < sd.Length; i++) sd[i] = state.Span[i];
            DeltaRuleReference.Forward(call.Config, call.Sequences, q, k, v, beta, g, o.AsSpan(0, output.Length), sd);
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

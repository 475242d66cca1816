using ILGPU;
using Engine.Kernels.Common;
using System.Numerics.Tensors;
using Engine.Kernels.Lssl;

namespace Engine;

/// <summary>Shape checks and the fp32 hand-over of an LSSL call.</summary>
internal static class LsslCall
{
    /// <summary>Checks u [B, L, H] against the layer (and the session's batch) and y against u; returns (B, L).</summary>
    public static (int Batch, int Length) Describe(LsslLayer layer, ReadOnlySpan<nint> u, ReadOnlySpan<nint> y, LsslSession? session)
    {
        layer.ThrowIfDisposed();
        TensorArgs.RequireRank(u, "u", 3, "(B, L, H)");
        int b = TensorArgs.Dim(u, 0, "u"), l = TensorArgs.Dim(u, 1, "u");
        // The message is formatted only for a refusal: a decode step formats no string.
        if (u[2] != layer.Channels) TensorArgs.RequireDims(u, "u", $"(B, L, H) with the layer's H = {layer.Channels}", -1, -1, layer.Channels);
        if (session is not null && b != session.Sequences)
            throw new ArgumentException($"u: the session holds {session.Sequences} sequences, this call has batch B = {b}", "u");
        TensorArgs.RequireShape(y, "y", "(B, L, H) matching u", b, l, layer.Channels);
        TensorArgs.RequireElementCount(u, "u");
        return (b, l);
    }

    /// <summary>
    /// <see cref="Describe(LsslLayer, ReadOnlySpan{nint}, ReadOnlySpan{nint}, LsslSession?)"/> for a call on device tensors, which
    /// refuses one tensor as both u and y: the scan and conv kernels read rows of u that y has already been written over.
    /// </summary>
    public static (int Batch, int Length) Describe<T>(LsslLayer layer, DeviceTensor<T> u, DeviceTensor<T> y, LsslSession? session) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(u);
        ArgumentNullException.ThrowIfNull(y);
        var described = Describe(layer, u.Lengths, y.Lengths, session);
        DeviceAttentionTensors<T>.RequireApart(y, "y", u, "u");
        return described;
    }

    /// <summary>Converts u to fp32, checks it, runs the backend, checks that y stayed finite and writes it.</summary>
    public static void Run<T>(EngineDevice device, IWorkScheduler? scheduler, LsslLayer layer, LsslMode mode, int batch, int length,
        ReadOnlyTensorSpan<T> u, TensorSpan<T> y, DeviceState state, bool initialStateIsZero, bool needFinalState) where T : unmanaged
    {
        TensorArgs.RequireElementType<T>();
        using var uf = FloatInput.From(u);
        TensorArgs.RequireFinite(uf.Span, "u");
        using var yf = new FloatOutput<T>(y, "y");
        var stateFailure = LsslBackends.Run(device, device.SchedulerFor(scheduler), layer.System, mode, batch, length, uf.Span, yf.Span, state,
            initialStateIsZero, needFinalState);
        if (!yf.Span.IsEmpty && !float.IsFinite(TensorPrimitives.Sum<float>(yf.Span)))
        {
            for (int i = 0; i < yf.Span.Length; i++)
                if (!float.IsFinite(yf.Span[i])) throw Overflow(layer, length, yf.Span[i], i);
        }
        if (stateFailure is { } f) throw StateOverflow(layer, length, f.Value, f.Index);
        if (needFinalState && state is HostState host) RequireFiniteState(layer, length, host.Span);
        yf.Commit();
    }

    /// <summary>The final state, which y need not read (C = 0, or the conv mode's separate pass): a large input overflows it too.</summary>
    private static void RequireFiniteState(LsslLayer layer, int length, ReadOnlySpan<float> values)
    {
        if (float.IsFinite(TensorPrimitives.Sum(values))) return;
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) throw StateOverflow(layer, length, values[i], i);
    }

    private static ArgumentException StateOverflow(LsslLayer layer, int length, float value, long index) => new(
        $"u: the final state overflowed to {value} at flat index {index} over {length} steps: the input is too large for fp32 in the " +
        $"discretized system ({layer.Discretization}), which is stable (an unstable one is refused when the layer is built) but may " +
        "amplify it; scale u or B down", "u");

    /// <summary>The GPU kernels for a call from the device's pool, K̄ built first on the call's CPU scheduler for the conv mode.</summary>
    public static KernelLease<LsslGpu> LeaseGpu(EngineDevice device, IWorkScheduler? scheduler, LsslSystem system, LsslMode mode, int length)
    {
        if (mode == LsslMode.Conv) system.ConvKernel(length, device.SchedulerFor(scheduler));
        return device.Lease(system.Config, static (c, d) => new LsslGpu(c, d.Gpu));
    }

    /// <summary>The launches of a call on device tensors (under the runtime's lock): u checked, the state loaded, the kernels, y checked; then the check words read.</summary>
    public static GpuCheckFailure? RunOnDevice<T>(DeviceCall run, LsslGpu kernel, LsslLayer layer, LsslMode mode, int batch, int length,
        DeviceTensor<T> u, DeviceTensor<T> y, ArrayView<float> state, Action<DeviceCall> loadState, bool initialStateIsZero, bool needFinalState) where T : unmanaged
    {
        TensorArgs.RequireElementType<T>();
        var uf = run.Input(u, "u", nameof(LsslGpuArgs.U), ValueRule.Finite);
        loadState(run);
        var yf = run.Output(y, "y", nameof(LsslGpuArgs.Y));
        kernel.Run(mode, layer.System, batch, length, uf, yf, state, initialStateIsZero, needFinalState);
        run.CommitOutput(y, yf, "y");
        if (needFinalState) run.CheckFinalState(state);
        return run.Finish();
    }

    /// <summary>The refusal of a device call: the host check's message; y or the final state not finite from a finite u is the system's overflow.</summary>
    public static ArgumentException Refusal(LsslLayer layer, int length, GpuCheckFailure failure) => failure switch
    {
        { Name: "y", Rule: ValueRule.Finite } => Overflow(layer, length, failure.Value, failure.Index),
        { Name: DeviceCall.FinalState, Rule: ValueRule.Finite } => StateOverflow(layer, length, failure.Value, failure.Index),
        _ => failure.Refusal(),
    };

    private static ArgumentException Overflow(LsslLayer layer, int length, float value, long index) => new(
        $"u: y overflowed to {value} at flat index {index} (step {index / layer.Channels % Math.Max(length, 1)} of {length}): " +
        $"the input is too large for fp32 in the discretized system ({layer.Discretization}), which is stable (an unstable one is refused when the " +
        "layer is built) but may amplify it; scale u or B down", "u");
}

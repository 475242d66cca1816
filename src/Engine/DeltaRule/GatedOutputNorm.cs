using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gating;

namespace Engine;

/// <summary>
/// The gated RMS norm Gated DeltaNet applies to each output head (Qwen3-Next/3.5's norm before out_proj):
///   y = o / sqrt(mean(o²) + <see cref="Epsilon"/>) · Scale · act(Gate),  over each head's V values,
/// act SiLU or sigmoid. Set in <see cref="DeltaRuleOptions.OutputNorm"/>, the output is y: the CPU kernels normalize each
/// head's rows before they store them, so o itself is never written out; the reference backend normalizes the output after
/// its run in float64, the GPU backend on the host after its run with the CPU kernels' fp32 pass. Whole-sequence host calls only, as <see cref="ShortConvolution"/>.
/// </summary>
public sealed record GatedOutputNorm
{
    /// <summary>[V]: the norm's weight, finite.</summary>
    public required ReadOnlyMemory<float> Scale { get; init; }

    /// <summary>
    /// [B·T (or the packed tokens), max(Hq, Hv), V]: the gate z of this call. Not checked up front: a gate that makes the output
    /// not finite is refused by name, but with <see cref="GateActivation.Sigmoid"/> an infinite gate gives act 0 or 1 and is
    /// taken. It and <see cref="Scale"/> lie apart from the call's output and final state: a call whose output or final state
    /// shares memory with them is refused.
    /// </summary>
    public required ReadOnlyMemory<float> Gate { get; init; }

    /// <summary>Added to the mean square, finite and >= 0 (with 0 a row of zeros gives 0); default 1e-6.</summary>
    public float Epsilon { get; init; } = 1e-6f;

    /// <summary>act applied to the gate: SiLU (the default, as Gated DeltaNet) or sigmoid.</summary>
    public GateActivation Activation { get; init; } = GateActivation.Silu;
}

/// <summary>One call's output norm, checked against the call's heads and tokens.</summary>
internal sealed class NormCall(GatedOutputNorm norm, HeadLayout heads)
{
    public GatedOutputNorm Norm { get; } = norm;

    /// <summary>The norm of a call with these heads and tokens, its shapes and scalars checked; null when none.</summary>
    public static NormCall? Check(GatedOutputNorm? norm, HeadLayout heads, int tokens)
    {
        if (norm is null) return null;
        if (norm.Scale.Length != heads.ValueDim)
            throw new ArgumentException($"output norm scale: expected V = {heads.ValueDim} floats (one per value dim), got {norm.Scale.Length}", "options");
        long gate = (long)tokens * heads.OutputHeads * heads.ValueDim;
        if (norm.Gate.Length != gate)
            throw new ArgumentException($"output norm gate: expected (tokens, max(Hq, Hv), V) = ({tokens}, {heads.OutputHeads}, {heads.ValueDim}), {gate} floats; got {norm.Gate.Length}", "options");
        if (!(norm.Epsilon >= 0f) || !float.IsFinite(norm.Epsilon))
            throw new ArgumentException($"output norm epsilon must be finite and >= 0, got {norm.Epsilon}", "options");
        if (!Enum.IsDefined(norm.Activation))
            throw new ArgumentException($"output norm activation must be Silu or Sigmoid, got {(int)norm.Activation}", "options");
        TensorArgs.RequireFinite(norm.Scale.Span, "output norm scale");
        return new NormCall(norm, heads);
    }

    /// <summary>
    /// Refuses an output or a final state sharing memory with the gate or the scale: the CPU kernels write them while they
    /// read the norm, and the other backends read the norm after their run wrote them.
    /// </summary>
    public void RequireApart<T>(ReadOnlyTensorSpan<T> output, ReadOnlyTensorSpan<float> finalState)
    {
        var gate = new ReadOnlyTensorSpan<float>(Norm.Gate.Span);
        var scale = new ReadOnlyTensorSpan<float>(Norm.Scale.Span);
        TensorArgs.RequireApart(output, "output", gate, "output norm gate");
        TensorArgs.RequireApart(output, "output", scale, "output norm scale");
        TensorArgs.RequireApart(finalState, DeviceCall.FinalState, gate, "output norm gate");
        TensorArgs.RequireApart(finalState, DeviceCall.FinalState, scale, "output norm scale");
    }

    /// <summary>The kernels' view, on the pinned gate and scale.</summary>
    public unsafe GatedNormRows Rows(float* gate, float* scale) =>
        new(gate, (long)heads.OutputHeads * heads.ValueDim, scale, heads.ValueDim, Norm.Epsilon, Norm.Activation);

    /// <summary>
    /// The norm applied to a finished output [tokens, max(Hq, Hv), V]: in float64 when <paramref name="exact"/> (the reference),
    /// else by the CPU kernel (after a GPU run).
    /// </summary>
    public void ApplyAfter(Span<float> output, bool exact, IWorkScheduler scheduler)
    {
        if (!exact)
        {
            GatedRmsNormCpu.Forward(output, Norm.Gate.Span, Norm.Scale.Span, Norm.Epsilon, Norm.Activation, output, scheduler);
            return;
        }
        var exactOutput = new double[output.Length];
        GatedRmsNormReference.Forward(output, Norm.Gate.Span, Norm.Scale.Span, Norm.Epsilon, Norm.Activation, exactOutput);
        for (int i = 0; i < output.Length; i++) output[i] = (float)exactOutput[i];
    }
}

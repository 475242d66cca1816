using Engine.Kernels.Common;

namespace Engine;

/// <summary>Options every linear-attention op takes.</summary>
public abstract record AttentionOptions
{
    /// <summary>Chunked (prefill) or recurrent (decode) form; the facades' <c>Forward</c> reads it, sessions choose per call.</summary>
    public AttentionMode Mode { get; init; } = AttentionMode.Chunked;

    /// <summary>
    /// Runs this call's CPU work items; default the device's scheduler. A host hands its own pool per call here
    /// (inside ONNX Runtime: ORT's intra-op pool of the node's call).
    /// </summary>
    public IWorkScheduler? Scheduler { get; init; }

    /// <summary>
    /// How the GPU kernels multiply the chunked form's products (<see cref="Backend.Gpu"/> only: the CPU backend computes in fp32
    /// and the reference in float64 whatever this says; states and sums stay fp32 on every choice):
    /// <see cref="GpuPrecision.Fp32"/> (default) on the CUDA cores, within 1e-5 relative RMS of the float64 reference;
    /// <see cref="GpuPrecision.Tf32"/> and <see cref="GpuPrecision.Fp16"/> on tensor cores, operands rounded to tf32 or fp16, within
    /// 2e-3 (fp16 takes the chunk's own products only, the state's stay tf32, and holds while the scaled queries, keys, scores and
    /// values stay below 65520 in magnitude: past that the output is not finite and the call is refused). The tensor-core
    /// choices need an accelerator with 32-lane warps (CUDA's); on another the call throws <see cref="NotSupportedException"/>.
    /// </summary>
    public GpuPrecision GpuPrecision { get; init; } = GpuPrecision.Fp32;

    /// <summary>
    /// How initialState, finalState and a session's state hold each head: key-major [N, Hv, K, V] (default) or
    /// value-major [N, Hv, V, K] (ONNX Runtime's GatedDeltaNet), read and written where they lie. The CPU kernels
    /// transpose each head while loading it into their scratch and storing it back (the token-by-token form updates it in
    /// place when no padding is needed); the GPU kernels index it transposed where they load and store it.
    /// </summary>
    public StateLayout StateLayout { get; init; } = StateLayout.KeyMajor;

    /// <summary>The option checked: a defined <see cref="AttentionMode"/>.</summary>
    internal AttentionMode CheckedMode => Enum.IsDefined(Mode)
        ? Mode
        : throw new ArgumentException($"mode must be Chunked or Recurrent, got {(int)Mode}", "options");

    /// <summary>The option checked: a defined <see cref="StateLayout"/>.</summary>
    internal StateLayout CheckedStateLayout => Enum.IsDefined(StateLayout)
        ? StateLayout
        : throw new ArgumentException($"state layout must be KeyMajor or ValueMajor, got {StateLayout}", "options");

    /// <summary>The option checked: a defined <see cref="GpuPrecision"/> (the facades' ops call it when they are built).</summary>
    internal GpuPrecision CheckedGpuPrecision => Enum.IsDefined(GpuPrecision)
        ? GpuPrecision
        : throw new ArgumentException($"GpuPrecision must be one of {string.Join(", ", Enum.GetNames<GpuPrecision>())}, got {(int)GpuPrecision}", "options");
}

/// <summary>
/// One linear-attention op as the facade, the sessions and the dispatch see it: the head layout and gate form it
/// was built for, whether it reads beta, and its three kernels. GLA, Lightning and the delta rule are short
/// bindings of this class; everything else (checks, conversion, state, dispatch) is written once in
/// <see cref="AttentionCall"/>.
/// </summary>
internal abstract class AttentionOp
{
    /// <summary>The op's name in messages, e.g. "the delta rule".</summary>
    public abstract string Name { get; }

    public abstract HeadLayout Heads { get; }

    public abstract GateKind Gate { get; }

    /// <summary>Reads beta [B, T, Hv] (the delta rule).</summary>
    public abstract bool TakesBeta { get; }

    /// <summary>How the caller's state holds each head: [K, V] (default) or [V, K].</summary>
    public virtual StateLayout StateLayout => StateLayout.KeyMajor;

    /// <summary>The state's shape for this many sequences: [N, Hv, K, V], or [N, Hv, V, K] value-major.</summary>
    public nint[] StateShape(int sequences) => StateLayout == StateLayout.ValueMajor
        ? [sequences, Heads.ValueHeads, Heads.ValueDim, Heads.KeyDim]
        : [sequences, Heads.ValueHeads, Heads.KeyDim, Heads.ValueDim];

    /// <summary>The state's axes in messages.</summary>
    public string StateAxes => StateLayout == StateLayout.ValueMajor ? "(N, Hv, V, K)" : "(N, Hv, K, V)";

    /// <summary>The kernel config: value equality, so it keys the device's kernel pools.</summary>
    public abstract object Config { get; }

    /// <summary>The float64 oracle: state (<see cref="StateShape"/>) initial on entry, final on return.</summary>
    public abstract void RunReference(in AttentionBatch batch, Span<double> output, Span<double> state);

    /// <summary>The CPU kernel: state final on return, read from initialState when that is not empty.</summary>
    public abstract void RunCpu(EngineDevice device, IWorkScheduler scheduler, in AttentionBatch batch, Span<float> state, ReadOnlySpan<float> initialState);

    /// <summary>The GPU kernels from the device's pool: they run on device views (<see cref="IAttentionGpu.Run"/>), state initial on entry, final on return.</summary>
    public abstract KernelLease<IAttentionGpu> LeaseGpu(EngineDevice device);
}

/// <summary>
/// The fp32 tensors of one validated call, flat: q [tokens, Hq, K], k [tokens, Hk, K], v [tokens, Hv, V] with their token rows
/// <see cref="Rows"/> apart (dense but on the CPU backend, whose kernels read the rows of a packed projection where they lie),
/// g, beta (empty when absent), output [tokens, max(Hq, Hv), V].
/// </summary>
internal readonly ref struct AttentionBatch(bool chunked, SequenceLayout sequences,
    ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, TokenRows rows, ReadOnlySpan<float> g, ReadOnlySpan<float> beta, Span<float> output,
    ConvolutionCall? convolution = null, NormCall? norm = null)
{
    /// <summary>The short convolution the CPU kernel applies to q, k and v as it loads them (the delta rule), or null.</summary>
    public ConvolutionCall? Convolution { get; } = convolution;

    /// <summary>The gated RMS norm the CPU kernel applies to each output head's rows before it stores them (the delta rule), or null.</summary>
    public NormCall? Norm { get; } = norm;

    public bool Chunked { get; } = chunked;
    public SequenceLayout Sequences { get; } = sequences;
    public TokenRows Rows { get; } = rows;
    public ReadOnlySpan<float> Q { get; } = q;
    public ReadOnlySpan<float> K { get; } = k;
    public ReadOnlySpan<float> V { get; } = v;
    public ReadOnlySpan<float> G { get; } = g;
    public ReadOnlySpan<float> Beta { get; } = beta;
    public Span<float> Output { get; } = output;
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;

namespace Engine;

/// <summary>Options of a gated linear attention call.</summary>
public sealed record GlaOptions : AttentionOptions
{
    /// <summary>Query scale; default 1/sqrt(K).</summary>
    public float? Scale { get; init; }

    /// <summary>Tokens per chunk in <see cref="AttentionMode.Chunked"/>: 16, 32, 64 (default), 128 or 256.</summary>
    public int ChunkSize { get; init; } = 64;
}

/// <summary>
/// Gated linear attention (GLA; with a per-head gate, simple GLA / RetNet; without a gate, linear attention):
///   S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ,   o_t = S_tᵀ (scale · q_t)
/// Shapes: q [B,T,Hq,K], k [B,T,Hk,K], v [B,T,Hv,V], g [B,T,Hv,K] (per key dim) or [B,T,Hv] (per head)
/// or empty (no gate), output [B,T,max(Hq,Hv),V], states [N,Hv,K,V] fp32 ([N,Hv,V,K] with <see cref="AttentionOptions.StateLayout"/>
/// ValueMajor) with N = B, or the number of packed
/// sequences when cu_seqlens is given (then B = 1). Heads are grouped one way or the other (<see cref="HeadLayout"/>):
/// Hk = Hv with query head h reading key/value head h / (Hq / Hv), or Hq = Hk with value head h reading query/key
/// head h / (Hv / Hk). Element type float or System.Half.
/// </summary>
public static class Gla
{
    /// <summary>
    /// Runs GLA over whole sequences. initialState defaults to zeros and is read where it lies; finalState is optional
    /// and written in place (it may be the same tensor as initialState: a refused call leaves it as it was).
    /// </summary>
    /// <exception cref="ArgumentException">
    /// A tensor whose shape does not match q's (the message names it and the expected shape), heads grouped neither way,
    /// invalid options, a state sharing memory with an input or the output, non-finite inputs, log gates above 0, or an output or final
    /// state that overflows fp32 (float16 for a Half output) from finite inputs.
    /// </exception>
    public static void Forward<T>(EngineDevice device,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output,
        ReadOnlyTensorSpan<float> initialState = default, TensorSpan<float> finalState = default,
        ReadOnlySpan<int> cuSeqlens = default, GlaOptions? options = null) where T : unmanaged
    {
        options ??= new GlaOptions();
        AttentionCall.Forward(device, new AttentionTensors<T>(q, k, v, g, default, output), cuSeqlens, initialState, finalState,
            options, takesBeta: false, constantGate: false, (heads, gate) => GlaOp.Create(heads, gate, options));
    }

    /// <summary>
    /// Runs GLA over whole sequences on device tensors of this device, read and written where they lie: with the states
    /// on the device too, no data crosses between host and device. The kernels update finalState in place (loaded from
    /// initialState, or zeros; when it is initialState's tensor, it is written once the call passed). Values are checked on the device (the same refusals as
    /// for host tensors), read back once after the launches.
    /// </summary>
    public static void Forward<T>(EngineDevice device, DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T>? g,
        DeviceTensor<T> output, DeviceTensor<float>? initialState = null, DeviceTensor<float>? finalState = null,
        ReadOnlySpan<int> cuSeqlens = default, GlaOptions? options = null) where T : unmanaged
    {
        options ??= new GlaOptions();
        AttentionCall.Forward(device, DeviceAttentionTensors<T>.Of(q, k, v, g, null, output), cuSeqlens, initialState, finalState,
            options, takesBeta: false, constantGate: false, (heads, gate) => GlaOp.Create(heads, gate, options));
    }

    /// <summary>Convenience form: allocates and returns the output and the final state.</summary>
    public static AttentionResult<T> Forward<T>(EngineDevice device, Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T>? g,
        GlaOptions? options = null, Tensor<float>? initialState = null, int[]? cuSeqlens = null) where T : unmanaged
    {
        var (output, finalState) = AttentionResult<T>.Allocate(q, k, v, cuSeqlens, options);
        Forward(device, q.AsReadOnlyTensorSpan(), k.AsReadOnlyTensorSpan(), v.AsReadOnlyTensorSpan(),
            g is null ? default : g.AsReadOnlyTensorSpan(), output.AsTensorSpan(),
            initialState is null ? default : initialState.AsReadOnlyTensorSpan(), finalState.AsTensorSpan(), cuSeqlens, options);
        return new AttentionResult<T>(output, finalState);
    }

    /// <summary>The gate form a g tensor of this rank selects: 4 per key dim, 3 per head, 0 (absent) none.</summary>
    public static GateKind GateKindOf(int gateRank) => AttentionCall.GateKindOf(gateRank);
}

/// <summary>A GLA layer with its state on the device: <see cref="Prefill"/> (chunked), then <see cref="Step"/> (recurrent).</summary>
public sealed class GlaSession : AttentionSession
{
    /// <param name="sequences">How many sequences the state holds (the batch, or the packed sequence count).</param>
    /// <param name="gate">None, PerHead (every call gives g [B,T,Hv]) or PerKey (g [B,T,Hv,K]).</param>
    public GlaSession(EngineDevice device, int sequences, HeadLayout heads, GateKind gate, GlaOptions? options = null)
        : base(device, sequences, GlaOp.Create(Checked(heads), gate == GateKind.Constant
            ? throw new ArgumentException("a constant gate belongs to Lightning attention: use LightningSession", nameof(gate))
            : gate, options ??= new GlaOptions()), options)
    {
    }

    /// <summary>Runs a block of tokens in chunked form and carries the state.</summary>
    public void Prefill<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, new AttentionTensors<T>(q, k, v, g, default, output), cuSeqlens);

    /// <summary>Runs a block of tokens in chunked form on device tensors and carries the state (no host↔device copy).</summary>
    public void Prefill<T>(DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T>? g, DeviceTensor<T> output,
        ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, DeviceAttentionTensors<T>.Of(q, k, v, g, null, output), cuSeqlens);

    /// <summary>Runs tokens one at a time on device tensors and carries the state (no host↔device copy).</summary>
    public void Step<T>(DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T>? g, DeviceTensor<T> output,
        ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, DeviceAttentionTensors<T>.Of(q, k, v, g, null, output), cuSeqlens);

    /// <inheritdoc cref="Prefill{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Prefill<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T>? g, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Prefill(TensorArgs.Input(q, nameof(q)), TensorArgs.Input(k, nameof(k)), TensorArgs.Input(v, nameof(v)), g is null ? default : g.AsReadOnlyTensorSpan(), TensorArgs.Output(output, nameof(output)), cuSeqlens);

    /// <summary>Runs tokens one at a time (usually T = 1) and carries the state.</summary>
    public void Step<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, new AttentionTensors<T>(q, k, v, g, default, output), cuSeqlens);

    /// <inheritdoc cref="Step{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Step<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T>? g, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Step(TensorArgs.Input(q, nameof(q)), TensorArgs.Input(k, nameof(k)), TensorArgs.Input(v, nameof(v)), g is null ? default : g.AsReadOnlyTensorSpan(), TensorArgs.Output(output, nameof(output)), cuSeqlens);
}

/// <summary>GLA (and Lightning, its constant gate) as an attention op: the config and its three kernels.</summary>
internal sealed class GlaOp(GlaConfig config) : AttentionOp
{
    public override string Name => "GLA";
    public override HeadLayout Heads => config.Heads;
    public override GateKind Gate => config.Gate;
    public override bool TakesBeta => false;
    public override object Config => config;
    public override StateLayout StateLayout => config.StateLayout;

    /// <summary>Lightning's constant log decay per value head (−s_h); null for the other gates.</summary>
    public float[]? ConstantLogDecay => config.ConstantLogDecay;

    /// <summary>
    /// The op for these heads and gate, its options checked (the only place they are); <paramref name="chunkSizeName"/> names
    /// the chunk size in messages as the caller's options call it (Lightning's BlockSize).
    /// </summary>
    public static GlaOp Create(HeadLayout heads, GateKind gate, GlaOptions options, float[]? constantLogDecay = null, string chunkSizeName = "chunk size")
    {
        if (!Enum.IsDefined(gate)) throw new ArgumentException($"gate must be one of {string.Join(", ", Enum.GetNames<GateKind>())}, got {(int)gate}", nameof(gate));
        float scale = options.Scale ?? 1f / MathF.Sqrt(heads.KeyDim);
        if (!float.IsFinite(scale)) throw new ArgumentException($"scale must be finite, got {scale}", "options");
        if (!GlaConfig.ChunkSizes.Contains(options.ChunkSize))
            throw new ArgumentException($"{chunkSizeName} must be one of {string.Join(", ", GlaConfig.ChunkSizes)}, got {options.ChunkSize}", "options");
        return new GlaOp(new GlaConfig(heads, gate, scale, options.ChunkSize, constantLogDecay, options.CheckedGpuPrecision, options.CheckedStateLayout));
    }

    public override void RunReference(in AttentionBatch b, Span<double> output, Span<double> state) =>
        GlaReference.Forward(config, b.Sequences, b.Q, b.K, b.V, b.G, output, state);

    public override void RunCpu(EngineDevice device, IWorkScheduler scheduler, in AttentionBatch b, Span<float> state, ReadOnlySpan<float> initialState)
    {
        using var lease = device.Lease(config, static (c, _) => new GlaCpu(c));
        if (b.Chunked) lease.Kernel.Chunked(scheduler, b.Sequences, b.Q, b.K, b.V, b.G, b.Output, state, initialState, b.Rows);
        else lease.Kernel.Recurrent(scheduler, b.Sequences, b.Q, b.K, b.V, b.G, b.Output, state, initialState, b.Rows);
    }

    public override KernelLease<IAttentionGpu> LeaseGpu(EngineDevice device) => device.Lease<IAttentionGpu, GlaConfig>(config, static (c, d) => new GlaGpu(c, d.Gpu));
}

using System.Numerics.Tensors;
using ILGPU;
using Engine.Kernels.DeltaRule;

namespace Engine;

/// <summary>Options of a DeltaNet / Gated DeltaNet call.</summary>
public sealed record DeltaRuleOptions : AttentionOptions
{
    /// <summary>Query scale; default 1/sqrt(K).</summary>
    public float? Scale { get; init; }

    /// <summary>
    /// Tokens per chunk in <see cref="AttentionMode.Chunked"/>: 16, 32 or 64. Default 32: the chunk-size terms of the
    /// WY form grow with it while the three K × V products per token do not.
    /// </summary>
    public int ChunkSize { get; init; } = DefaultChunkSize;

    public const int DefaultChunkSize = 32;

    /// <summary>L2-normalize every q and k row per head inside the kernel (x / sqrt(Σ x² + <see cref="L2NormEpsilon"/>)).</summary>
    public bool QkL2Norm { get; init; }

    /// <summary>eps of the L2 normalization, finite and > 0; default 1e-6 (ONNX Runtime's GatedDeltaNet uses 1e-12).</summary>
    public float L2NormEpsilon { get; init; } = DeltaRuleConfig.DefaultL2NormEpsilon;

    /// <summary>
    /// How initialState, finalState and a session's state hold each head: key-major [N, Hv, K, V] (default) or
    /// value-major [N, Hv, V, K] (ONNX Runtime's GatedDeltaNet), read and written where they lie. The CPU kernels
    /// transpose each head while loading it into their scratch and storing it back; the GPU kernels take key-major only.
    /// </summary>
    public StateLayout StateLayout { get; init; } = StateLayout.KeyMajor;
}

/// <summary>
/// DeltaNet (no g) and Gated DeltaNet (g given), the delta rule with decay first:
///   S = diag(exp(g_t)) S;  u = β_t (v_t − Sᵀ k_t);  S = S + k_t uᵀ;  o_t = Sᵀ (scale · q_t)
/// Shapes: q [B,T,Hq,K], k [B,T,Hk,K], v [B,T,Hv,V], beta [B,T,Hv], g (log space, ≤ 0) [B,T,Hv] (one decay
/// per head, Gated DeltaNet) or [B,T,Hv,K] (one per key dim, as in Kimi Delta Attention) or empty, output [B,T,max(Hq,Hv),V],
/// states [N,Hv,K,V] fp32 ([N,Hv,V,K] with <see cref="DeltaRuleOptions.StateLayout"/> ValueMajor) with N = B, or the number of packed sequences when cu_seqlens is given (then B = 1). Heads are
/// grouped one way or the other (<see cref="HeadLayout"/>): Hk = Hv with query head h reading key/value head h / (Hq / Hv),
/// or Hq = Hk with value head h reading query/key head h / (Hv / Hk) (Qwen3-Next/3.5). Element type float
/// or System.Half. K and V are at most <see cref="DeltaRuleConfig.MaxKeyDim"/> and <see cref="DeltaRuleConfig.MaxValueDim"/>.
/// beta must be finite; (0, 1] is the stable range with unit-norm keys (each token's transition
/// I − β k kᵀ then has eigenvalues in [0, 1]); values up to 2 keep them in [−1, 1]; larger ones are
/// accepted but let the state grow.
/// </summary>
public static class DeltaRule
{
    /// <summary>
    /// Runs the delta rule over whole sequences. initialState defaults to zeros and is read where it lies; finalState
    /// is optional and written in place (it may be the same tensor as initialState).
    /// </summary>
    public static void Forward<T>(EngineDevice device,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output,
        ReadOnlyTensorSpan<float> initialState = default, TensorSpan<float> finalState = default,
        ReadOnlySpan<int> cuSeqlens = default, DeltaRuleOptions? options = null) where T : unmanaged
    {
        options ??= new DeltaRuleOptions();
        AttentionCall.Forward(device, new AttentionTensors<T>(q, k, v, g, beta, output), cuSeqlens, initialState, finalState,
            options, takesBeta: true, constantGate: false, (heads, gate) => DeltaRuleOp.Create(heads, gate, options));
    }

    /// <summary>Convenience form: allocates and returns the output and the final state.</summary>
    public static AttentionResult<T> Forward<T>(EngineDevice device, Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> beta, Tensor<T>? g,
        DeltaRuleOptions? options = null, Tensor<float>? initialState = null, int[]? cuSeqlens = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(beta);
        var (output, finalState) = AttentionResult<T>.Allocate(q, k, v, cuSeqlens);
        Forward(device, q.AsReadOnlyTensorSpan(), k.AsReadOnlyTensorSpan(), v.AsReadOnlyTensorSpan(), beta.AsReadOnlyTensorSpan(),
            g is null ? default : g.AsReadOnlyTensorSpan(), output.AsTensorSpan(),
            initialState is null ? default : initialState.AsReadOnlyTensorSpan(), finalState.AsTensorSpan(), cuSeqlens, options);
        return new AttentionResult<T>(output, finalState);
    }
}

/// <summary>A DeltaNet / Gated DeltaNet layer with its state on the device: <see cref="Prefill"/> (chunked), then <see cref="Step"/> (recurrent).</summary>
public sealed class DeltaRuleSession : AttentionSession
{
    /// <param name="sequences">How many sequences the state holds (the batch, or the packed sequence count).</param>
    /// <param name="gate">None: DeltaNet (no call gives g); PerHead: Gated DeltaNet (every call gives g [B,T,Hv]);
    /// PerKey: every call gives g [B,T,Hv,K].</param>
    public DeltaRuleSession(EngineDevice device, int sequences, HeadLayout heads, GateKind gate, DeltaRuleOptions? options = null)
        : base(device, sequences, DeltaRuleOp.Create(heads, gate, options ??= new DeltaRuleOptions()), options)
    {
    }

    /// <summary>Runs a block of tokens in chunked form and carries the state.</summary>
    public void Prefill<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, new AttentionTensors<T>(q, k, v, g, beta, output), cuSeqlens);

    /// <inheritdoc cref="Prefill{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Prefill<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> beta, Tensor<T>? g, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Prefill(q.AsReadOnlyTensorSpan(), k.AsReadOnlyTensorSpan(), v.AsReadOnlyTensorSpan(), beta.AsReadOnlyTensorSpan(),
            g is null ? default : g.AsReadOnlyTensorSpan(), output.AsTensorSpan(), cuSeqlens);

    /// <summary>Runs tokens one at a time (usually T = 1) and carries the state.</summary>
    public void Step<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, new AttentionTensors<T>(q, k, v, g, beta, output), cuSeqlens);

    /// <inheritdoc cref="Step{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Step<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> beta, Tensor<T>? g, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Step(q.AsReadOnlyTensorSpan(), k.AsReadOnlyTensorSpan(), v.AsReadOnlyTensorSpan(), beta.AsReadOnlyTensorSpan(),
            g is null ? default : g.AsReadOnlyTensorSpan(), output.AsTensorSpan(), cuSeqlens);
}

/// <summary>The delta rule as an attention op: the config and its three kernels.</summary>
internal sealed class DeltaRuleOp(DeltaRuleConfig config) : AttentionOp
{
    public override string Name => "the delta rule";
    public override HeadLayout Heads => config.Heads;
    public override GateKind Gate => config.Gate;
    public override bool TakesBeta => true;
    public override object Config => config;
    public override StateLayout StateLayout => config.StateLayout;

    /// <summary>The op for these heads and gate, its options checked (the only place they are).</summary>
    public static DeltaRuleOp Create(HeadLayout heads, GateKind gate, DeltaRuleOptions options)
    {
        if (gate is not (GateKind.None or GateKind.PerHead or GateKind.PerKey))
            throw new ArgumentException($"gate: the delta rule takes None, PerHead or PerKey, got {gate}", nameof(gate));
        if (heads.KeyDim > DeltaRuleConfig.MaxKeyDim)
            throw new ArgumentException($"q: key head dim K = {heads.KeyDim} is over the delta-rule kernels' limit of {DeltaRuleConfig.MaxKeyDim}", "q");
        if (heads.ValueDim > DeltaRuleConfig.MaxValueDim)
            throw new ArgumentException($"v: value head dim V = {heads.ValueDim} is over the delta-rule kernels' limit of {DeltaRuleConfig.MaxValueDim}", "v");
        float scale = options.Scale ?? 1f / MathF.Sqrt(heads.KeyDim);
        if (!float.IsFinite(scale)) throw new ArgumentException($"scale must be finite, got {scale}", "options");
        if (Array.IndexOf(DeltaRuleConfig.ChunkSizes, options.ChunkSize) < 0)
            throw new ArgumentException($"chunk size must be one of {string.Join(", ", DeltaRuleConfig.ChunkSizes)}, got {options.ChunkSize}", "options");
        if (!(options.L2NormEpsilon > 0f) || !float.IsFinite(options.L2NormEpsilon))
            throw new ArgumentException($"L2 normalization epsilon must be finite and > 0, got {options.L2NormEpsilon}", "options");
        if (!Enum.IsDefined(options.StateLayout))
            throw new ArgumentException($"state layout must be KeyMajor or ValueMajor, got {options.StateLayout}", "options");
        return new DeltaRuleOp(new DeltaRuleConfig(heads, gate, scale, options.ChunkSize, options.QkL2Norm, options.L2NormEpsilon, options.StateLayout));
    }

    public override void RunReference(in AttentionBatch b, Span<double> output, Span<double> state) =>
        DeltaRuleReference.Forward(config, b.Sequences, b.Q, b.K, b.V, b.Beta, b.G, output, state);

    public override void RunCpu(EngineDevice device, IWorkScheduler scheduler, in AttentionBatch b, Span<float> state, ReadOnlySpan<float> initialState)
    {
        using var lease = device.Lease(config, () => new DeltaRuleCpu(config));
        if (b.Chunked) lease.Kernel.Chunked(scheduler, b.Sequences, b.Q, b.K, b.V, b.Beta, b.G, b.Output, state, initialState);
        else lease.Kernel.Recurrent(scheduler, b.Sequences, b.Q, b.K, b.V, b.Beta, b.G, b.Output, state, initialState);
    }

    public override void RunGpu(EngineDevice device, in AttentionBatch b, ArrayView<float> state)
    {
        using var lease = device.Lease(config, () => new DeltaRuleGpu(config, device.Gpu));
        lease.Kernel.Run(b.Chunked, b.Sequences, b.Q, b.K, b.V, b.Beta, b.G, b.Output, state);
    }
}

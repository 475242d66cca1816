using System.Buffers;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
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

    /// <summary>The default <see cref="ChunkSize"/>: 32 tokens.</summary>
    public const int DefaultChunkSize = 32;

    /// <summary>L2-normalize every q and k row per head inside the kernel (x / sqrt(Σ x² + <see cref="L2NormEpsilon"/>)).</summary>
    public bool QkL2Norm { get; init; }

    /// <summary>eps of the L2 normalization, finite and > 0; default 1e-6 (ONNX Runtime's GatedDeltaNet uses 1e-12).</summary>
    public float L2NormEpsilon { get; init; } = DeltaRuleConfig.DefaultL2NormEpsilon;

    /// <summary>
    /// The short convolution q, k and v pass through first (null: none): q, k and v are then the rows before it, and the CPU
    /// kernels convolve them as they load them. Whole-sequence host calls only: device tensors, sessions and
    /// <see cref="DeltaRule.CaptureTransitions{T}"/> refuse it.
    /// </summary>
    public ShortConvolution? Convolution { get; init; }

    /// <summary>
    /// The gated RMS norm of each output head (null: none): the output is then the normalized, gated one, and the CPU kernels
    /// apply it before they store each head's rows. Whole-sequence host calls only, as <see cref="Convolution"/>.
    /// </summary>
    public GatedOutputNorm? OutputNorm { get; init; }

    /// <summary>Refuses a short convolution or an output norm where <paramref name="where"/> does not run them.</summary>
    internal void RequireHostCallOnly(string where)
    {
        if (Convolution is not null)
            throw new NotSupportedException($"options: a short convolution runs in whole-sequence calls on host tensors only, not in {where}: give the convolved q, k and v");
        if (OutputNorm is not null)
            throw new NotSupportedException($"options: an output norm runs in whole-sequence calls on host tensors only, not in {where}: normalize the output after the call");
    }
}

/// <summary>
/// DeltaNet (no g) and Gated DeltaNet (g given), the delta rule with decay first:
///   S = diag(exp(g_t)) S;  u = β_t (v_t − Sᵀ k_t);  S = S + k_t uᵀ;  o_t = Sᵀ (scale · q_t)
/// Shapes: q [B,T,Hq,K], k [B,T,Hk,K], v [B,T,Hv,V], beta [B,T,Hv], g (log space, ≤ 0) [B,T,Hv] (one decay
/// per head, Gated DeltaNet) or [B,T,Hv,K] (one per key dim, as in Kimi Delta Attention) or empty, output [B,T,max(Hq,Hv),V],
/// states [N,Hv,K,V] fp32 ([N,Hv,V,K] with <see cref="AttentionOptions.StateLayout"/> ValueMajor) with N = B, or the number of packed sequences when cu_seqlens is given (then B = 1). Heads are
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
    /// is optional and written in place (it may be the same tensor as initialState: a refused call leaves it as it was).
    /// </summary>
    /// <exception cref="ArgumentException">
    /// A tensor whose shape does not match q's (the message names it and the expected shape), heads grouped neither way,
    /// invalid options, a state sharing memory with an input or the output, non-finite inputs, log gates above 0, or an output or final
    /// state that overflows fp32 (float16 for a Half output) from finite inputs.
    /// </exception>
    public static void Forward<T>(EngineDevice device,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output,
        ReadOnlyTensorSpan<float> initialState = default, TensorSpan<float> finalState = default,
        ReadOnlySpan<int> cuSeqlens = default, DeltaRuleOptions? options = null) where T : unmanaged
    {
        options ??= new DeltaRuleOptions();
        AttentionCall.Forward(device, new AttentionTensors<T>(q, k, v, g, beta, output), cuSeqlens, initialState, finalState,
            options, takesBeta: true, constantGate: false, (heads, gate) => DeltaRuleOp.Create(heads, gate, options), options.Convolution,
            options.OutputNorm);
    }

    /// <summary>
    /// The first transitions of each sequence from <paramref name="initialState"/>, what a speculative decoder keeps to
    /// replay an accepted prefix: token t of sequence n, value head h, gives decay[n, j, h(, c)] = exp(g_t) (1 without g),
    /// keys[n, j, key head, :] = k̂_t as the recurrence uses it (L2-normalized with <see cref="DeltaRuleOptions.QkL2Norm"/>)
    /// and deltas[n, j, h, :] = β_t (v_t − Sᵀ(decay ⊙ k̂_t)), so that S_t = diag(decay) S_{t−1} + k̂_t deltaᵀ, for the first
    /// min(counts[n], capacity, length) tokens j; the rest is zero. Shapes: k [B,T,Hk,K], v [B,T,Hv,V], beta [B,T,Hv],
    /// g [B,T,Hv] or [B,T,Hv,K] or empty, initialState as <see cref="Forward{T}(EngineDevice, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlyTensorSpan{float}, TensorSpan{float}, ReadOnlySpan{int}, DeltaRuleOptions?)"/>
    /// takes it (zeros when empty), counts [N]; decay [N, C, Hv] (or [N, C, Hv, K] with a per-key g), keys [N, C, Hk, K],
    /// deltas [N, C, Hv, V], C the capacity; the destinations may be strided views.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// A tensor whose shape does not match k's, counts not one per sequence, a destination sharing an element with another or
    /// with an input, invalid options, non-finite k, v, beta or initial state, log gates above 0, or deltas that overflow fp32;
    /// a count below 0 is an <see cref="ArgumentOutOfRangeException"/>.
    /// </exception>
    /// <exception cref="NotSupportedException">Options with a <see cref="DeltaRuleOptions.Convolution"/> or an <see cref="DeltaRuleOptions.OutputNorm"/>.</exception>
    public static void CaptureTransitions<T>(ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta, ReadOnlyTensorSpan<T> g,
        ReadOnlyTensorSpan<float> initialState, ReadOnlySpan<int> counts, TensorSpan<float> decay, TensorSpan<float> keys, TensorSpan<float> deltas,
        ReadOnlySpan<int> cuSeqlens = default, DeltaRuleOptions? options = null) where T : unmanaged
    {
        options ??= new DeltaRuleOptions();
        options.RequireHostCallOnly("CaptureTransitions");
        TensorArgs.RequireElementType<T>();
        // The keys stand in for the queries: the transitions read none, and the shapes are checked as for a call.
        var call = AttentionCall.Describe(new AttentionTensors<T>(k, k, v, g, beta, default), cuSeqlens, takesBeta: true, constantGate: false, output: false);
        var op = DeltaRuleOp.Create(call.Shapes.Heads, call.Gate, options);
        var config = (DeltaRuleConfig)op.Config;
        int sequences = call.Shapes.Sequences.Count, hk = config.Heads.KeyHeads, hv = config.Heads.ValueHeads;
        nint capacity = keys.Rank == 4 ? keys.Lengths[1] : -1;
        TensorArgs.RequireDims(keys.Lengths, "keys", "(N, C, Hk, K)", sequences, -1, hk, config.Heads.KeyDim);
        TensorArgs.RequireShape(deltas.Lengths, "deltas", "(N, C, Hv, V)", sequences, capacity, hv, config.Heads.ValueDim);
        if (call.Gate == GateKind.PerKey) TensorArgs.RequireShape(decay.Lengths, "decay", "(N, C, Hv, K)", sequences, capacity, hv, config.Heads.KeyDim);
        else TensorArgs.RequireShape(decay.Lengths, "decay", "(N, C, Hv)", sequences, capacity, hv);
        if (counts.Length != sequences) throw new ArgumentException($"counts: expected {sequences} values (one per sequence), got {counts.Length}", "counts");
        for (int n = 0; n < sequences; n++)
            if (counts[n] < 0) throw new ArgumentOutOfRangeException("counts", counts[n], $"counts: sequence {n}'s count must be >= 0");
        int stateLength = call.StateLength(op, initialState.Lengths, default);
        RequireDestinationsApart(decay, keys, deltas, k, v, beta, g, initialState);

        using var inputs = CallInputs.From(op, new AttentionTensors<T>(k, k, v, g, beta, default), rowsInPlace: false, ThreadPoolScheduler.CallingThread);
        using var init = FloatInput.From(initialState);
        TensorArgs.RequireFinite(init.Span, "initial_state");
        var batch = inputs.Batch(false, call.Shapes.Sequences, default);
        // A NaN or infinity of k or v is named there, not in the deltas it would reach.
        TensorArgs.RequireFinite(batch.K, "k");
        TensorArgs.RequireFinite(batch.V, "v");
        float[] zeros = init.Span.IsEmpty ? ArrayPool<float>.Shared.Rent(Math.Max(stateLength, 1)) : [];
        float[] dense = ArrayPool<float>.Shared.Rent(Math.Max(checked((int)(decay.FlattenedLength + keys.FlattenedLength + deltas.FlattenedLength)), 1));
        try
        {
            var state = init.Span.IsEmpty ? zeros.AsSpan(0, stateLength) : init.Span;
            if (init.Span.IsEmpty) zeros.AsSpan(0, stateLength).Clear();
            int nd = (int)decay.FlattenedLength, nk = (int)keys.FlattenedLength, nv = (int)deltas.FlattenedLength;
            DeltaRuleTransitions.Capture(config, call.Shapes.Sequences, (int)capacity, counts, batch.K, batch.V, batch.Beta, batch.G, state,
                dense.AsSpan(0, nd), dense.AsSpan(nd, nk), dense.AsSpan(nd + nk, nv));
            TensorArgs.RequireFinite(dense.AsSpan(0, nd + nk + nv), "deltas");
            new ReadOnlyTensorSpan<float>(dense.AsSpan(0, nd), decay.Lengths, []).CopyTo(decay);
            new ReadOnlyTensorSpan<float>(dense.AsSpan(nd, nk), keys.Lengths, []).CopyTo(keys);
            new ReadOnlyTensorSpan<float>(dense.AsSpan(nd + nk, nv), deltas.Lengths, []).CopyTo(deltas);
        }
        finally
        {
            if (zeros.Length > 0) ArrayPool<float>.Shared.Return(zeros);
            ArrayPool<float>.Shared.Return(dense);
        }
    }

    /// <summary>
    /// Refuses a destination of <see cref="CaptureTransitions{T}"/> sharing an element with another or with an input: each is
    /// written whole after the others, over what they wrote. Views interleaved in one buffer (GatedDeltaNet's state_update
    /// rows) share none and are taken. Where ranges meet, the elements compared are at most those the call reads or writes.
    /// </summary>
    private static void RequireDestinationsApart<T>(ReadOnlyTensorSpan<float> decay, ReadOnlyTensorSpan<float> keys, ReadOnlyTensorSpan<float> deltas,
        ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta, ReadOnlyTensorSpan<T> g, ReadOnlyTensorSpan<float> initialState)
    {
        TensorArgs.RequireApart(decay, "decay", keys, "keys");
        TensorArgs.RequireApart(decay, "decay", deltas, "deltas");
        TensorArgs.RequireApart(keys, "keys", deltas, "deltas");
        RequireApartFromInputs(decay, "decay", k, v, beta, g, initialState);
        RequireApartFromInputs(keys, "keys", k, v, beta, g, initialState);
        RequireApartFromInputs(deltas, "deltas", k, v, beta, g, initialState);
    }

    private static void RequireApartFromInputs<T>(ReadOnlyTensorSpan<float> destination, string name,
        ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta, ReadOnlyTensorSpan<T> g, ReadOnlyTensorSpan<float> initialState)
    {
        TensorArgs.RequireApart(destination, name, k, "k");
        TensorArgs.RequireApart(destination, name, v, "v");
        TensorArgs.RequireApart(destination, name, beta, "beta");
        TensorArgs.RequireApart(destination, name, g, "g");
        TensorArgs.RequireApart(destination, name, initialState, "initial_state");
    }

    /// <summary>Runs the delta rule on device tensors; states and checks as in <see cref="Gla.Forward{T}(EngineDevice, DeviceTensor{T}, DeviceTensor{T}, DeviceTensor{T}, DeviceTensor{T}?, DeviceTensor{T}, DeviceTensor{float}?, DeviceTensor{float}?, ReadOnlySpan{int}, GlaOptions?)"/>.</summary>
    public static void Forward<T>(EngineDevice device, DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T> beta, DeviceTensor<T>? g,
        DeviceTensor<T> output, DeviceTensor<float>? initialState = null, DeviceTensor<float>? finalState = null,
        ReadOnlySpan<int> cuSeqlens = default, DeltaRuleOptions? options = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(beta);
        options ??= new DeltaRuleOptions();
        options.RequireHostCallOnly("calls on device tensors");
        AttentionCall.Forward(device, DeviceAttentionTensors<T>.Of(q, k, v, g, beta, output), cuSeqlens, initialState, finalState,
            options, takesBeta: true, constantGate: false, (heads, gate) => DeltaRuleOp.Create(heads, gate, options));
    }

    /// <summary>Convenience form: allocates and returns the output and the final state.</summary>
    public static AttentionResult<T> Forward<T>(EngineDevice device, Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> beta, Tensor<T>? g,
        DeltaRuleOptions? options = null, Tensor<float>? initialState = null, int[]? cuSeqlens = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(beta);
        var (output, finalState) = AttentionResult<T>.Allocate(q, k, v, cuSeqlens, options);
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
        : base(device, sequences, DeltaRuleOp.Create(Checked(heads), gate, options ??= new DeltaRuleOptions()), options)
    {
        options.RequireHostCallOnly("sessions");
    }

    /// <summary>Runs a block of tokens in chunked form and carries the state.</summary>
    public void Prefill<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, new AttentionTensors<T>(q, k, v, g, beta, output), cuSeqlens);

    /// <summary>Runs a block of tokens in chunked form on device tensors and carries the state (no host↔device copy).</summary>
    public void Prefill<T>(DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T> beta, DeviceTensor<T>? g, DeviceTensor<T> output,
        ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, DeviceAttentionTensors<T>.Of(q, k, v, g, beta ?? throw new ArgumentNullException(nameof(beta)), output), cuSeqlens);

    /// <summary>Runs tokens one at a time on device tensors and carries the state (no host↔device copy).</summary>
    public void Step<T>(DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T> beta, DeviceTensor<T>? g, DeviceTensor<T> output,
        ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, DeviceAttentionTensors<T>.Of(q, k, v, g, beta ?? throw new ArgumentNullException(nameof(beta)), output), cuSeqlens);

    /// <inheritdoc cref="Prefill{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Prefill<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> beta, Tensor<T>? g, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Prefill(TensorArgs.Input(q, nameof(q)), TensorArgs.Input(k, nameof(k)), TensorArgs.Input(v, nameof(v)), TensorArgs.Input(beta, nameof(beta)),
            g is null ? default : g.AsReadOnlyTensorSpan(), TensorArgs.Output(output, nameof(output)), cuSeqlens);

    /// <summary>Runs tokens one at a time (usually T = 1) and carries the state.</summary>
    public void Step<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, new AttentionTensors<T>(q, k, v, g, beta, output), cuSeqlens);

    /// <inheritdoc cref="Step{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Step<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> beta, Tensor<T>? g, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Step(TensorArgs.Input(q, nameof(q)), TensorArgs.Input(k, nameof(k)), TensorArgs.Input(v, nameof(v)), TensorArgs.Input(beta, nameof(beta)),
            g is null ? default : g.AsReadOnlyTensorSpan(), TensorArgs.Output(output, nameof(output)), cuSeqlens);
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
        if (!DeltaRuleConfig.ChunkSizes.Contains(options.ChunkSize))
            throw new ArgumentException($"chunk size must be one of {string.Join(", ", DeltaRuleConfig.ChunkSizes)}, got {options.ChunkSize}", "options");
        if (!(options.L2NormEpsilon > 0f) || !float.IsFinite(options.L2NormEpsilon))
            throw new ArgumentException($"L2 normalization epsilon must be finite and > 0, got {options.L2NormEpsilon}", "options");
        return new DeltaRuleOp(new DeltaRuleConfig(heads, gate, scale, options.ChunkSize, options.QkL2Norm, options.L2NormEpsilon, options.CheckedStateLayout,
            options.CheckedGpuPrecision));
    }

    public override void RunReference(in AttentionBatch b, Span<double> output, Span<double> state) =>
        DeltaRuleReference.Forward(config, b.Sequences, b.Q, b.K, b.V, b.Beta, b.G, output, state);

    public override unsafe void RunCpu(EngineDevice device, IWorkScheduler scheduler, in AttentionBatch b, Span<float> state, ReadOnlySpan<float> initialState)
    {
        using var lease = device.Lease(config, static (c, _) => new DeltaRuleCpu(c));
        var conv = b.Convolution;
        var norm = b.Norm;
        fixed (float* weights = conv is null ? default : conv.Weights, taps = conv is null ? default : conv.Taps, bias = conv is null ? default : conv.Bias, past = conv is null ? default : conv.InitialState,
            gate = norm is null ? default : norm.Norm.Gate.Span, scale = norm is null ? default : norm.Norm.Scale.Span)
        {
            var rows = conv is null ? default : conv.Rows(weights, taps, bias, past);
            var normRows = norm is null ? default : norm.Rows(gate, scale);
            if (b.Chunked) lease.Kernel.Chunked(scheduler, b.Sequences, b.Q, b.K, b.V, b.Beta, b.G, b.Output, state, initialState, b.Rows, rows, normRows);
            else lease.Kernel.Recurrent(scheduler, b.Sequences, b.Q, b.K, b.V, b.Beta, b.G, b.Output, state, initialState, b.Rows, rows, normRows);
        }
    }

    public override KernelLease<IAttentionGpu> LeaseGpu(EngineDevice device) => device.Lease<IAttentionGpu, DeltaRuleConfig>(config, static (c, d) => new DeltaRuleGpu(c, d.Gpu));
}

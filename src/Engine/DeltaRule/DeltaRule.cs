using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;

namespace Engine;

/// <summary>Options of a DeltaNet / Gated DeltaNet call.</summary>
public sealed record DeltaRuleOptions
{
    /// <summary>Query scale; default 1/sqrt(K).</summary>
    public float? Scale { get; init; }

    /// <summary>
    /// Tokens per chunk in <see cref="AttentionMode.Chunked"/>: 16, 32 or 64. Default 32: the chunk-size terms of the
    /// WY form grow with it while the three K × V products per token do not.
    /// </summary>
    public int ChunkSize { get; init; } = DefaultChunkSize;

    public const int DefaultChunkSize = 32;

    public AttentionMode Mode { get; init; } = AttentionMode.Chunked;

    /// <summary>L2-normalize every q and k row per head inside the kernel (x / sqrt(Σ x² + 1e-6)).</summary>
    public bool QkL2Norm { get; init; }
}

/// <summary>
/// DeltaNet (no g) and Gated DeltaNet (g given), the delta rule with decay first:
///   S = diag(exp(g_t)) S;  u = β_t (v_t − Sᵀ k_t);  S = S + k_t uᵀ;  o_t = Sᵀ (scale · q_t)
/// Shapes: q [B,T,Hq,K], k [B,T,Hkv,K], v [B,T,Hkv,V], beta [B,T,Hkv], g (log space, <= 0) [B,T,Hkv] (one decay
/// per head, Gated DeltaNet) or [B,T,Hkv,K] (one per key dim, as in Kimi Delta Attention) or empty, output [B,T,Hq,V], states [N,Hkv,K,V] fp32 with N = B, or the number of packed sequences when
/// cu_seqlens is given (then B = 1). Query head h reads key/value head h / (Hq / Hkv). Element type float
/// or System.Half. K and V are at most <see cref="DeltaRuleConfig.MaxKeyDim"/> and <see cref="DeltaRuleConfig.MaxValueDim"/>.
/// beta must be finite; (0, 1] is the stable range with unit-norm keys (each token's transition
/// I − β k kᵀ then has eigenvalues in [0, 1]); values up to 2 keep them in [−1, 1]; larger ones are
/// accepted but let the state grow.
/// </summary>
public static class DeltaRule
{
    /// <summary>Runs the delta rule over whole sequences. initialState defaults to zeros; finalState is optional.</summary>
    public static void Forward<T>(EngineDevice device,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output,
        ReadOnlyTensorSpan<float> initialState = default, TensorSpan<float> finalState = default,
        ReadOnlySpan<int> cuSeqlens = default, DeltaRuleOptions? options = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(device);
        options ??= new DeltaRuleOptions();
        var call = DeltaRuleCall.Describe(q.Lengths, k.Lengths, v.Lengths, beta.Lengths, g.Lengths, output.Lengths, cuSeqlens, options, expected: null);
        if (initialState.Rank != 0) TensorArgs.RequireShape(initialState.Lengths, "initial_state", "(N, Hkv, K, V)", call.StateShape);
        if (finalState.Rank != 0) TensorArgs.RequireShape(finalState.Lengths, "final_state", "(N, Hkv, K, V)", call.StateShape);

        using var state = DeviceState.Create(device, call.StateLength);
        if (initialState.Rank != 0)
        {
            using var init = FloatInput.From(initialState);
            TensorArgs.RequireFinite(init.Span, "initial_state");
            state.Load(init.Span);
        }
        DeltaRuleCall.Run(device, call, options.Mode, q, k, v, beta, g, output, state);
        if (finalState.Rank != 0) state.Store(TensorArgs.DenseSpan(finalState, "final_state"));
    }

    /// <summary>Convenience form: allocates and returns the output and the final state.</summary>
    public static AttentionResult<T> Forward<T>(EngineDevice device, Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> beta, Tensor<T>? g,
        DeltaRuleOptions? options = null, Tensor<float>? initialState = null, int[]? cuSeqlens = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(beta);
        options ??= new DeltaRuleOptions();
        TensorArgs.RequireRank(q.Lengths, "q", 4, "(B, T, Hq, K)");
        TensorArgs.RequireRank(v.Lengths, "v", 4, "(B, T, Hkv, V)");
        nint[] outputShape = [.. q.Lengths[..^1], v.Lengths[^1]];
        var call = DeltaRuleCall.Describe(q.Lengths, k.Lengths, v.Lengths, beta.Lengths, g is null ? default : g.Lengths,
            outputShape, cuSeqlens, options, expected: null);
        var output = Tensor.CreateFromShapeUninitialized<T>(outputShape);
        var finalState = Tensor.CreateFromShapeUninitialized<float>(call.StateShape);
        Forward(device, q.AsReadOnlyTensorSpan(), k.AsReadOnlyTensorSpan(), v.AsReadOnlyTensorSpan(), beta.AsReadOnlyTensorSpan(),
            g is null ? default : g.AsReadOnlyTensorSpan(), output.AsTensorSpan(),
            initialState is null ? default : initialState.AsReadOnlyTensorSpan(), finalState.AsTensorSpan(), cuSeqlens, options);
        return new AttentionResult<T>(output, finalState);
    }
}

/// <summary>
/// A DeltaNet / Gated DeltaNet layer with its recurrent state kept on the device: prefill a prompt
/// (chunked), then decode token by token (recurrent), the state carried between calls.
/// </summary>
public sealed class DeltaRuleSession : StatefulSession
{
    private readonly DeltaRuleOptions _options;

    /// <param name="sequences">How many sequences the state holds (the batch, or the packed sequence count).</param>
    /// <param name="gate">None: DeltaNet (no call gives g); PerHead: Gated DeltaNet (every call gives g [B,T,Hkv]);
    /// PerKey: every call gives g [B,T,Hkv,K].</param>
    public DeltaRuleSession(EngineDevice device, int sequences, HeadLayout heads, GateKind gate, DeltaRuleOptions? options = null)
        : this(device, sequences, DeltaRuleCall.MakeConfig(heads, gate, options ?? new DeltaRuleOptions()), options ?? new DeltaRuleOptions())
    {
    }

    /// <summary>The config is made (and checked) before the base allocates the state.</summary>
    private DeltaRuleSession(EngineDevice device, int sequences, DeltaRuleConfig config, DeltaRuleOptions options)
        : base(device, [sequences, config.Heads.KvHeads, config.Heads.KeyDim, config.Heads.ValueDim], "(N, Hkv, K, V)")
    {
        _options = options;
        Config = config;
    }

    public DeltaRuleConfig Config { get; }

    /// <summary>Runs a block of tokens in chunked form and carries the state.</summary>
    public void Prefill<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, q, k, v, beta, g, output, cuSeqlens);

    /// <summary>Runs tokens one at a time (usually T = 1) and carries the state.</summary>
    public void Step<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, q, k, v, beta, g, output, cuSeqlens);

    private void Run<T>(AttentionMode mode, ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v,
        ReadOnlyTensorSpan<T> beta, ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens) where T : unmanaged
    {
        var call = DeltaRuleCall.Describe(q.Lengths, k.Lengths, v.Lengths, beta.Lengths, g.Lengths, output.Lengths, cuSeqlens, _options, this);
        DeltaRuleCall.Run(Device, call, mode, q, k, v, beta, g, output, State);
    }
}

/// <summary>A validated delta-rule call: the config, where the sequences lie, and the state it needs.</summary>
internal sealed record DeltaRuleCall(DeltaRuleConfig Config, SequenceLayout Sequences)
{
    public long StateLength => Sequences.Count * Config.Heads.StatePerSequence;

    public nint[] StateShape => [Sequences.Count, Config.Heads.KvHeads, Config.Heads.KeyDim, Config.Heads.ValueDim];

    public static DeltaRuleConfig MakeConfig(HeadLayout heads, GateKind gate, DeltaRuleOptions options)
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
        return new DeltaRuleConfig(heads, gate, scale, options.ChunkSize, options.QkL2Norm);
    }

    /// <summary>Checks every shape against q and, for a session, against the session's config.</summary>
    public static DeltaRuleCall Describe(ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v, ReadOnlySpan<nint> beta,
        ReadOnlySpan<nint> g, ReadOnlySpan<nint> output, ReadOnlySpan<int> cuSeqlens, DeltaRuleOptions options, DeltaRuleSession? expected)
    {
        var shapes = AttentionShapes.Check(q, k, v, output, cuSeqlens);
        TensorArgs.RequireShape(beta, "beta", "(B, T, Hkv)", shapes.PerHeadShape);
        var heads = shapes.Heads;
        var gate = Gla.GateKindOf(g.Length);
        if (gate == GateKind.PerHead) TensorArgs.RequireShape(g, "g", "(B, T, Hkv)", shapes.PerHeadShape);
        if (gate == GateKind.PerKey) TensorArgs.RequireShape(g, "g", "(B, T, Hkv, K)", [.. shapes.PerHeadShape, heads.KeyDim]);

        DeltaRuleConfig config;
        if (expected is null)
        {
            config = MakeConfig(heads, gate, options);
        }
        else
        {
            config = expected.Config;
            if (config.Heads != heads)
                throw new ArgumentException($"q, k, v: heads and dims (Hq {heads.QHeads}, Hkv {heads.KvHeads}, K {heads.KeyDim}, V {heads.ValueDim}) differ from the session's (Hq {config.Heads.QHeads}, Hkv {config.Heads.KvHeads}, K {config.Heads.KeyDim}, V {config.Heads.ValueDim})", "q");
            if (config.Gate != gate)
                throw new ArgumentException($"g: the session was made for gate {config.Gate}, this call gives {gate}", "g");
            if (shapes.Sequences.Count != expected.Sequences)
                throw new ArgumentException($"q: the session holds {expected.Sequences} sequences, this call has {shapes.Sequences.Count} ({(cuSeqlens.IsEmpty ? "batch B" : "cu_seqlens")})", cuSeqlens.IsEmpty ? "q" : "cu_seqlens");
        }
        return new DeltaRuleCall(config, shapes.Sequences);
    }

    /// <summary>Converts the inputs to fp32, checks beta and g and runs the backend.</summary>
    public static void Run<T>(EngineDevice device, DeltaRuleCall call, AttentionMode mode,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> beta, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output, DeviceState state) where T : unmanaged
    {
        TensorArgs.RequireElementType<T>();
        using var bf = FloatInput.From(beta);
        TensorArgs.RequireFinite(bf.Span, "beta");
        using var gf = FloatInput.From(g);
        // Checked before the run (the CPU kernels check again as they load them): a refused call leaves a session's state as it was.
        if (call.Config.Gate != GateKind.None) LogGates.Require(gf.Span, "g");
        using var qf = FloatInput.From(q);
        using var kf = FloatInput.From(k);
        using var vf = FloatInput.From(v);
        using var of = new FloatOutput<T>(output, "output");
        DeltaRuleBackends.Run(device, call, mode, qf.Span, kf.Span, vf.Span, bf.Span, gf.Span, of.Span, state);
        of.Commit();
    }
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;

namespace Engine;

/// <summary>Options of a gated linear attention call.</summary>
public sealed record GlaOptions
{
    /// <summary>Query scale; default 1/sqrt(K).</summary>
    public float? Scale { get; init; }

    /// <summary>Tokens per chunk in <see cref="AttentionMode.Chunked"/>: 16, 32, 64 (default), 128 or 256.</summary>
    public int ChunkSize { get; init; } = 64;

    public AttentionMode Mode { get; init; } = AttentionMode.Chunked;
}

/// <summary>
/// Gated linear attention (GLA; with a per-head gate, simple GLA / RetNet; without a gate, linear attention):
///   S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ,   o_t = S_tᵀ (scale · q_t)
/// Shapes: q [B,T,Hq,K], k [B,T,Hkv,K], v [B,T,Hkv,V], g [B,T,Hkv,K] (per key dim) or [B,T,Hkv] (per head)
/// or empty (no gate), output [B,T,Hq,V], states [N,Hkv,K,V] fp32 with N = B, or the number of packed
/// sequences when cu_seqlens is given (then B = 1). Element type float or System.Half.
/// </summary>
public static class Gla
{
    /// <summary>Runs GLA over whole sequences. initialState defaults to zeros; finalState is optional.</summary>
    public static void Forward<T>(EngineDevice device,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output,
        ReadOnlyTensorSpan<float> initialState = default, TensorSpan<float> finalState = default,
        ReadOnlySpan<int> cuSeqlens = default, GlaOptions? options = null) where T : unmanaged
        => Forward(device, q, k, v, g, output, initialState, finalState, cuSeqlens, options ?? new GlaOptions(), constantLogDecay: null);

    /// <summary>Also the core of Lightning attention, whose constant per-head decay replaces g.</summary>
    internal static void Forward<T>(EngineDevice device,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output, ReadOnlyTensorSpan<float> initialState, TensorSpan<float> finalState,
        ReadOnlySpan<int> cuSeqlens, GlaOptions options, float[]? constantLogDecay) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(device);
        var call = GlaCall.Describe(q.Lengths, k.Lengths, v.Lengths, g.Lengths, output.Lengths, cuSeqlens, options, expected: null, constantLogDecay);
        var stateShape = call.StateShape;
        if (initialState.Rank != 0) TensorArgs.RequireShape(initialState.Lengths, "initial_state", "(N, Hkv, K, V)", stateShape);
        if (finalState.Rank != 0) TensorArgs.RequireShape(finalState.Lengths, "final_state", "(N, Hkv, K, V)", stateShape);

        using var state = DeviceState.Create(device, call.StateLength);
        if (initialState.Rank != 0)
        {
            using var init = FloatInput.From(initialState);
            TensorArgs.RequireFinite(init.Span, "initial_state");
            state.Load(init.Span);
        }
        GlaCall.Run(device, call, options.Mode, q, k, v, g, output, state);
        if (finalState.Rank != 0) state.Store(TensorArgs.DenseSpan(finalState, "final_state"));
    }

    /// <summary>Convenience form: allocates and returns the output and the final state.</summary>
    public static AttentionResult<T> Forward<T>(EngineDevice device, Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T>? g,
        GlaOptions? options = null, Tensor<float>? initialState = null, int[]? cuSeqlens = null) where T : unmanaged
        => Forward(device, q, k, v, g, options ?? new GlaOptions(), initialState, cuSeqlens, constantLogDecay: null);

    internal static AttentionResult<T> Forward<T>(EngineDevice device, Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T>? g,
        GlaOptions options, Tensor<float>? initialState, int[]? cuSeqlens, float[]? constantLogDecay) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        TensorArgs.RequireRank(q.Lengths, "q", 4, "(B, T, Hq, K)");
        TensorArgs.RequireRank(v.Lengths, "v", 4, "(B, T, Hkv, V)");
        var call = GlaCall.Describe(q.Lengths, k.Lengths, v.Lengths, g is null ? default : g.Lengths,
            [.. q.Lengths[..^1], v.Lengths[^1]], cuSeqlens, options, expected: null, constantLogDecay);
        var output = Tensor.CreateFromShapeUninitialized<T>([.. q.Lengths[..^1], v.Lengths[^1]]);
        var finalState = Tensor.CreateFromShapeUninitialized<float>(call.StateShape);
        Forward(device, q.AsReadOnlyTensorSpan(), k.AsReadOnlyTensorSpan(), v.AsReadOnlyTensorSpan(),
            g is null ? default : g.AsReadOnlyTensorSpan(), output.AsTensorSpan(),
            initialState is null ? default : initialState.AsReadOnlyTensorSpan(), finalState.AsTensorSpan(), cuSeqlens, options, constantLogDecay);
        return new AttentionResult<T>(output, finalState);
    }

    /// <summary>The gate form a g tensor of this rank selects: 4 per key dim, 3 per head, 0 (absent) none.</summary>
    public static GateKind GateKindOf(int gateRank) => gateRank switch
    {
        0 => GateKind.None,
        3 => GateKind.PerHead,
        4 => GateKind.PerKey,
        _ => throw new ArgumentException($"g: expected rank 4 (B, T, Hkv, K) for a per-key gate, rank 3 (B, T, Hkv) for a per-head gate, or no tensor; got rank {gateRank}", "g"),
    };
}

/// <summary>
/// A GLA layer with its recurrent state kept on the device: prefill a prompt (chunked), then decode
/// token by token (recurrent), the state carried between calls. One interface for both modes.
/// </summary>
public sealed class GlaSession : StatefulSession
{
    private readonly GlaOptions _options;

    /// <param name="sequences">How many sequences the state holds (the batch, or the packed sequence count).</param>
    public GlaSession(EngineDevice device, int sequences, HeadLayout heads, GateKind gate, GlaOptions? options = null)
        : this(device, sequences, GlaCall.MakeConfig(heads, gate == GateKind.Constant
            ? throw new ArgumentException("a constant gate belongs to Lightning attention: use LightningSession", nameof(gate))
            : gate, options ?? new GlaOptions(), constantLogDecay: null), options ?? new GlaOptions())
    {
    }

    private GlaSession(EngineDevice device, int sequences, GlaConfig config, GlaOptions options)
        : base(device, [sequences, config.Heads.KvHeads, config.Heads.KeyDim, config.Heads.ValueDim], "(N, Hkv, K, V)")
    {
        _options = options;
        Config = config;
    }

    public GlaConfig Config { get; }

    /// <summary>Runs a block of tokens in chunked form and carries the state.</summary>
    public void Prefill<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, q, k, v, g, output, cuSeqlens);

    /// <summary>Runs tokens one at a time (usually T = 1) and carries the state.</summary>
    public void Step<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, q, k, v, g, output, cuSeqlens);

    private void Run<T>(AttentionMode mode, ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v,
        ReadOnlyTensorSpan<T> g, TensorSpan<T> output, ReadOnlySpan<int> cuSeqlens) where T : unmanaged
    {
        var call = GlaCall.Describe(q.Lengths, k.Lengths, v.Lengths, g.Lengths, output.Lengths, cuSeqlens, _options, (Config, Sequences), Config.ConstantLogDecay);
        GlaCall.Run(Device, call, mode, q, k, v, g, output, State);
    }
}

/// <summary>A validated GLA call: the config, where the sequences lie, and the state it needs.</summary>
internal sealed record GlaCall(GlaConfig Config, SequenceLayout Sequences)
{
    public long StateLength => Sequences.Count * Config.Heads.StatePerSequence;

    public nint[] StateShape => [Sequences.Count, Config.Heads.KvHeads, Config.Heads.KeyDim, Config.Heads.ValueDim];

    public static GlaConfig MakeConfig(HeadLayout heads, GateKind gate, GlaOptions options, float[]? constantLogDecay)
    {
        float scale = options.Scale ?? 1f / MathF.Sqrt(heads.KeyDim);
        if (!float.IsFinite(scale)) throw new ArgumentException($"scale must be finite, got {scale}", "options");
        if (Array.IndexOf(GlaConfig.ChunkSizes, options.ChunkSize) < 0)
            throw new ArgumentException($"chunk size must be one of {string.Join(", ", GlaConfig.ChunkSizes)}, got {options.ChunkSize}", "options");
        return new GlaConfig(heads, gate, scale, options.ChunkSize, constantLogDecay);
    }

    /// <summary>Checks every shape against q and, for a session, against the session's config.</summary>
    public static GlaCall Describe(ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v, ReadOnlySpan<nint> g,
        ReadOnlySpan<nint> output, ReadOnlySpan<int> cuSeqlens, GlaOptions options, (GlaConfig Config, int Sequences)? expected,
        float[]? constantLogDecay = null)
    {
        var shapes = AttentionShapes.Check(q, k, v, output, cuSeqlens);
        var (b, t, heads, layout) = shapes;
        int hkv = heads.KvHeads, kd = heads.KeyDim;
        GateKind gate;
        if (constantLogDecay is not null)
        {
            if (g.Length != 0) throw new ArgumentException("g: a constant decay takes no gate tensor (its decay comes from the slopes)", "g");
            gate = GateKind.Constant;
        }
        else
        {
            gate = Gla.GateKindOf(g.Length);
            if (gate == GateKind.PerKey) TensorArgs.RequireShape(g, "g", "(B, T, Hkv, K)", b, t, hkv, kd);
            if (gate == GateKind.PerHead) TensorArgs.RequireShape(g, "g", "(B, T, Hkv)", b, t, hkv);
        }

        GlaConfig config;
        if (expected is null)
        {
            config = MakeConfig(heads, gate, options, constantLogDecay);
        }
        else
        {
            config = expected.Value.Config;
            if (config.Heads != heads)
                throw new ArgumentException($"q, k, v: heads and dims (Hq {heads.QHeads}, Hkv {hkv}, K {kd}, V {heads.ValueDim}) differ from the session's (Hq {config.Heads.QHeads}, Hkv {config.Heads.KvHeads}, K {config.Heads.KeyDim}, V {config.Heads.ValueDim})", "q");
            if (config.Gate != gate)
                throw new ArgumentException($"g: the session was made for gate {config.Gate}, this call gives {gate}", "g");
            if (layout.Count != expected.Value.Sequences)
                throw new ArgumentException($"q: the session holds {expected.Value.Sequences} sequences, this call has {layout.Count} ({(cuSeqlens.IsEmpty ? "batch B" : "cu_seqlens")})", cuSeqlens.IsEmpty ? "q" : "cu_seqlens");
        }
        return new GlaCall(config, layout);
    }

    /// <summary>Converts the inputs to fp32, checks the gate values and runs the backend.</summary>
    public static void Run<T>(EngineDevice device, GlaCall call, AttentionMode mode,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, ReadOnlyTensorSpan<T> g,
        TensorSpan<T> output, DeviceState state) where T : unmanaged
    {
        TensorArgs.RequireElementType<T>();
        using var qf = FloatInput.From(q);
        using var kf = FloatInput.From(k);
        using var vf = FloatInput.From(v);
        using var gf = FloatInput.From(g);
        // Checked before the run (the CPU kernels check again as they load them): a refused call leaves a session's state as it was.
        if (call.Config.Gate is GateKind.PerHead or GateKind.PerKey) LogGates.Require(gf.Span, "g");
        using var of = new FloatOutput<T>(output, "output");
        GlaBackends.Run(device, call, mode, qf.Span, kf.Span, vf.Span, gf.Span, of.Span, state);
        of.Commit();
    }
}

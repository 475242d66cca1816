using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>The tensors of one LinearAttention call, checked against the node: batch, length, head dims, decay and beta forms.</summary>
internal readonly struct LinearAttentionCall
{
    public int B { get; init; }
    public int T { get; init; }
    public int Dk { get; init; }
    public int Dv { get; init; }
    public OrtTensorView Query { get; init; }
    public OrtTensorView Key { get; init; }
    public OrtTensorView Value { get; init; }
    public OrtTensorView? PastState { get; init; }
    public OrtTensorView? Decay { get; init; }
    public OrtTensorView? Beta { get; init; }
    public bool DecayPerKey { get; init; }
    public bool BetaPerHead { get; init; }
    public OrtTensorView Output { get; init; }
    public OrtTensorView? PresentState { get; init; }

    public static LinearAttentionCall Describe(LinearAttentionConfig c, KernelContext context)
    {
        var q = context.Input(LinearAttentionSignature.Query) ?? throw Missing(c, "query");
        var k = context.Input(LinearAttentionSignature.Key) ?? throw Missing(c, "key");
        var v = context.Input(LinearAttentionSignature.Value) ?? throw Missing(c, "value");
        var past = context.Input(LinearAttentionSignature.PastState);
        var decay = context.Input(LinearAttentionSignature.Decay);
        var beta = context.Input(LinearAttentionSignature.Beta);

        Rank(c, q, "query", 3);
        Rank(c, k, "key", 3);
        Rank(c, v, "value", 3);
        long b = q.Dims[0], t = q.Dims[1];
        if (q.Dims[2] % c.QHeads != 0)
            throw Bad(c, "query", $"width {q.Dims[2]} is not a multiple of q_num_heads ({c.QHeads})");
        long dk = q.Dims[2] / c.QHeads;
        Dims(c, k, "key", "(B, T, kv_num_heads·dk)", b, t, c.KvHeads * dk);
        if (v.Dims.Length == 3 && v.Dims[2] % c.KvHeads != 0)
            throw Bad(c, "value", $"width {v.Dims[2]} is not a multiple of kv_num_heads ({c.KvHeads})");
        Dims(c, v, "value", "(B, T, kv_num_heads·dv)", b, t, -1);
        long dv = v.Dims[2] / c.KvHeads;
        if (dk < 1 || dv < 1) throw Bad(c, dk < 1 ? "query" : "value", $"head dims must be >= 1, got dk = {dk}, dv = {dv}");
        bool perKey = false, perHead = false;
        if (decay is OrtTensorView g)
        {
            Rank(c, g, "decay", 3);
            perKey = g.Dims[2] == c.KvHeads * dk;
            Dims(c, g, "decay", perKey ? "(B, T, kv_num_heads·dk)" : "(B, T, kv_num_heads) or (B, T, kv_num_heads·dk)", b, t, perKey ? c.KvHeads * dk : c.KvHeads);
        }
        if (beta is OrtTensorView bt)
        {
            Rank(c, bt, "beta", 3);
            perHead = bt.Dims[2] == c.KvHeads;
            Dims(c, bt, "beta", "(B, T, kv_num_heads) or (B, T, 1)", b, t, perHead ? c.KvHeads : 1);
        }
        if (past is OrtTensorView p) Dims(c, p, "past_state", "(B, kv_num_heads, dk, dv)", b, c.KvHeads, dk, dv);
        if (b > int.MaxValue || t > int.MaxValue) throw Bad(c, "query", $"shape [{b}, {t}, ...] is too large");

        var output = context.Output(0, [b, t, c.QHeads * dv]) ?? throw new ModelNodeException($"{c.Node}: ORT gave no output tensor");
        var present = context.Output(1, [b, c.KvHeads, dk, dv]);
        return new LinearAttentionCall
        {
            B = (int)b, T = (int)t, Dk = (int)dk, Dv = (int)dv,
            Query = q, Key = k, Value = v, PastState = past, Decay = decay, Beta = beta,
            DecayPerKey = perKey, BetaPerHead = perHead, Output = output, PresentState = present,
        };
    }

    private static ArgumentException Missing(LinearAttentionConfig c, string name) =>
        new($"{c.Node}: the required input {name} was not given", name);

    private static ArgumentException Bad(LinearAttentionConfig c, string name, string what) => new($"{c.Node}: {name}: {what}", name);

    private static void Rank(LinearAttentionConfig c, OrtTensorView t, string name, int rank)
    {
        if (t.Dims.Length != rank) throw Bad(c, name, $"expected rank {rank}, got rank {t.Dims.Length} with shape {Format(t.Dims)}");
    }

    private static void Dims(LinearAttentionConfig c, OrtTensorView t, string name, string dims, params long[] expected)
    {
        bool ok = t.Dims.Length == expected.Length;
        for (int i = 0; ok && i < expected.Length; i++) ok = expected[i] < 0 || t.Dims[i] == expected[i];
        if (!ok)
            throw Bad(c, name, $"expected shape [{string.Join(", ", expected.Select(e => e < 0 ? "*" : e.ToString()))}] {dims}, got {Format(t.Dims)}");
    }

    private static string Format(long[] dims) => "[" + string.Join(", ", dims) + "]";

    /// <summary>Runs an engine call, restating its argument errors in the node's terms (ONNX input names).</summary>
    public static void Guard(LinearAttentionConfig c, Action run) => NodeErrors.Guard(c.Node, OnnxName, run);

    private static string OnnxName(string? engineName) => engineName switch
    {
        "q" => "query",
        "k" => "key",
        "v" => "value",
        "g" => "decay",
        "initial_state" => "past_state",
        "final_state" => "present_state",
        null => "input",
        _ => engineName,
    };
}

/// <summary>
/// LinearAttention on the engine's kernels: linear and gated on GLA, delta and gated_delta on the delta rule (no gate,
/// per-head or per-key-dim decay for both); Lightning attention is GLA's constant decay. On the CPU the kernels run on ORT's tensors in
/// place: the state is present_state itself (past_state copied in first), so a decode step copies the state
/// once, as ORT's own kernel does. Other backends go through the op facades, which move the state to the
/// device and back.
/// </summary>
internal sealed class LinearAttentionKernel : IEngineKernel
{
    /// <summary>Chunk size when the model gives none the kernels take: measured fastest on the CPU for every rule at dk = dv = 128.</summary>
    private const int DefaultChunk = 32;

    /// <summary>Calls this short or shorter run token by token (the decode path).</summary>
    private const int RecurrentUpTo = 8;

    /// <summary>Calls with at most this many state multiply-adds per token step run on the calling thread: waking ORT's pool costs more.</summary>
    private const long InlineWork = 1 << 20;

    private readonly LinearAttentionConfig _config;
    private readonly EngineDevice _device;
    private readonly GlaOptions _glaChunked, _glaRecurrent;
    private readonly DeltaRuleOptions _deltaChunked, _deltaRecurrent;

    public LinearAttentionKernel(LinearAttentionConfig config, EngineDevice device)
    {
        _config = config;
        _device = device;
        // chunk_size is a hint: one the kernel takes is used, otherwise (or when absent) DefaultChunk.
        int glaChunk = config.ChunkSize is int g && Array.IndexOf(GlaConfig.ChunkSizes, g) >= 0 ? g : DefaultChunk;
        int deltaChunk = config.ChunkSize is int d && Array.IndexOf(DeltaRuleConfig.ChunkSizes, d) >= 0 ? d : DefaultChunk;
        _glaChunked = new GlaOptions { Scale = config.Scale, ChunkSize = glaChunk, Mode = AttentionMode.Chunked };
        _glaRecurrent = _glaChunked with { Mode = AttentionMode.Recurrent };
        _deltaChunked = new DeltaRuleOptions { Scale = config.Scale, ChunkSize = deltaChunk, Mode = AttentionMode.Chunked };
        _deltaRecurrent = _deltaChunked with { Mode = AttentionMode.Recurrent };
    }

    public void Compute(KernelContext context)
    {
        var call = LinearAttentionCall.Describe(_config, context);
        bool recurrent = call.T <= RecurrentUpTo;
        LinearAttentionCall.Guard(_config, () =>
        {
            bool inline = _device.Backend == Backend.Cpu && (long)call.B * call.T * _config.QHeads * call.Dk * call.Dv <= InlineWork;
            using (inline ? OrtParallelScheduler.Inline() : default)
            {
                if (LinearAttentionSignature.UsesBeta(_config.Rule)) RunDelta(call, recurrent ? _deltaRecurrent : _deltaChunked);
                else RunGla(call, recurrent ? _glaRecurrent : _glaChunked);
            }
        });
    }

    public void Dispose() { }

    private void RunGla(in LinearAttentionCall call, GlaOptions options)
    {
        int b = call.B, t = call.T, hq = _config.QHeads, hkv = _config.KvHeads, dk = call.Dk, dv = call.Dv;
        var q = call.Query.AsReadOnlyTensor<float>(b, t, hq, dk);
        var k = call.Key.AsReadOnlyTensor<float>(b, t, hkv, dk);
        var v = call.Value.AsReadOnlyTensor<float>(b, t, hkv, dv);
        var g = call.Decay is OrtTensorView decay
            ? (call.DecayPerKey ? decay.AsReadOnlyTensor<float>(b, t, hkv, dk) : decay.AsReadOnlyTensor<float>(b, t, hkv))
            : default;
        var output = call.Output.AsTensor<float>(b, t, hq, dv);
        var constant = _config.ConstantLogDecay;
        if (_device.Backend != Backend.Cpu)
        {
            Gla.Forward(_device, q, k, v, g, output, PastState(call), PresentState(call), default, options, constant);
            return;
        }
        var gla = GlaCall.Describe(q.Lengths, k.Lengths, v.Lengths, g.Lengths, output.Lengths, default, options, expected: null, constant);
        // The kernel checks the gates as it loads them (no pass of its own over a (B, T, Hkv·dk) decay): a refused
        // call has written only present_state and output, which ORT drops, and past_state is never written.
        var gates = Values(call.Decay);
        using var lease = _device.Lease(gla.Config, () => new GlaCpu(gla.Config, _device.Scheduler));
        using var state = CallState.Load(call, gla.StateLength);
        if (options.Mode == AttentionMode.Chunked)
            lease.Kernel.Chunked(gla.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), gates, call.Output.AsSpan<float>(), state.Span, state.Initial);
        else
            lease.Kernel.Recurrent(gla.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), gates, call.Output.AsSpan<float>(), state.Span, state.Initial);
    }

    private void RunDelta(in LinearAttentionCall call, DeltaRuleOptions options)
    {
        int b = call.B, t = call.T, hq = _config.QHeads, hkv = _config.KvHeads, dk = call.Dk, dv = call.Dv;
        var q = call.Query.AsReadOnlyTensor<float>(b, t, hq, dk);
        var k = call.Key.AsReadOnlyTensor<float>(b, t, hkv, dk);
        var v = call.Value.AsReadOnlyTensor<float>(b, t, hkv, dv);
        var g = call.Decay is OrtTensorView decay
            ? (call.DecayPerKey ? decay.AsReadOnlyTensor<float>(b, t, hkv, dk) : decay.AsReadOnlyTensor<float>(b, t, hkv))
            : default;
        var output = call.Output.AsTensor<float>(b, t, hq, dv);
        using var betas = BetaPerHead.From(call.Beta!.Value, call.BetaPerHead, hkv);
        var beta = new ReadOnlyTensorSpan<float>(betas.Span, [b, t, hkv], []);
        if (_device.Backend != Backend.Cpu)
        {
            DeltaRule.Forward(_device, q, k, v, beta, g, output, PastState(call), PresentState(call), default, options);
            return;
        }
        var delta = DeltaRuleCall.Describe(q.Lengths, k.Lengths, v.Lengths, beta.Lengths, g.Lengths, output.Lengths, default, options, expected: null);
        TensorArgs.RequireFinite(betas.Span, "beta");
        using var lease = _device.Lease(delta.Config, () => new DeltaRuleCpu(delta.Config, _device.Scheduler));
        using var state = CallState.Load(call, delta.StateLength);
        if (options.Mode == AttentionMode.Chunked)
            lease.Kernel.Chunked(delta.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), betas.Span, Values(call.Decay), call.Output.AsSpan<float>(), state.Span, state.Initial);
        else
            lease.Kernel.Recurrent(delta.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), betas.Span, Values(call.Decay), call.Output.AsSpan<float>(), state.Span, state.Initial);
    }

    private static ReadOnlySpan<float> Values(OrtTensorView? tensor) => tensor is OrtTensorView t ? t.AsReadOnlySpan<float>() : default;

    private ReadOnlyTensorSpan<float> PastState(in LinearAttentionCall call) =>
        call.PastState is OrtTensorView past ? past.AsReadOnlyTensor<float>(call.B, _config.KvHeads, call.Dk, call.Dv) : default;

    private TensorSpan<float> PresentState(in LinearAttentionCall call) =>
        call.PresentState is OrtTensorView present ? present.AsTensor<float>(call.B, _config.KvHeads, call.Dk, call.Dv) : default;
}

/// <summary>
/// The state of one call: written to present_state (or a pooled buffer when the node does not output it),
/// starting from past_state (checked finite, read by the kernels where it lies: a decode step makes one pass
/// over the state, not a copy and then a pass) or zeros.
/// </summary>
internal ref struct CallState
{
    private float[]? _scratch;

    public Span<float> Span { get; private set; }

    /// <summary>past_state when given (the kernels read the initial state from it); empty when Span starts at zero.</summary>
    public ReadOnlySpan<float> Initial { get; private set; }

    public static CallState Load(in LinearAttentionCall call, long length)
    {
        int n = checked((int)length);
        var lease = new CallState();
        if (call.PresentState is OrtTensorView present)
        {
            lease.Span = present.AsSpan<float>();
        }
        else
        {
            lease._scratch = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
            lease.Span = lease._scratch.AsSpan(0, n);
        }
        if (call.PastState is OrtTensorView past)
        {
            lease.Initial = past.AsReadOnlySpan<float>();
            if (!StateCheck.AllFinite(lease.Initial))
            {
                lease.Dispose();
                TensorArgs.RequireFinite(past.AsReadOnlySpan<float>(), "initial_state"); // names the first offender
            }
        }
        else
        {
            lease.Span.Clear();
        }
        return lease;
    }

    public void Dispose()
    {
        if (_scratch is not null) ArrayPool<float>.Shared.Return(_scratch);
        _scratch = null;
    }
}

/// <summary>beta as (B, T, Hkv): the tensor itself when it has one value per head, else (B, T, 1) repeated over the heads in a pooled buffer.</summary>
internal ref struct BetaPerHead
{
    private float[]? _expanded;

    public ReadOnlySpan<float> Span { get; private set; }

    public static BetaPerHead From(OrtTensorView beta, bool perHead, int heads)
    {
        var values = beta.AsReadOnlySpan<float>();
        if (perHead) return new BetaPerHead { Span = values };
        var expanded = ArrayPool<float>.Shared.Rent(Math.Max(values.Length * heads, 1));
        for (int i = 0; i < values.Length; i++) expanded.AsSpan(i * heads, heads).Fill(values[i]);
        return new BetaPerHead { _expanded = expanded, Span = expanded.AsSpan(0, values.Length * heads) };
    }

    public void Dispose()
    {
        if (_expanded is not null) ArrayPool<float>.Shared.Return(_expanded);
        _expanded = null;
    }
}

/// <summary>The finite check of a call's initial state, done on every decode step.</summary>
internal static class StateCheck
{
    /// <summary>False when a value is NaN or infinite.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // SIMD code: optimized from the first decode step
    public static bool AllFinite(ReadOnlySpan<float> values)
    {
        ref float start = ref MemoryMarshal.GetReference(values);
        // x − x is 0 for every finite x and NaN otherwise: the sum stays 0 exactly when all are finite.
        // Two sums, so consecutive vectors do not wait on each other.
        Vector512<float> even = default, odd = default;
        int i = 0, n = Vector512<float>.Count;
        for (; i <= values.Length - 2 * n; i += 2 * n)
        {
            var x = Vector512.LoadUnsafe(ref start, (nuint)i);
            var y = Vector512.LoadUnsafe(ref start, (nuint)(i + n));
            even += x - x;
            odd += y - y;
        }
        float tail = 0f;
        for (; i < values.Length; i++) tail += Unsafe.Add(ref start, i) - Unsafe.Add(ref start, i);
        return Vector512.Sum(even + odd) + tail == 0f;
    }
}

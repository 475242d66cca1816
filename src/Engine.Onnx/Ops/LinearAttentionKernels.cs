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
    /// <summary>float16 tensors (the node's inputs and outputs are all one type); else float32.</summary>
    public bool Half { get; init; }
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
            DecayPerKey = perKey, BetaPerHead = perHead, Output = output, PresentState = present, Half = q.ElementType == Ort.ElementFloat16,
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
/// per-head or per-key-dim decay for both); Lightning attention is GLA's constant decay. float32 on the CPU runs the
/// kernels on ORT's tensors in place: the state is present_state itself and past_state is read where it lies.
/// Other backends, and float16 tensors, go through the op facades, which convert to fp32 (the state and every
/// accumulation stay fp32) and move the state to the device and back.
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
        if (call.Half)
        {
            GlaFacade<Half>(call, options);
            return;
        }
        if (_device.Backend != Backend.Cpu)
        {
            GlaFacade<float>(call, options);
            return;
        }
        int b = call.B, t = call.T, hq = _config.QHeads, hkv = _config.KvHeads, dk = call.Dk, dv = call.Dv;
        var gla = GlaCall.Describe([b, t, hq, dk], [b, t, hkv, dk], [b, t, hkv, dv], GateShape(call), [b, t, hq, dv], default, options,
            expected: null, _config.ConstantLogDecay);
        // The kernel checks the gates as it loads them (no pass of its own over a (B, T, Hkv·dk) decay): a refused
        // call has written only present_state and output, which ORT drops, and past_state is never written.
        var gates = Values(call.Decay);
        using var lease = _device.Lease(gla.Config, () => new GlaCpu(gla.Config, _device.Scheduler));
        using var state = CallState.Load(call, gla.StateLength);
        if (options.Mode == AttentionMode.Chunked)
            lease.Kernel.Chunked(gla.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), gates, call.Output.AsSpan<float>(), state.Span, state.Initial);
        else
            lease.Kernel.Recurrent(gla.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), gates, call.Output.AsSpan<float>(), state.Span, state.Initial);
        state.CheckInitial(call, hq);
    }

    private void RunDelta(in LinearAttentionCall call, DeltaRuleOptions options)
    {
        if (call.Half)
        {
            DeltaFacade<Half>(call, options);
            return;
        }
        if (_device.Backend != Backend.Cpu)
        {
            DeltaFacade<float>(call, options);
            return;
        }
        int b = call.B, t = call.T, hq = _config.QHeads, hkv = _config.KvHeads, dk = call.Dk, dv = call.Dv;
        using var betas = BetaPerHead<float>.From(call.Beta!.Value, call.BetaPerHead, hkv);
        var delta = DeltaRuleCall.Describe([b, t, hq, dk], [b, t, hkv, dk], [b, t, hkv, dv], [b, t, hkv], GateShape(call), [b, t, hq, dv], default, options,
            expected: null);
        TensorArgs.RequireFinite(betas.Span, "beta");
        using var lease = _device.Lease(delta.Config, () => new DeltaRuleCpu(delta.Config, _device.Scheduler));
        using var state = CallState.Load(call, delta.StateLength);
        if (options.Mode == AttentionMode.Chunked)
            lease.Kernel.Chunked(delta.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), betas.Span, Values(call.Decay), call.Output.AsSpan<float>(), state.Span, state.Initial);
        else
            lease.Kernel.Recurrent(delta.Sequences, Values(call.Query), Values(call.Key), Values(call.Value), betas.Span, Values(call.Decay), call.Output.AsSpan<float>(), state.Span, state.Initial);
        state.CheckInitial(call, hq);
    }

    /// <summary>GLA through its facade: another backend, or float16 tensors.</summary>
    private void GlaFacade<T>(in LinearAttentionCall call, GlaOptions options) where T : unmanaged
    {
        int b = call.B, t = call.T, hq = _config.QHeads, hkv = _config.KvHeads, dk = call.Dk, dv = call.Dv;
        using var state = FacadeState.From(call, hkv);
        Gla.Forward(_device, call.Query.AsReadOnlyTensor<T>(b, t, hq, dk), call.Key.AsReadOnlyTensor<T>(b, t, hkv, dk),
            call.Value.AsReadOnlyTensor<T>(b, t, hkv, dv), Gates<T>(call), call.Output.AsTensor<T>(b, t, hq, dv),
            state.Initial, state.Final, default, options, _config.ConstantLogDecay);
        state.Commit();
    }

    /// <summary>The delta rule through its facade: another backend, or float16 tensors.</summary>
    private void DeltaFacade<T>(in LinearAttentionCall call, DeltaRuleOptions options) where T : unmanaged
    {
        int b = call.B, t = call.T, hq = _config.QHeads, hkv = _config.KvHeads, dk = call.Dk, dv = call.Dv;
        using var betas = BetaPerHead<T>.From(call.Beta!.Value, call.BetaPerHead, hkv);
        using var state = FacadeState.From(call, hkv);
        DeltaRule.Forward(_device, call.Query.AsReadOnlyTensor<T>(b, t, hq, dk), call.Key.AsReadOnlyTensor<T>(b, t, hkv, dk),
            call.Value.AsReadOnlyTensor<T>(b, t, hkv, dv), new ReadOnlyTensorSpan<T>(betas.Span, [b, t, hkv], []), Gates<T>(call),
            call.Output.AsTensor<T>(b, t, hq, dv), state.Initial, state.Final, default, options);
        state.Commit();
    }

    /// <summary>decay as the ops take g: (B, T, Hkv, dk) per key dim, (B, T, Hkv) per head, or absent.</summary>
    private ReadOnlyTensorSpan<T> Gates<T>(in LinearAttentionCall call) where T : unmanaged => call.Decay is OrtTensorView decay
        ? (call.DecayPerKey ? decay.AsReadOnlyTensor<T>(call.B, call.T, _config.KvHeads, call.Dk) : decay.AsReadOnlyTensor<T>(call.B, call.T, _config.KvHeads))
        : default;

    private nint[] GateShape(in LinearAttentionCall call) => call.Decay is null ? []
        : call.DecayPerKey ? [call.B, call.T, _config.KvHeads, call.Dk] : [call.B, call.T, _config.KvHeads];

    private static ReadOnlySpan<float> Values(OrtTensorView? tensor) => tensor is OrtTensorView t ? t.AsReadOnlySpan<float>() : default;
}

/// <summary>
/// past_state and present_state as the op facades take them (fp32): the tensors themselves when float32, fp32
/// copies of float16 ones (present_state written back by <see cref="Commit"/>).
/// </summary>
internal ref struct FacadeState
{
    private float[]? _past, _present;
    private OrtTensorView? _presentHalf;

    public ReadOnlyTensorSpan<float> Initial { get; private set; }
    public TensorSpan<float> Final { get; private set; }

    public static FacadeState From(in LinearAttentionCall call, int kvHeads)
    {
        nint[] shape = [call.B, kvHeads, call.Dk, call.Dv];
        var state = new FacadeState();
        if (!call.Half)
        {
            if (call.PastState is OrtTensorView past) state.Initial = past.AsReadOnlyTensor<float>(shape);
            if (call.PresentState is OrtTensorView present) state.Final = present.AsTensor<float>(shape);
            return state;
        }
        int length = call.B * kvHeads * call.Dk * call.Dv;
        if (call.PastState is OrtTensorView halfPast)
        {
            state._past = ArrayPool<float>.Shared.Rent(Math.Max(length, 1));
            TensorPrimitives.ConvertToSingle(halfPast.AsReadOnlySpan<Half>(), state._past);
            state.Initial = new ReadOnlyTensorSpan<float>(state._past.AsSpan(0, length), shape, []);
        }
        if (call.PresentState is OrtTensorView halfPresent)
        {
            state._present = ArrayPool<float>.Shared.Rent(Math.Max(length, 1));
            state._presentHalf = halfPresent;
            state.Final = new TensorSpan<float>(state._present.AsSpan(0, length), shape, []);
        }
        return state;
    }

    /// <summary>Writes the final state into a float16 present_state (nothing to do for float32).</summary>
    public readonly void Commit()
    {
        if (_presentHalf is OrtTensorView present)
            TensorPrimitives.ConvertToHalf(_present.AsSpan(0, (int)present.ElementCount), present.AsSpan<Half>());
    }

    public void Dispose()
    {
        if (_past is not null) ArrayPool<float>.Shared.Return(_past);
        if (_present is not null) ArrayPool<float>.Shared.Return(_present);
        _past = _present = null;
    }
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
        if (call.PastState is OrtTensorView past) lease.Initial = past.AsReadOnlySpan<float>();
        else lease.Span.Clear();
        return lease;
    }

    /// <summary>
    /// After the kernel ran: refuses a past_state that is not finite, naming the first offender. A NaN or infinity
    /// anywhere in it reaches every query head's output at each sequence's first token (those rows read every
    /// column of S through multiply-adds, and 0 · ∞ is NaN), so only those B · Hq · dv values are read, not the
    /// whole state, unless they are not finite or there is no token (then past_state itself).
    /// </summary>
    public readonly void CheckInitial(in LinearAttentionCall call, int queryHeads)
    {
        if (Initial.IsEmpty) return;
        var output = call.Output.AsReadOnlySpan<float>();
        long row = (long)queryHeads * call.Dv, rows = (long)call.T * row;
        bool finite = call.T > 0;
        for (int b = 0; finite && b < call.B; b++) finite = StateCheck.AllFinite(output.Slice(checked((int)(b * rows)), (int)row));
        if (!finite) TensorArgs.RequireFinite(Initial, "initial_state");
    }

    public void Dispose()
    {
        if (_scratch is not null) ArrayPool<float>.Shared.Return(_scratch);
        _scratch = null;
    }
}

/// <summary>beta as (B, T, Hkv): the tensor itself when it has one value per head, else (B, T, 1) repeated over the heads in a pooled buffer.</summary>
internal ref struct BetaPerHead<T> where T : unmanaged
{
    private T[]? _expanded;

    public ReadOnlySpan<T> Span { get; private set; }

    public static BetaPerHead<T> From(OrtTensorView beta, bool perHead, int heads)
    {
        var values = beta.AsReadOnlySpan<T>();
        if (perHead) return new BetaPerHead<T> { Span = values };
        var expanded = ArrayPool<T>.Shared.Rent(Math.Max(values.Length * heads, 1));
        for (int i = 0; i < values.Length; i++) expanded.AsSpan(i * heads, heads).Fill(values[i]);
        return new BetaPerHead<T> { _expanded = expanded, Span = expanded.AsSpan(0, values.Length * heads) };
    }

    public void Dispose()
    {
        if (_expanded is not null) ArrayPool<T>.Shared.Return(_expanded);
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

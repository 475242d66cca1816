using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;
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
    public static void Guard(LinearAttentionConfig c, Action run)
    {
        try
        {
            run();
        }
        catch (ArgumentException e) when (!e.Message.StartsWith(c.Node, StringComparison.Ordinal))
        {
            string name = OnnxName(e.ParamName);
            string message = e.Message;
            int suffix = message.IndexOf(" (Parameter '", StringComparison.Ordinal);
            if (suffix > 0) message = message[..suffix];
            if (e.ParamName is string p && message.StartsWith(p + ":", StringComparison.Ordinal)) message = name + message[p.Length..];
            throw new ArgumentException($"{c.Node}: {message}", name, e);
        }
    }

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
/// linear and gated LinearAttention on the engine's GLA kernels (no gate, per-head or per-key-dim decay).
/// On the CPU the kernels run on ORT's tensors in place: the state is present_state itself (past_state
/// copied in first), so a decode step copies the state once, as ORT's own kernel does. Other backends
/// go through the GLA facade, which moves the state to the device and back.
/// </summary>
internal sealed class LinearAttentionGlaKernel(LinearAttentionConfig config, EngineDevice device) : IEngineKernel
{
    /// <summary>Calls this short or shorter run token by token (the decode path).</summary>
    private const int RecurrentUpTo = 8;

    /// <summary>Calls with at most this many state multiply-adds per token step run on the calling thread: waking ORT's pool costs more.</summary>
    private const long InlineWork = 1 << 20;

    private readonly GlaOptions _chunked = new() { Scale = config.Scale, ChunkSize = config.ChunkSize, Mode = AttentionMode.Chunked };
    private readonly GlaOptions _recurrent = new() { Scale = config.Scale, ChunkSize = config.ChunkSize, Mode = AttentionMode.Recurrent };

    public void Compute(KernelContext context)
    {
        var call = LinearAttentionCall.Describe(config, context);
        int b = call.B, t = call.T, hq = config.QHeads, hkv = config.KvHeads, dk = call.Dk, dv = call.Dv;
        var options = t <= RecurrentUpTo ? _recurrent : _chunked;
        LinearAttentionCall.Guard(config, () =>
        {
            var q = call.Query.AsReadOnlyTensor<float>(b, t, hq, dk);
            var k = call.Key.AsReadOnlyTensor<float>(b, t, hkv, dk);
            var v = call.Value.AsReadOnlyTensor<float>(b, t, hkv, dv);
            var g = call.Decay is OrtTensorView decay
                ? (call.DecayPerKey ? decay.AsReadOnlyTensor<float>(b, t, hkv, dk) : decay.AsReadOnlyTensor<float>(b, t, hkv))
                : default;
            var output = call.Output.AsTensor<float>(b, t, hq, dv);
            if (device.Backend == Backend.Cpu)
            {
                if ((long)b * t * hq * dk * dv <= InlineWork)
                {
                    using (OrtParallelScheduler.Inline()) RunOnCpu(call, options, q.Lengths, k.Lengths, v.Lengths, g.Lengths, output.Lengths);
                }
                else
                {
                    RunOnCpu(call, options, q.Lengths, k.Lengths, v.Lengths, g.Lengths, output.Lengths);
                }
                return;
            }
            Gla.Forward(device, q, k, v, g, output,
                call.PastState is OrtTensorView past ? past.AsReadOnlyTensor<float>(b, hkv, dk, dv) : default,
                call.PresentState is OrtTensorView present ? present.AsTensor<float>(b, hkv, dk, dv) : default,
                default, options);
        });
    }

    private void RunOnCpu(in LinearAttentionCall call, GlaOptions options,
        ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v, ReadOnlySpan<nint> g, ReadOnlySpan<nint> output)
    {
        var gla = GlaCall.Describe(q, k, v, g, output, default, options, expected: null);
        var decay = call.Decay is OrtTensorView d ? d.AsReadOnlySpan<float>() : default;
        if (gla.Config.Gate is GateKind.PerHead or GateKind.PerKey) TensorArgs.RequireLogGate(decay, "g");
        int stateLength = checked((int)gla.StateLength);
        float[]? scratch = call.PresentState is null ? ArrayPool<float>.Shared.Rent(Math.Max(stateLength, 1)) : null;
        var key = (typeof(GlaCpu), gla.Config);
        var kernel = device.Rent(key, () => new GlaCpu(gla.Config, device.Scheduler));
        try
        {
            var state = call.PresentState is OrtTensorView present ? present.AsSpan<float>() : scratch.AsSpan(0, stateLength);
            if (call.PastState is OrtTensorView past)
            {
                if (!StateCopy.CopyAllFinite(past.AsReadOnlySpan<float>(), state))
                    TensorArgs.RequireFinite(past.AsReadOnlySpan<float>(), "initial_state"); // names the first offender
            }
            else
            {
                state.Clear();
            }
            var run = options.Mode == AttentionMode.Chunked ? (GlaRun)kernel.Chunked : kernel.Recurrent;
            run(gla.Sequences, call.Query.AsReadOnlySpan<float>(), call.Key.AsReadOnlySpan<float>(), call.Value.AsReadOnlySpan<float>(),
                decay, call.Output.AsSpan<float>(), state);
        }
        finally
        {
            device.Return(key, kernel);
            if (scratch is not null) ArrayPool<float>.Shared.Return(scratch);
        }
    }

    private delegate void GlaRun(SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state);

    public void Dispose() { }
}

/// <summary>The state copied in for a call, checked on the way (one pass over memory instead of two).</summary>
internal static class StateCopy
{
    /// <summary>Copies <paramref name="source"/> into <paramref name="destination"/>; false when a value is NaN or infinite.</summary>
    public static bool CopyAllFinite(ReadOnlySpan<float> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source", nameof(destination));
        ref float src = ref MemoryMarshal.GetReference(source);
        ref float dst = ref MemoryMarshal.GetReference(destination);
        // x − x is 0 for every finite x and NaN otherwise: the sum stays 0 exactly when all are finite.
        var nonFinite = Vector512<float>.Zero;
        int i = 0;
        for (; i <= source.Length - Vector512<float>.Count; i += Vector512<float>.Count)
        {
            var x = Vector512.LoadUnsafe(ref src, (nuint)i);
            x.StoreUnsafe(ref dst, (nuint)i);
            nonFinite += x - x;
        }
        float tail = 0f;
        for (; i < source.Length; i++)
        {
            float x = Unsafe.Add(ref src, i);
            Unsafe.Add(ref dst, i) = x;
            tail += x - x;
        }
        return Vector512.Sum(nonFinite) + tail == 0f;
    }
}

using System.Buffers;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>
/// The tensors of one LinearAttention call seen as the engine's facades take them: each packed (B, T, H·d) tensor
/// viewed as (B, T, H, d) with its own B and T (the facade checks they agree, naming the tensor), head dims from
/// the query and value widths, the decay form from its width.
/// </summary>
internal readonly struct LinearAttentionCall
{
    public int Dk { get; init; }
    public int Dv { get; init; }
    public OrtTensorView Query { get; init; }
    public OrtTensorView Key { get; init; }
    public OrtTensorView Value { get; init; }
    public OrtTensorView? PastState { get; init; }
    public OrtTensorView? Decay { get; init; }
    public OrtTensorView? Beta { get; init; }
    public OrtTensorView Output { get; init; }
    public OrtTensorView? PresentState { get; init; }
    /// <summary>float16 tensors (the node's inputs and outputs are all one type); else float32.</summary>
    public bool Half { get; init; }
    /// <summary>The folded short convolution's tensors (with <see cref="LinearAttentionConfig.Convolution"/>).</summary>
    public OrtTensorView? ConvWeight { get; init; }
    public OrtTensorView? ConvBias { get; init; }
    public OrtTensorView? PastConvState { get; init; }
    public OrtTensorView? PresentConvState { get; init; }
    /// <summary>The folded output norm's tensors (with <see cref="LinearAttentionConfig.Norm"/>).</summary>
    public OrtTensorView? NormScale { get; init; }
    public OrtTensorView? NormGate { get; init; }

    public long B => Query.Dims[0];
    public long T => Query.Dims[1];

    public static LinearAttentionCall Describe(LinearAttentionConfig c, KernelContext context)
    {
        var q = context.Input(LinearAttentionSignature.Query) ?? throw Missing(c, "query");
        var past = context.Input(LinearAttentionSignature.PastState);
        var decay = context.Input(LinearAttentionSignature.Decay);
        var beta = context.Input(LinearAttentionSignature.Beta);
        OrtTensorView k, v;
        long dk, dv;
        if (c.Packed)
        {
            // Packed rows [q | k | v]: past_state (B, kv_num_heads, dk, dv) gives the head dims.
            var state = past ?? throw Missing(c, "past_state");
            Rank(c, state, "past_state", 4);
            Rank(c, q, "query", 3);
            (k, v, dk, dv) = (q, q, state.Dims[2], state.Dims[3]);
            long width = PackedQkv.Width(c.QHeads, c.KeyHeads, c.KvHeads, dk, dv);
            if (q.Dims[2] != width)
                throw Bad(c, "query", $"packed width {q.Dims[2]} must be (q_num_heads + key heads)·dk + kv_num_heads·dv = ({c.QHeads} + {c.KeyHeads})·{dk} + {c.KvHeads}·{dv} = {width}");
        }
        else
        {
            k = context.Input(LinearAttentionSignature.Key) ?? throw Missing(c, "key");
            v = context.Input(LinearAttentionSignature.Value) ?? throw Missing(c, "value");
            dk = Width(c, q, "query", c.QHeads, "q_num_heads");
            // The key's whole width, not just a multiple of its heads: the kernels view it as (B, T, key heads, dk).
            Rank(c, k, "key", 3);
            if (LinearAttentionSignature.KeyWidthProblem(c.QHeads, c.KvHeads, dk, k.Dims[2]) is string problem) throw Bad(c, "key", problem);
            dv = Width(c, v, "value", c.KvHeads, "kv_num_heads");
        }
        if (decay is OrtTensorView g) Rank(c, g, "decay", 3);
        if (beta is OrtTensorView bt)
        {
            Rank(c, bt, "beta", 3);
            if (bt.Dims[2] != c.KvHeads && bt.Dims[2] != 1) throw Bad(c, "beta", $"width {bt.Dims[2]} must be kv_num_heads ({c.KvHeads}) or 1");
        }
        if (past is OrtTensorView p) Rank(c, p, "past_state", 4);
        if (dk < 1 || dv < 1 || dk > int.MaxValue || dv > int.MaxValue) throw Bad(c, dk < 1 ? "query" : "value", $"head dims must be >= 1, got dk = {dk}, dv = {dv}");

        long b = q.Dims[0], t = q.Dims[1];
        OrtTensorView? convWeight = null, convBias = null, pastConv = null;
        long convWidth = 0;
        if (c.Convolution is not null)
        {
            // (C, 1, W) with C the packed width; bias (C); past state (B, C, W − 1).
            convWeight = context.Input(LinearAttentionSignature.ConvWeight) ?? throw Missing(c, "conv_weight");
            Rank(c, convWeight.Value, "conv_weight", 3);
            convWidth = convWeight.Value.Dims[2];
            if (convWeight.Value.Dims[0] != q.Dims[2] || convWeight.Value.Dims[1] != 1 || convWidth < 1)
                throw Bad(c, "conv_weight", $"expected (C, 1, W) with C = the packed query width {q.Dims[2]}, got [{string.Join(", ", convWeight.Value.Dims)}]");
            convBias = context.Input(LinearAttentionSignature.ConvBias);
            if (convBias is OrtTensorView cb && (cb.Dims.Length != 1 || cb.Dims[0] != q.Dims[2]))
                throw Bad(c, "conv_bias", $"expected ({q.Dims[2]}), got [{string.Join(", ", cb.Dims)}]");
            pastConv = context.Input(LinearAttentionSignature.PastConvState);
            if (pastConv is OrtTensorView pc && (pc.Dims.Length != 3 || pc.Dims[0] != b || pc.Dims[1] != q.Dims[2] || pc.Dims[2] != convWidth - 1))
                throw Bad(c, "past_conv_state", $"expected (B, C, W − 1) = ({b}, {q.Dims[2]}, {convWidth - 1}), got [{string.Join(", ", pc.Dims)}]");
        }
        OrtTensorView? normScale = null, normGate = null;
        if (c.Norm is not null)
        {
            normScale = context.Input(LinearAttentionSignature.NormScale) ?? throw Missing(c, "norm_scale");
            normGate = context.Input(LinearAttentionSignature.NormGate) ?? throw Missing(c, "norm_gate");
            if (normScale.Value.Dims.Length != 1 || normScale.Value.Dims[0] != dv)
                throw Bad(c, "norm_scale", $"expected (dv) = ({dv}), got [{string.Join(", ", normScale.Value.Dims)}]");
            if (normGate.Value.Dims.Length != 3 || normGate.Value.Dims[0] != b || normGate.Value.Dims[1] != t || normGate.Value.Dims[2] != c.OutputHeads * dv)
                throw Bad(c, "norm_gate", $"expected (B, T, heads·dv) = ({b}, {t}, {c.OutputHeads * dv}), got [{string.Join(", ", normGate.Value.Dims)}]");
        }
        var output = context.Output(0, [b, t, c.OutputHeads * dv]) ?? throw new ModelNodeException($"{c.Node}: ORT gave no output tensor");
        var present = context.Output(1, [b, c.KvHeads, dk, dv]);
        var presentConv = c.Convolution is null ? null : context.Output(LinearAttentionSignature.PresentConvState, [b, q.Dims[2], convWidth - 1]);
        return new LinearAttentionCall
        {
            Dk = (int)dk, Dv = (int)dv, Query = q, Key = k, Value = v, PastState = past, Decay = decay, Beta = beta,
            Output = output, PresentState = present, Half = q.ElementType == Ort.ElementFloat16,
            ConvWeight = convWeight, ConvBias = convBias, PastConvState = pastConv, PresentConvState = presentConv,
            NormScale = normScale, NormGate = normGate,
        };
    }

    /// <summary>(B, T, heads·d) → d.</summary>
    private static long Width(LinearAttentionConfig c, OrtTensorView x, string name, int heads, string attribute)
    {
        Rank(c, x, name, 3);
        if (x.Dims[2] % heads != 0) throw Bad(c, name, $"width {x.Dims[2]} is not a multiple of {attribute} ({heads})");
        return x.Dims[2] / heads;
    }

    private static ArgumentException Missing(LinearAttentionConfig c, string name) =>
        new($"{c.Node}: the required input {name} was not given", name);

    private static ArgumentException Bad(LinearAttentionConfig c, string name, string what) => new($"{c.Node}: {name}: {what}", name);

    private static void Rank(LinearAttentionConfig c, OrtTensorView t, string name, int rank)
    {
        if (t.Dims.Length != rank) throw Bad(c, name, $"expected rank {rank}, got rank {t.Dims.Length} with shape [{string.Join(", ", t.Dims)}]");
    }

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
        "convolution weight" => "conv_weight",
        "convolution bias" => "conv_bias",
        "convolution initial state" => "past_conv_state",
        "output norm scale" => "norm_scale",
        "output norm gate" => "norm_gate",
        null => "input",
        _ => engineName,
    };
}

/// <summary>
/// LinearAttention on the engine's public facades, one route for every rule, element type and backend: linear and
/// gated on GLA, delta and gated_delta on the delta rule (no gate, per-head or per-key-dim decay for both); Lightning
/// attention is GLA's constant decay. ORT's tensors are read and written where they lie: past_state is the initial
/// state, present_state the final one (fp32 copies only for float16 nodes, whose state the engine keeps in fp32).
/// CPU work runs on ORT's intra-op pool for the call.
/// </summary>
internal sealed class LinearAttentionKernel : IEngineKernel
{
    private readonly LinearAttentionConfig _config;
    private readonly EngineDevice _device;
    private readonly int _chunk;

    public LinearAttentionKernel(LinearAttentionConfig config, EngineDevice device)
    {
        _config = config;
        _device = device;
        // chunk_size is a hint: one the op takes is used, otherwise (or when absent) DefaultChunk.
        var taken = LinearAttentionSignature.UsesBeta(config.Rule) ? Kernels.DeltaRule.DeltaRuleConfig.ChunkSizes : Kernels.Gla.GlaConfig.ChunkSizes;
        _chunk = config.ChunkSize is int c && taken.Contains(c) ? c : CallScheduler.DefaultChunk;
    }

    public void Compute(KernelContext context)
    {
        var call = LinearAttentionCall.Describe(_config, context);
        var mode = call.T <= CallScheduler.RecurrentUpTo ? AttentionMode.Recurrent : AttentionMode.Chunked;
        var scheduler = CallScheduler.For(context, _device, call.B * call.T * _config.OutputHeads * call.Dk * call.Dv);
        LinearAttentionCall.Guard(_config, () =>
        {
            if (call.Half) Run<Half>(call, mode, scheduler);
            else Run<float>(call, mode, scheduler);
        });
    }

    public void Dispose() { }

    private void Run<T>(in LinearAttentionCall call, AttentionMode mode, IWorkScheduler scheduler) where T : unmanaged
    {
        // Not a using variable: a retry changes it.
        var gates = Gates<T>(call, _config.KvHeads, call.Dk);
        try
        {
            while (true)
            {
                try
                {
                    Run(call, mode, scheduler, gates.Tensor);
                    return;
                }
                // ORT's kernel takes a decay of −∞ as a factor of 0, the state reset; the kernels refuse it as a log gate that is
                // not finite (leaving every state as it was): then once more, with the lowest finite log gate in its place. Only
                // a refused call looks for one, so a decay is not read once more in every call.
                catch (ArgumentException refused) when (refused.ParamName == "g" && gates.ResetNegativeInfinity()) { }
            }
        }
        finally
        {
            gates.Dispose();
        }
    }

    private void Run<T>(in LinearAttentionCall call, AttentionMode mode, IWorkScheduler scheduler, ReadOnlyTensorSpan<T> g) where T : unmanaged
    {
        int hkv = _config.KvHeads, dk = call.Dk, dv = call.Dv;
        var packed = _config.Packed
            ? new PackedQkv<T>(call.Query.AsReadOnlySpan<T>(), call.B.AsNint(), call.T.AsNint(), _config.QHeads, _config.KeyHeads, hkv, dk, dv)
            : default;
        var q = _config.Packed ? packed.Q : Heads<T>(call.Query, _config.QHeads, dk);
        using var sharedKey = _config.Packed ? default : RepeatedHeads<T>.From(call.Key, checked((int)(call.Key.Dims[2] / dk)), _config.KeyHeads, dk);
        var k = _config.Packed ? packed.K : sharedKey.Tensor;
        var v = _config.Packed ? packed.V : Heads<T>(call.Value, hkv, dv);
        var output = call.Output.AsTensor<T>(call.B.AsNint(), call.T.AsNint(), _config.OutputHeads, dv);
        using var state = OnnxState.From(call, hkv);
        if (_config.ConstantLogDecay is float[] logDecay)
        {
            var options = new LightningOptions { Slopes = Array.ConvertAll(logDecay, l => -l), Scale = _config.Scale ?? 1f, BlockSize = _chunk, Mode = mode, Scheduler = scheduler };
            Lightning.Forward(_device, q, k, v, output, state.Initial, state.Final, options: options);
        }
        else if (LinearAttentionSignature.UsesBeta(_config.Rule))
        {
            using var beta = RepeatedHeads<T>.From(call.Beta!.Value, checked((int)call.Beta!.Value.Dims[2]), hkv, 1, perHead: true);
            using var conv = OnnxConvolution.From(call, _config.Convolution);
            using var norm = OnnxNorm.From(call, _config.Norm);
            var options = new DeltaRuleOptions
            {
                Scale = _config.Scale, ChunkSize = _chunk, Mode = mode, Scheduler = scheduler,
                QkL2Norm = _config.QkL2Norm, L2NormEpsilon = LinearAttentionSignature.LpNormalizationEpsilon, Convolution = conv.Convolution, OutputNorm = norm.Norm,
            };
            DeltaRule.Forward(_device, q, k, v, beta.Tensor, g, output, state.Initial, state.Final, options: options);
            conv.Commit();
        }
        else
        {
            var options = new GlaOptions { Scale = _config.Scale, ChunkSize = _chunk, Mode = mode, Scheduler = scheduler };
            Gla.Forward(_device, q, k, v, g, output, state.Initial, state.Final, options: options);
        }
        state.Commit();
    }

    /// <summary>(B, T, heads·d) as (B, T, heads, d).</summary>
    private static ReadOnlyTensorSpan<T> Heads<T>(OrtTensorView x, int heads, int d) where T : unmanaged =>
        x.AsReadOnlyTensor<T>(x.Dims[0].AsNint(), x.Dims[1].AsNint(), heads, d);

    /// <summary>decay as the ops take g: (B, T, Hkv, dk) when one value per key dim, (B, T, Hkv) when per head, or absent.</summary>
    private static ResetGates<T> Gates<T>(in LinearAttentionCall call, int kvHeads, int dk) where T : unmanaged
    {
        if (call.Decay is not OrtTensorView decay) return default;
        nint b = decay.Dims[0].AsNint(), t = decay.Dims[1].AsNint();
        return decay.Dims[2] == (long)kvHeads * dk ? ResetGates<T>.Over(decay.AsReadOnlyTensor<T>(b, t, kvHeads, dk))
            : decay.Dims[2] == kvHeads ? ResetGates<T>.Over(decay.AsReadOnlyTensor<T>(b, t, kvHeads))
            : throw new ArgumentException($"g: width {decay.Dims[2]} must be kv_num_heads ({kvHeads}, per head) or kv_num_heads·dk ({kvHeads * dk}, per key dim)", "g");
    }
}

internal static class DimExtensions
{
    public static nint AsNint(this long d) => checked((nint)d);
}

/// <summary>
/// past_state and present_state as the facades take them (fp32): ORT's tensors themselves when float32, fp32 copies of
/// float16 ones (present_state written back by <see cref="Commit"/>).
/// </summary>
internal ref struct OnnxState
{
    private float[]? _past, _present;
    private OrtTensorView? _presentHalf;

    public ReadOnlyTensorSpan<float> Initial { get; private set; }
    public TensorSpan<float> Final { get; private set; }

    public static OnnxState From(in LinearAttentionCall call, int kvHeads)
    {
        var state = new OnnxState();
        if (!call.Half)
        {
            if (call.PastState is OrtTensorView past) state.Initial = past.AsReadOnlyTensor<float>(past.Lengths);
            if (call.PresentState is OrtTensorView present) state.Final = present.AsTensor<float>(present.Lengths);
            return state;
        }
        if (call.PastState is OrtTensorView halfPast)
        {
            int n = checked((int)halfPast.ElementCount);
            state._past = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
            TensorPrimitives.ConvertToSingle(halfPast.AsReadOnlySpan<Half>(), state._past);
            state.Initial = new ReadOnlyTensorSpan<float>(state._past.AsSpan(0, n), halfPast.Lengths, []);
        }
        if (call.PresentState is OrtTensorView halfPresent)
        {
            int n = checked((int)halfPresent.ElementCount);
            state._present = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
            state._presentHalf = halfPresent;
            state.Final = new TensorSpan<float>(state._present.AsSpan(0, n), halfPresent.Lengths, []);
        }
        return state;
    }

    /// <summary>
    /// Writes the final state into a float16 present_state (nothing to do for float32), refusing a state value float16
    /// cannot hold rather than writing infinity (the output's values were checked the same way by the facade).
    /// </summary>
    public readonly void Commit()
    {
        if (_presentHalf is not OrtTensorView present) return;
        var state = _present.AsSpan(0, (int)present.ElementCount);
        HalfRange.Require(state, "present_state");
        TensorPrimitives.ConvertToHalf(state, present.AsSpan<Half>());
    }

    public void Dispose()
    {
        if (_past is not null) ArrayPool<float>.Shared.Return(_past);
        if (_present is not null) ArrayPool<float>.Shared.Return(_present);
        _past = _present = null;
    }
}

/// <summary>
/// (B, T, given·d) as (B, T, heads, d) (as (B, T, heads) where <c>perHead</c>: beta), head j reading given head j / (heads / given):
/// the tensor itself when given = heads, else repeated into a pooled buffer — beta of width 1, a key whose heads ONNX Runtime shares.
/// A key stays rank 4 when dk is 1.
/// </summary>
internal ref struct RepeatedHeads<T> where T : unmanaged
{
    private T[]? _expanded;

    public ReadOnlyTensorSpan<T> Tensor { get; private set; }

    public static RepeatedHeads<T> From(OrtTensorView x, int given, int heads, int d, bool perHead = false)
    {
        nint b = x.Dims[0].AsNint(), t = x.Dims[1].AsNint();
        nint[] shape = perHead ? [b, t, heads] : [b, t, heads, d];
        if (given == heads) return new RepeatedHeads<T> { Tensor = x.AsReadOnlyTensor<T>(shape) };
        var values = x.AsReadOnlySpan<T>();
        int rows = checked((int)(b * t)), repeat = heads / given, length = checked(rows * heads * d);
        var expanded = ArrayPool<T>.Shared.Rent(Math.Max(length, 1));
        for (int row = 0; row < rows; row++)
            for (int head = 0; head < heads; head++)
                values.Slice((row * given + head / repeat) * d, d).CopyTo(expanded.AsSpan((row * heads + head) * d, d));
        return new RepeatedHeads<T> { _expanded = expanded, Tensor = new ReadOnlyTensorSpan<T>(expanded.AsSpan(0, length), shape, []) };
    }

    public void Dispose()
    {
        if (_expanded is not null) ArrayPool<T>.Shared.Return(_expanded);
        _expanded = null;
    }
}

/// <summary>
/// A folded short convolution's tensors as <see cref="ShortConvolution"/> takes them: ORT's float32 weight, bias, past and present
/// states where they lie; fp32 copies of float16 ones (a few floats per channel), the present state written back by <see cref="Commit"/>.
/// </summary>
internal ref struct OnnxConvolution
{
    private float[]? _weight, _bias, _past, _present;
    private OrtTensorView? _halfPresent;

    public ShortConvolution? Convolution { get; private set; }

    public static OnnxConvolution From(in LinearAttentionCall call, ConvFold? fold)
    {
        var conv = new OnnxConvolution();
        if (fold is null || call.ConvWeight is not OrtTensorView weight) return conv;
        Memory<float> present = default;
        if (call.PresentConvState is OrtTensorView target)
        {
            if (call.Half)
            {
                conv._present = ArrayPool<float>.Shared.Rent(Math.Max((int)target.ElementCount, 1));
                conv._halfPresent = target;
                present = conv._present.AsMemory(0, (int)target.ElementCount);
            }
            else present = Floats(target);
        }
        conv.Convolution = new ShortConvolution
        {
            Weight = Floats(weight, call.Half, ref conv._weight), Width = (int)weight.Dims[2], Silu = fold.Silu,
            Bias = call.ConvBias is OrtTensorView bias ? Floats(bias, call.Half, ref conv._bias) : default,
            InitialState = call.PastConvState is OrtTensorView past ? Floats(past, call.Half, ref conv._past) : default,
            FinalState = present,
        };
        return conv;
    }

    /// <summary>A float32 tensor where it lies.</summary>
    private static unsafe Memory<float> Floats(OrtTensorView t) => new NativeFloats((float*)t.Data, checked((int)t.ElementCount)).Memory;

    /// <summary>A float32 tensor where it lies, or an fp32 copy of a float16 one in <paramref name="copy"/>.</summary>
    private static ReadOnlyMemory<float> Floats(OrtTensorView t, bool half, ref float[]? copy)
    {
        if (!half) return Floats(t);
        int n = checked((int)t.ElementCount);
        copy = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
        TensorPrimitives.ConvertToSingle(t.AsReadOnlySpan<Half>(), copy);
        return copy.AsMemory(0, n);
    }

    /// <summary>Writes a float16 present_conv_state (the input rows it carries are float16 values already); float32 ones were written in place.</summary>
    public readonly void Commit()
    {
        if (_halfPresent is OrtTensorView target) TensorPrimitives.ConvertToHalf(_present.AsSpan(0, (int)target.ElementCount), target.AsSpan<Half>());
    }

    public void Dispose()
    {
        foreach (var rented in new[] { _weight, _bias, _past, _present })
            if (rented is not null) ArrayPool<float>.Shared.Return(rented);
        _weight = _bias = _past = _present = null;
    }
}

/// <summary>
/// A folded output norm's tensors as <see cref="GatedOutputNorm"/> takes them: ORT's float32 gate where it lies (float16: an fp32
/// copy), the scale as fp32.
/// </summary>
internal ref struct OnnxNorm
{
    private float[]? _scale, _gate;

    public GatedOutputNorm? Norm { get; private set; }

    public static unsafe OnnxNorm From(in LinearAttentionCall call, NormFold? fold)
    {
        var norm = new OnnxNorm();
        if (fold is null || call.NormScale is not OrtTensorView scale || call.NormGate is not OrtTensorView gate) return norm;
        int dv = (int)scale.ElementCount, n = checked((int)gate.ElementCount);
        norm._scale = ArrayPool<float>.Shared.Rent(Math.Max(dv, 1));
        if (call.Half) TensorPrimitives.ConvertToSingle(scale.AsReadOnlySpan<Half>(), norm._scale);
        else scale.AsReadOnlySpan<float>().CopyTo(norm._scale);
        ReadOnlyMemory<float> gateMemory;
        if (call.Half)
        {
            norm._gate = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
            TensorPrimitives.ConvertToSingle(gate.AsReadOnlySpan<Half>(), norm._gate);
            gateMemory = norm._gate.AsMemory(0, n);
        }
        else gateMemory = new NativeFloats((float*)gate.Data, n).Memory;
        norm.Norm = new GatedOutputNorm { Scale = norm._scale.AsMemory(0, dv), Gate = gateMemory, Epsilon = fold.Epsilon, Activation = fold.Activation };
        return norm;
    }

    public void Dispose()
    {
        if (_scale is not null) ArrayPool<float>.Shared.Return(_scale);
        if (_gate is not null) ArrayPool<float>.Shared.Return(_gate);
        _scale = _gate = null;
    }
}

/// <summary>Memory ORT owns seen as <see cref="Memory{T}"/> for the length of one kernel call (nothing to pin: it does not move).</summary>
internal sealed unsafe class NativeFloats(float* pointer, int length) : MemoryManager<float>
{
    public override Span<float> GetSpan() => new(pointer, length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);

    public override void Unpin() { }

    protected override void Dispose(bool disposing) { }
}

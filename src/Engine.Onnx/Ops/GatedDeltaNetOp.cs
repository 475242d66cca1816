using System.Buffers;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>How a GatedDeltaNet node turns its decay input into the log-space gate g.</summary>
internal enum DecayGateActivation
{
    /// <summary>decay is g.</summary>
    None,
    /// <summary>g = −exp(a_log)·softplus(decay + dt_bias) (alias qwen).</summary>
    Softplus,
    /// <summary>g = gate_lower_bound·sigmoid(exp(a_log)·(decay + dt_bias)) (alias kda).</summary>
    Sigmoid,
}

/// <summary>
/// ONNX Runtime's com.microsoft GatedDeltaNet (1.32), token-major with an explicit value-major state:
/// inputs query [N, Hq, dk] | [B, S, Hq, dk] | packed QKV [N | B, S, 2·Hq·dk + Hv·dv]; key, value (absent for packed QKV);
/// cu_seqlens [B + 1] int32 (ragged packing, rank-3 spelling only); decay [.., Hv] or [.., Hv, dk], log space; beta [.., Hv];
/// initial_state [B, Hv, dv, dk] fp32, value-major (required without cu_seqlens in the rank-3 spelling, and for packed QKV);
/// a_log [Hv], dt_bias [Hv] | [Hv, dk] | [Hv·dk] (the last two with a per-key decay); capture_count [B], state_update_active [1] int32.
/// Outputs output [N, Hv, dv] | [B, S, Hv, dv], final_state [B, Hv, dv, dk] fp32, state_update [B, C·(decay width + Hq·dk + Hv·dv)] fp32.
/// Query and key heads are Hq; value head h reads query/key head h / (Hv / Hq). What was established by running ORT's kernel:
/// the L2 normalization is x / sqrt(Σ x² + 1e-12), or + 1e-6 with gate_activation sigmoid (kda); a per-key dt_bias with a
/// per-head decay is refused.
/// </summary>
internal static class GatedDeltaNetSignature
{
    public const string OpType = "GatedDeltaNet";
    public static readonly string[] InputNames =
        ["query", "key", "value", "cu_seqlens", "decay", "beta", "initial_state", "a_log", "dt_bias", "capture_count", "state_update_active"];
    public static readonly string[] OutputNames = ["output", "final_state", "state_update"];
    public static readonly string[] AttributeNames =
        ["update_rule", "scale", "gate_activation", "gate_lower_bound", "beta_activation", "qk_l2_norm", "chunk_size", "state_update_capacity"];

    public const int Query = 0, Key = 1, Value = 2, CuSeqlens = 3, Decay = 4, Beta = 5, InitialState = 6, ALog = 7, DtBias = 8,
        CaptureCount = 9, StateUpdateActive = 10;

    /// <summary>ORT's epsilon of qk_l2_norm (inside the square root).</summary>
    public const float L2NormEpsilon = 1e-12f;

    /// <summary>ORT's epsilon of qk_l2_norm with gate_activation sigmoid (kda): KDA's 1e-6.</summary>
    public const float SigmoidGateL2NormEpsilon = 1e-6f;

    /// <summary>ORT's largest state_update_capacity.</summary>
    public const int MaxCapacity = 8;

    public static DecayGateActivation ParseGateActivation(string text, string node) => text switch
    {
        "none" => DecayGateActivation.None,
        "softplus" or "qwen" => DecayGateActivation.Softplus,
        "sigmoid" or "kda" => DecayGateActivation.Sigmoid,
        _ => throw new ModelNodeException($"{node}: gate_activation must be one of none, softplus (qwen), sigmoid (kda), got '{text}'"),
    };

    /// <summary>
    /// Why the engine leaves a node with this query type to ORT, or null when it takes it: float32, float16 and bfloat16 tensors.
    /// </summary>
    public static string? NotTaken(string? elementType)
    {
        if (elementType is not null and not "float" and not "float16" and not "bfloat16")
            return $"{elementType} tensors: the engine's GatedDeltaNet takes float32, float16 and bfloat16";
        return null;
    }
}

/// <summary>GatedDeltaNet in the engine's domain, one op per element type of query, key, value and output (float32, float16, bfloat16).</summary>
internal sealed class GatedDeltaNetOp(int elementType) : EngineOp
{
    public override string Name => GatedDeltaNetSignature.OpType;

    // decay and beta are float or the query's type: registered untyped (0), their type checked by the kernel.
    public override IReadOnlyList<OpParameter> Inputs { get; } =
    [
        new("query", false, elementType), new("key", true, elementType), new("value", true, elementType),
        new("cu_seqlens", true, Ort.ElementInt32), new("decay", true, Ort.ElementUndefined), new("beta", true, Ort.ElementUndefined),
        new("initial_state", true), new("a_log", true), new("dt_bias", true),
        new("capture_count", true, Ort.ElementInt32), new("state_update_active", true, Ort.ElementInt32),
    ];

    public override IReadOnlyList<OpParameter> Outputs { get; } = [new("output", false, elementType), new("final_state", true), new("state_update", true)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device) =>
        new GatedDeltaNetKernel(GatedDeltaNetConfig.FromNode(info), device);
}

/// <summary>A GatedDeltaNet node's attributes and the inputs it has, checked when its kernel is made.</summary>
/// <param name="L2NormEpsilon">qk_l2_norm's epsilon as ORT's kernel takes it: 1e-6 where gate_activation is sigmoid (kda), under
/// any rule, 1e-12 otherwise.</param>
internal sealed record GatedDeltaNetConfig(string Node, UpdateRule Rule, float? Scale, DecayGateActivation Gate, float GateLowerBound,
    bool BetaSigmoid, bool QkL2Norm, float L2NormEpsilon, int? ChunkSize, int Capacity, bool Packed)
{
    /// <summary>The delta rules (delta, gated_delta) run on the delta rule's kernels; linear and gated on GLA's.</summary>
    public bool UsesBeta => LinearAttentionSignature.UsesBeta(Rule);


    public static GatedDeltaNetConfig FromNode(KernelInfo info)
    {
        string node = $"GatedDeltaNet node '{info.NodeName}'";
        string ruleText = info.String("update_rule") ?? LinearAttentionSignature.DefaultUpdateRule;
        var rule = LinearAttentionSignature.ParseRule(ruleText, node);
        var query = info.Input(GatedDeltaNetSignature.Query);
        string? queryType = query.ElementType switch { 0 => null, Ort.ElementFloat => "float", Ort.ElementFloat16 => "float16", var t => ElementTypeName(t) };

        float scale = info.Float("scale") ?? 0f;
        if (!float.IsFinite(scale)) throw new ModelNodeException($"{node}: scale must be finite, got {scale}");
        var gate = GatedDeltaNetSignature.ParseGateActivation(info.String("gate_activation") ?? "none", node);
        float lowerBound = info.Float("gate_lower_bound") ?? -5f;
        // ORT's kernel refuses 0 too (and whatever gate_activation is): the bound is a log decay that decays.
        if (!float.IsFinite(lowerBound) || !(lowerBound < 0f))
            throw new ModelNodeException($"{node}: gate_lower_bound must be finite and negative (the gate is a log decay), got {lowerBound}");
        string betaActivation = info.String("beta_activation") ?? "none";
        if (betaActivation is not ("none" or "sigmoid"))
            throw new ModelNodeException($"{node}: beta_activation must be none or sigmoid, got '{betaActivation}'");
        long l2Norm = info.Int("qk_l2_norm") ?? 0;
        if (l2Norm is not (0 or 1)) throw new ModelNodeException($"{node}: qk_l2_norm must be 0 or 1, got {l2Norm}");
        long? chunk = info.Int("chunk_size");
        if (chunk < 1) throw new ModelNodeException($"{node}: chunk_size must be positive, got {chunk}");
        long capacity = info.Int("state_update_capacity") ?? 0;
        if (capacity is < 0 or > GatedDeltaNetSignature.MaxCapacity)
            throw new ModelNodeException($"{node}: state_update_capacity must be in [0, {GatedDeltaNetSignature.MaxCapacity}], got {capacity}");
        if (GatedDeltaNetSignature.NotTaken(queryType) is string reason) throw new ModelNodeException($"{node}: {reason}");

        if (info.InputCount > GatedDeltaNetSignature.InputNames.Length)
            throw new ModelNodeException($"{node}: expected at most {GatedDeltaNetSignature.InputNames.Length} inputs ({string.Join(", ", GatedDeltaNetSignature.InputNames)}), got {info.InputCount}");
        bool Has(int index) => info.Input(index).Present;
        if (!query.Present) throw new ModelNodeException($"{node}: the required input query is missing");
        if (Has(GatedDeltaNetSignature.Key) != Has(GatedDeltaNetSignature.Value))
            throw new ModelNodeException($"{node}: key and value are given together, or both left out for a packed QKV query");
        bool packed = !Has(GatedDeltaNetSignature.Key);
        bool usesDecay = LinearAttentionSignature.UsesDecay(rule);
        if (usesDecay != Has(GatedDeltaNetSignature.Decay))
            throw new ModelNodeException(usesDecay ? $"{node}: update_rule '{ruleText}' requires the decay input" : $"{node}: update_rule '{ruleText}' takes no decay input");
        bool usesBeta = LinearAttentionSignature.UsesBeta(rule);
        if (usesBeta != Has(GatedDeltaNetSignature.Beta))
            throw new ModelNodeException(usesBeta ? $"{node}: update_rule '{ruleText}' requires the beta input" : $"{node}: update_rule '{ruleText}' takes no beta input");
        float l2NormEpsilon = gate == DecayGateActivation.Sigmoid ? GatedDeltaNetSignature.SigmoidGateL2NormEpsilon : GatedDeltaNetSignature.L2NormEpsilon;
        // Under a rule with no decay (delta, linear) ORT's kernel ignores gate_activation, a_log and dt_bias (not the epsilon).
        if (!usesDecay) gate = DecayGateActivation.None;
        bool fused = gate != DecayGateActivation.None;
        bool aLog = Has(GatedDeltaNetSignature.ALog), dtBias = Has(GatedDeltaNetSignature.DtBias);
        if (usesDecay && (fused ? !(aLog && dtBias) : aLog || dtBias))
            throw new ModelNodeException(fused ? $"{node}: gate_activation softplus/sigmoid requires a_log and dt_bias" : $"{node}: a_log and dt_bias require gate_activation softplus or sigmoid");
        if ((capacity > 0) != Has(GatedDeltaNetSignature.CaptureCount))
            throw new ModelNodeException($"{node}: capture_count is given exactly when state_update_capacity is positive (it is {capacity})");
        if (packed && !Has(GatedDeltaNetSignature.InitialState))
            throw new ModelNodeException($"{node}: a packed QKV query needs initial_state, which gives the head counts and dims");

        // Fixed ranks (query's depends on the packing; key, value, decay, beta and dt_bias follow it).
        int?[] ranks = [null, null, null, 1, null, null, 4, 1, null, 1, 1];
        for (int i = 0; i < info.InputCount && i < ranks.Length; i++)
        {
            var input = info.Input(i);
            if (!input.Present) continue;
            int? want = ranks[i];
            if (i == GatedDeltaNetSignature.Query && input.Rank is int r && (packed ? r is not (2 or 3) : r is not (3 or 4)))
                throw new ModelNodeException($"{node}: input query ('{input.Name}') must have rank {(packed ? "2 or 3 (packed QKV)" : "3 or 4")}, the model gives rank {r}");
            if (want is int w && input.Rank is int got && got != w)
                throw new ModelNodeException($"{node}: input {GatedDeltaNetSignature.InputNames[i]} ('{input.Name}') must have rank {w}, the model gives rank {got}");
            int type = input.ElementType;
            string name = GatedDeltaNetSignature.InputNames[i];
            bool typeOk = i switch
            {
                GatedDeltaNetSignature.CuSeqlens or GatedDeltaNetSignature.CaptureCount or GatedDeltaNetSignature.StateUpdateActive => type is 0 or Ort.ElementInt32,
                GatedDeltaNetSignature.Decay or GatedDeltaNetSignature.Beta => type == 0 || type == Ort.ElementFloat || type == query.ElementType,
                GatedDeltaNetSignature.InitialState or GatedDeltaNetSignature.ALog or GatedDeltaNetSignature.DtBias => type is 0 or Ort.ElementFloat,
                _ => true,
            };
            if (!typeOk) throw new ModelNodeException($"{node}: input {name} ('{input.Name}') has element type {ElementTypeName(type)}, expected {ExpectedType(i)}");
        }
        // decay and beta share one type parameter in ORT's schema (TG): it refuses a model that gives them two types.
        var decayInput = info.Input(GatedDeltaNetSignature.Decay);
        var betaInput = info.Input(GatedDeltaNetSignature.Beta);
        if (decayInput.Present && betaInput.Present && decayInput.ElementType != 0 && betaInput.ElementType != 0 && decayInput.ElementType != betaInput.ElementType)
            throw new ModelNodeException($"{node}: decay ('{decayInput.Name}') and beta ('{betaInput.Name}') must have one element type, " +
                $"the model gives {ElementTypeName(decayInput.ElementType)} and {ElementTypeName(betaInput.ElementType)}");
        CheckFixedDims(info, node, packed);
        if (info.OutputCount > 2 && info.OutputName(2).Length > 0 && capacity == 0)
            throw new ModelNodeException($"{node}: the state_update output needs state_update_capacity > 0");

        return new GatedDeltaNetConfig(node, rule, scale == 0f ? null : scale, gate, lowerBound, betaActivation == "sigmoid", l2Norm == 1, l2NormEpsilon,
            chunk is long c ? (int)Math.Min(c, int.MaxValue) : null, (int)capacity, packed);
    }

    /// <summary>
    /// The heads and head dims the model fixes, checked against each other as a call's would be: key like query, the
    /// state [B, Hv, dv, dk], value heads a multiple of query heads, decay, beta, a_log and dt_bias by Hv (and dk).
    /// </summary>
    private static void CheckFixedDims(KernelInfo info, string node, bool packed)
    {
        var q = info.Input(GatedDeltaNetSignature.Query);
        var v = info.Input(GatedDeltaNetSignature.Value);
        var state = info.Input(GatedDeltaNetSignature.InitialState);
        long? FromEnd(NodeInputInfo x, int k) => x.Rank is int r && r >= k ? x.Dim(r - k) : null;
        long? hq = packed ? null : FromEnd(q, 2), dk = packed ? state.Dim(3) : FromEnd(q, 1);
        long? hv = packed ? state.Dim(1) : FromEnd(v, 2), dv = packed ? state.Dim(2) : FromEnd(v, 1);
        void Require(int input, int fromEnd, long? want, string what)
        {
            var x = info.Input(input);
            if (x.Present && want is long w && FromEnd(x, fromEnd) is long got && got != w)
                throw new ModelNodeException($"{node}: input {GatedDeltaNetSignature.InputNames[input]} ('{x.Name}') has {got} where {what} is {w} ({Shape(x.Dims!)})");
        }
        Require(GatedDeltaNetSignature.Key, 2, hq, "Hq (the query's heads)");
        Require(GatedDeltaNetSignature.Key, 1, dk, "dk (the query's head dim)");
        Require(GatedDeltaNetSignature.InitialState, 3, hv, "Hv (the value's heads)");
        Require(GatedDeltaNetSignature.InitialState, 2, dv, "dv (the value's head dim)");
        Require(GatedDeltaNetSignature.InitialState, 1, dk, "dk (the query's head dim)");
        Require(GatedDeltaNetSignature.Beta, 1, hv, "Hv");
        Require(GatedDeltaNetSignature.ALog, 1, hv, "Hv");
        if (hq is long h && hv is long w && w % h != 0)
            throw new ModelNodeException($"{node}: value heads ({w}) must be a multiple of the query/key heads ({h}); more query heads than value heads is refused");
    }

    /// <summary>Dims as messages show them, "?" for one not known.</summary>
    public static string Shape(long[] dims) => "[" + string.Join(", ", dims.Select(d => d < 0 ? "?" : d.ToString())) + "]";

    private static string ExpectedType(int input) => input switch
    {
        GatedDeltaNetSignature.CuSeqlens or GatedDeltaNetSignature.CaptureCount or GatedDeltaNetSignature.StateUpdateActive => "int32",
        GatedDeltaNetSignature.Decay or GatedDeltaNetSignature.Beta => "float32 or the query's type",
        _ => "float32",
    };

    private static string ElementTypeName(int type) => ((Proto.TensorProto.Types.DataType)type).ToString().ToLowerInvariant();
}

/// <summary>
/// GatedDeltaNet on the public facades: the delta rules on the delta rule's, linear and gated on GLA's (its update
/// S ← diag(e^g) S + k vᵀ), both with the state value-major where ORT keeps it. The gates and beta activation are
/// computed once per call into fp32 log space, query, key and value viewed where they lie ([B, T, H, d] over the token
/// axis; packed QKV as strided views, which the facades copy dense), cu_seqlens as the facades' packed sequences. The delta
/// rule normalizes q and k in its kernels; for GLA they are normalized into pooled copies first. float16 and bfloat16
/// tensors are converted to fp32 and back (the output refused when the type cannot hold it).
/// </summary>
internal sealed class GatedDeltaNetKernel(GatedDeltaNetConfig config, EngineDevice device) : IEngineKernel
{
    // chunk_size is a hint: one the rule's kernels take is used, otherwise (or when absent) DefaultChunk.
    private readonly int _chunk = config.ChunkSize is int c && (config.UsesBeta ? DeltaRuleConfig.ChunkSizes : GlaConfig.ChunkSizes).Contains(c)
        ? c : CallScheduler.DefaultChunk;

    public void Dispose() { }

    public void Compute(KernelContext context)
    {
        var call = GatedDeltaNetCall.Describe(config, context);
        var mode = call.MaxLength <= CallScheduler.RecurrentUpTo ? AttentionMode.Recurrent : AttentionMode.Chunked;
        var scheduler = CallScheduler.For(context, device, (long)call.Tokens * call.Hv * call.Dk * call.Dv);
        NodeErrors.Guard(config.Node, name => name switch { "q" => "query", "k" => "key", "v" => "value", "g" => "decay", null => "input", _ => name }, () =>
        {
            using var inputs = new GatedDeltaNetViews(call, normalizeQk: config.QkL2Norm && !config.UsesBeta, config.L2NormEpsilon);
            // Not a using variable: a retry changes it.
            var gates = GatedDeltaNetGates.From(config, call);
            try
            {
                while (true)
                {
                    try
                    {
                        Run(call, mode, scheduler, inputs, gates);
                        break;
                    }
                    // ORT's kernel takes a decay of −∞ as a factor of 0, the state reset; the kernels refuse it (leaving the state
                    // as it was): then once more, with the lowest finite log gate in its place. Only a refused call looks for one.
                    catch (ArgumentException refused) when (refused.ParamName == "g" && gates.ResetNegativeInfinity()) { }
                }
            }
            finally
            {
                gates.Dispose();
            }
            inputs.Commit();
        });
    }

    private void Run(in GatedDeltaNetCall call, AttentionMode mode, IWorkScheduler scheduler, in GatedDeltaNetViews inputs, in GatedDeltaNetGates gates)
    {
        var initial = call.InitialState is OrtTensorView init ? init.AsReadOnlyTensor<float>(init.Lengths) : default;
        var final = call.FinalState is OrtTensorView last ? last.AsTensor<float>(last.Lengths) : default;
        if (config.UsesBeta)
        {
            var options = new DeltaRuleOptions
            {
                Scale = config.Scale, ChunkSize = _chunk, Mode = mode, Scheduler = scheduler, QkL2Norm = config.QkL2Norm,
                L2NormEpsilon = config.L2NormEpsilon, StateLayout = StateLayout.ValueMajor,
            };
            // Before the run: final_state may be initial_state's memory.
            if (call.StateUpdate is OrtTensorView stateUpdate)
            {
                TransitionViews(call, stateUpdate, out var decay, out var keys, out var deltas);
                DeltaRule.CaptureTransitions(inputs.K, inputs.V, gates.Beta, gates.G, initial, CaptureCounts(call), decay, keys, deltas, call.CuSeqlens, options);
            }
            DeltaRule.Forward(device, inputs.Q, inputs.K, inputs.V, gates.Beta, gates.G, inputs.Output, initial, final, call.CuSeqlens, options);
        }
        else
        {
            Gla.Forward(device, inputs.Q, inputs.K, inputs.V, gates.G, inputs.Output, initial, final, call.CuSeqlens,
                new GlaOptions { Scale = config.Scale, ChunkSize = _chunk, Mode = mode, Scheduler = scheduler, StateLayout = StateLayout.ValueMajor });
            // After the run, which has refused gates that are not log gates: these transitions read no state.
            if (call.StateUpdate is OrtTensorView stateUpdate) CaptureAdditiveTransitions(call, inputs, gates, stateUpdate);
        }
    }

    /// <summary>capture_count as ORT's kernel reads it (a negative count captures nothing), or zeros when state_update_active is 0.</summary>
    private int[] CaptureCounts(in GatedDeltaNetCall call) => call.CaptureActive ? Array.ConvertAll(call.CaptureCount, c => Math.Max(c, 0)) : new int[call.Sequences];

    /// <summary>
    /// state_update [B, C·(decay width + Hq·dk + Hv·dv)] as strided views of each request's row: the decay factors
    /// [B, C, Hv(, dk)], the keys as the recurrence uses them [B, C, Hq, dk] and the deltas [B, C, Hv, dv] (the layout
    /// established by running ORT's kernel).
    /// </summary>
    private void TransitionViews(in GatedDeltaNetCall call, OrtTensorView stateUpdate, out TensorSpan<float> decay, out TensorSpan<float> keys, out TensorSpan<float> deltas)
    {
        int c = config.Capacity, n = call.Sequences, hq = call.Hq, hv = call.Hv, dk = call.Dk, dv = call.Dv;
        int width = call.PerKeyDecay ? hv * dk : hv;
        nint row = (nint)c * (width + hq * dk + hv * dv);
        var memory = stateUpdate.AsSpan<float>();
        decay = call.PerKeyDecay
            ? new TensorSpan<float>(memory, [n, c, hv, dk], StridedView.Strides([n, c, hv, dk], [row, width, dk, 1]))
            : new TensorSpan<float>(memory, [n, c, hv], StridedView.Strides([n, c, hv], [row, width, 1]));
        keys = new TensorSpan<float>(memory[(c * width)..], [n, c, hq, dk], StridedView.Strides([n, c, hq, dk], [row, hq * dk, dk, 1]));
        deltas = new TensorSpan<float>(memory[(int)(c * (width + hq * dk))..], [n, c, hv, dv], StridedView.Strides([n, c, hv, dv], [row, hv * dv, dv, 1]));
    }

    /// <summary>
    /// The transitions of the rules without a delta, per request the first min(capture_count, C, length) tokens: the decay
    /// factors exp(g) (1 for linear), the keys as GLA reads them (normalized with qk_l2_norm) and the values themselves,
    /// as S ← diag(decay) S + k vᵀ takes them; zeros elsewhere.
    /// </summary>
    private void CaptureAdditiveTransitions(in GatedDeltaNetCall call, in GatedDeltaNetViews inputs, in GatedDeltaNetGates gates, OrtTensorView stateUpdate)
    {
        stateUpdate.AsSpan<float>().Clear();
        TransitionViews(call, stateUpdate, out var decay, out var keys, out var deltas);
        var counts = CaptureCounts(call);
        var cu = call.CuSeqlens;
        for (int n = 0; n < call.Sequences; n++)
        {
            // Request n: its tokens of the packed batch (cu_seqlens), or row n of the [B, S, ..] view.
            int start = cu is null ? 0 : cu[n], length = cu is null ? call.ViewTokens : cu[n + 1] - cu[n], batch = cu is null ? n : 0;
            int taken = Math.Clamp(counts[n], 0, Math.Min(config.Capacity, length));
            for (int j = 0; j < taken; j++)
            {
                int t = start + j;
                for (int h = 0; h < call.Hq; h++)
                    for (int c = 0; c < call.Dk; c++) keys[n, j, h, c] = inputs.K[batch, t, h, c];
                for (int h = 0; h < call.Hv; h++)
                {
                    for (int d = 0; d < call.Dv; d++) deltas[n, j, h, d] = inputs.V[batch, t, h, d];
                    if (call.PerKeyDecay)
                        for (int c = 0; c < call.Dk; c++) decay[n, j, h, c] = MathF.Exp(gates.G[batch, t, h, c]);
                    else decay[n, j, h] = gates.G.IsEmpty ? 1f : MathF.Exp(gates.G[batch, t, h]);
                }
            }
        }
    }
}

/// <summary>
/// One GatedDeltaNet call's tensors and dims: head counts and dims from query/key/value (packed QKV: from initial_state),
/// the batch from cu_seqlens, the rank-4 spelling or initial_state; every shape checked naming the node and the input.
/// </summary>
internal readonly struct GatedDeltaNetCall
{
    public GatedDeltaNetConfig Config { get; init; }
    public OrtTensorView Query { get; init; }
    public OrtTensorView? Key { get; init; }
    public OrtTensorView? Value { get; init; }
    public OrtTensorView? Decay { get; init; }
    public OrtTensorView? Beta { get; init; }
    public OrtTensorView? InitialState { get; init; }
    public OrtTensorView? ALog { get; init; }
    public OrtTensorView? DtBias { get; init; }
    public OrtTensorView Output { get; init; }
    public OrtTensorView? FinalState { get; init; }
    public OrtTensorView? StateUpdate { get; init; }
    /// <summary>capture_count (B ints), and whether state_update_active (absent: active) lets transitions be captured.</summary>
    public int[] CaptureCount { get; init; }
    public bool CaptureActive { get; init; }
    /// <summary>cu_seqlens copied (B + 1 ints), or null.</summary>
    public int[]? CuSeqlens { get; init; }
    public int Hq { get; init; }
    public int Hv { get; init; }
    public int Dk { get; init; }
    public int Dv { get; init; }
    /// <summary>Sequences (requests) and the facade's view: [ViewBatch, ViewTokens] over the token axis.</summary>
    public int Sequences { get; init; }
    public int ViewBatch { get; init; }
    public int ViewTokens { get; init; }
    public int MaxLength { get; init; }
    public int Tokens => ViewBatch * ViewTokens;
    /// <summary>Dims before the head axes: [N] or [B, S].</summary>
    public long[] TokenDims { get; init; }
    public bool PerKeyDecay => Decay is OrtTensorView d && d.Dims.Length == TokenDims.Length + 2;

    public static GatedDeltaNetCall Describe(GatedDeltaNetConfig c, KernelContext context)
    {
        var q = context.Input(GatedDeltaNetSignature.Query) ?? throw Bad(c, "query", "the required input was not given");
        var k = context.Input(GatedDeltaNetSignature.Key);
        var v = context.Input(GatedDeltaNetSignature.Value);
        var cuTensor = context.Input(GatedDeltaNetSignature.CuSeqlens);
        var decay = context.Input(GatedDeltaNetSignature.Decay);
        var beta = context.Input(GatedDeltaNetSignature.Beta);
        if (c.UsesBeta && beta is null) throw Bad(c, "beta", "the required input was not given");
        var state = context.Input(GatedDeltaNetSignature.InitialState);
        if (c.Packed != (k is null) || (k is null) != (v is null)) throw Bad(c, "key", "key and value are given together, or both left out for a packed QKV query");
        int tokenRank = q.Dims.Length - (c.Packed ? 1 : 2);
        if (tokenRank is not (1 or 2))
            throw Bad(c, "query", $"expected rank {(c.Packed ? "2 [N, W] or 3 [B, S, W] (packed QKV)" : "3 [N, Hq, dk] or 4 [B, S, Hq, dk]")}, got shape {Shape(q.Dims)}");
        long[] tokenDims = q.Dims[..tokenRank];
        // The kernels count tokens in int, as ORT's kernel does (it refuses more too).
        if (tokenDims.Any(d => d > int.MaxValue) || tokenDims.Aggregate(1L, (n, d) => n * d) > int.MaxValue)
            throw Bad(c, "query", $"token axes {Shape(tokenDims)} hold more than {int.MaxValue} tokens");
        if (state is OrtTensorView s && s.Dims.Length != 4) throw Bad(c, "initial_state", $"expected rank 4 [B, Hv, dv, dk], got shape {Shape(s.Dims)}");

        long hq, hv, dk, dv;
        if (c.Packed)
        {
            var st = state!.Value;
            (hv, dv, dk) = (st.Dims[1], st.Dims[2], st.Dims[3]);
            long width = q.Dims[^1], rest = width - hv * dv;
            if (dk < 1 || rest <= 0 || rest % (2 * dk) != 0)
                throw Bad(c, "query", $"packed QKV width {width} must be 2·Hq·dk + Hv·dv with Hv = {hv}, dv = {dv}, dk = {dk} from initial_state");
            hq = rest / (2 * dk);
        }
        else
        {
            (hq, dk) = (q.Dims[^2], q.Dims[^1]);
            RequireDims(c, k!.Value, "key", [.. tokenDims, hq, dk], "the query's [.., Hq, dk]");
            if (v!.Value.Dims.Length != q.Dims.Length || !v.Value.Dims[..tokenRank].SequenceEqual(tokenDims))
                throw Bad(c, "value", $"expected shape {Shape([.. tokenDims, -1, -1])} (the query's token axes, then Hv, dv), got {Shape(v.Value.Dims)}");
            (hv, dv) = (v.Value.Dims[^2], v.Value.Dims[^1]);
        }
        if (hq < 1 || hv < 1 || dk < 1 || dv < 1 || hv > int.MaxValue || dk > int.MaxValue || dv > int.MaxValue)
            throw Bad(c, "query", $"heads and head dims must be >= 1, got Hq = {hq}, Hv = {hv}, dk = {dk}, dv = {dv}");
        if (hv % hq != 0) throw Bad(c, "value", $"value heads ({hv}) must be a multiple of the query/key heads ({hq}); more query heads than value heads is refused");

        int[]? cu = null;
        int sequences, viewBatch, viewTokens, maxLength;
        if (cuTensor is OrtTensorView cuView)
        {
            if (tokenRank != 1) throw Bad(c, "cu_seqlens", "ragged packing needs the rank-3 spelling (a token axis [N, ..]), the query has [B, S, ..]");
            if (cuView.Dims.Length != 1 || cuView.Dims[0] < 2) throw Bad(c, "cu_seqlens", $"expected shape [B + 1] with B >= 1, got {Shape(cuView.Dims)}");
            cu = cuView.AsReadOnlySpan<int>().ToArray();
            (sequences, viewBatch, viewTokens) = (cu.Length - 1, 1, checked((int)tokenDims[0]));
            maxLength = 0;
            for (int i = 0; i + 1 < cu.Length; i++) maxLength = Math.Max(maxLength, cu[i + 1] - cu[i]);
        }
        else if (tokenRank == 2)
        {
            (sequences, viewBatch, viewTokens) = (checked((int)tokenDims[0]), checked((int)tokenDims[0]), checked((int)tokenDims[1]));
            maxLength = viewTokens;
        }
        else
        {
            if (state is not OrtTensorView st) throw Bad(c, "initial_state", "a token-axis query [N, ..] without cu_seqlens takes its batch from initial_state, which was not given");
            long b = st.Dims[0], n = tokenDims[0];
            if (b < 1 || n % b != 0) throw Bad(c, "query", $"{n} tokens do not split evenly into the {b} requests of initial_state (give cu_seqlens for ragged requests)");
            (sequences, viewBatch, viewTokens) = (checked((int)b), checked((int)b), checked((int)(n / b)));
            maxLength = viewTokens;
        }

        if (decay is OrtTensorView g)
        {
            bool perKey = g.Dims.Length == tokenRank + 2;
            RequireDims(c, g, "decay", perKey ? [.. tokenDims, hv, dk] : [.. tokenDims, hv], perKey ? "[tokens, Hv, dk] (per key dim)" : "[tokens, Hv] (per head), or [tokens, Hv, dk]");
            RequireGateType(c, g, q, "decay");
        }
        if (beta is OrtTensorView bt)
        {
            RequireDims(c, bt, "beta", [.. tokenDims, hv], "[tokens, Hv]");
            RequireGateType(c, bt, q, "beta");
            if (decay is OrtTensorView dt && dt.ElementType != bt.ElementType)
                throw Bad(c, "beta", $"element type {bt.ElementType} must be decay's ({dt.ElementType}): decay and beta have one type");
        }
        if (state is OrtTensorView init) RequireDims(c, init, "initial_state", [sequences, hv, dv, dk], "[B, Hv, dv, dk] (value-major)");
        var aLog = context.Input(GatedDeltaNetSignature.ALog);
        var dtBias = context.Input(GatedDeltaNetSignature.DtBias);
        if (c.Gate != DecayGateActivation.None)
        {
            RequireDims(c, aLog!.Value, "a_log", [hv], "[Hv]");
            bool perKey = decay!.Value.Dims.Length == tokenRank + 2;
            var dt = dtBias!.Value;
            bool fits = dt.Dims.SequenceEqual([hv]) || (perKey && (dt.Dims.SequenceEqual([hv, dk]) || dt.Dims.SequenceEqual([hv * dk])));
            if (!fits) throw Bad(c, "dt_bias", $"expected [Hv] = [{hv}]" + (perKey ? $", [Hv, dk] = [{hv}, {dk}] or [Hv·dk] = [{hv * dk}]" : " (a per-key dt_bias needs a per-key decay)") + $", got {Shape(dt.Dims)}");
        }

        int[] captureCount = [];
        bool captureActive = false;
        if (c.Capacity > 0)
        {
            var count = context.Input(GatedDeltaNetSignature.CaptureCount) ?? throw Bad(c, "capture_count", "required when state_update_capacity is positive, not given");
            RequireDims(c, count, "capture_count", [sequences], "[B]");
            captureCount = count.AsReadOnlySpan<int>().ToArray();
            captureActive = true;
            if (context.Input(GatedDeltaNetSignature.StateUpdateActive) is OrtTensorView active)
            {
                RequireDims(c, active, "state_update_active", [1], "[1]");
                captureActive = active.AsReadOnlySpan<int>()[0] != 0;
            }
        }

        var output = context.Output(0, [.. tokenDims, hv, dv]) ?? throw new ModelNodeException($"{c.Node}: ORT gave no output tensor");
        var final = context.Output(1, [sequences, hv, dv, dk]);
        long decayWidth = decay is OrtTensorView dg && dg.Dims.Length == tokenRank + 2 ? hv * dk : hv;
        var stateUpdate = c.Capacity > 0 ? context.Output(2, [sequences, c.Capacity * (decayWidth + hq * dk + hv * dv)]) : null;
        return new GatedDeltaNetCall
        {
            Config = c, Query = q, Key = k, Value = v, Decay = decay, Beta = beta, InitialState = state, ALog = aLog, DtBias = dtBias,
            Output = output, FinalState = final, StateUpdate = stateUpdate, CaptureCount = captureCount, CaptureActive = captureActive, CuSeqlens = cu, Hq = (int)hq, Hv = (int)hv, Dk = (int)dk, Dv = (int)dv,
            Sequences = sequences, ViewBatch = viewBatch, ViewTokens = viewTokens, MaxLength = maxLength, TokenDims = tokenDims,
        };
    }

    private static void RequireDims(GatedDeltaNetConfig c, OrtTensorView t, string name, long[] expected, string what)
    {
        if (!t.Dims.SequenceEqual(expected)) throw Bad(c, name, $"expected shape {Shape(expected)} {what}, got {Shape(t.Dims)}");
    }

    private static void RequireGateType(GatedDeltaNetConfig c, OrtTensorView t, OrtTensorView query, string name)
    {
        if (t.ElementType != Ort.ElementFloat && t.ElementType != query.ElementType)
            throw Bad(c, name, $"element type {t.ElementType} must be float32 or the query's ({query.ElementType})");
    }

    public static ArgumentException Bad(GatedDeltaNetConfig c, string name, string what) => new($"{c.Node}: {name}: {what}", name);

    private static string Shape(long[] dims) => GatedDeltaNetConfig.Shape(dims);
}

/// <summary>
/// query, key, value and output as the facade's fp32 tensors [ViewBatch, ViewTokens, H, d] over <see cref="FloatViews"/>:
/// ORT's memory for float32 nodes (packed QKV as strided views of it), pooled fp32 copies for float16 and bfloat16 ones,
/// the output converted back by <see cref="Commit"/>.
/// </summary>
internal readonly ref struct GatedDeltaNetViews
{
    private readonly FloatViews _views = new();

    public ReadOnlyTensorSpan<float> Q { get; }
    public ReadOnlyTensorSpan<float> K { get; }
    public ReadOnlyTensorSpan<float> V { get; }
    public TensorSpan<float> Output { get; }

    /// <param name="normalizeQk">q and k as pooled copies, each row L2-normalized with ORT's epsilon (for kernels that do not normalize them).</param>
    /// <param name="epsilon">that epsilon (<see cref="GatedDeltaNetConfig.L2NormEpsilon"/>).</param>
    public GatedDeltaNetViews(in GatedDeltaNetCall call, bool normalizeQk, float epsilon)
    {
        nint b = call.ViewBatch, t = call.ViewTokens, hq = call.Hq, hv = call.Hv, dk = call.Dk, dv = call.Dv;
        var q = _views.In(call.Query);
        if (call.Config.Packed)
        {
            var packed = new PackedQkv<float>(q, b, t, hq, hq, hv, dk, dv);
            Q = packed.Q;
            K = packed.K;
            V = packed.V;
        }
        else
        {
            Q = StridedView.Dense(q, [b, t, hq, dk]);
            K = StridedView.Dense(_views.In(call.Key), [b, t, hq, dk]);
            V = StridedView.Dense(_views.In(call.Value), [b, t, hv, dv]);
        }
        Output = StridedView.Dense(_views.Out(call.Output, "output"), [b, t, hv, dv]);
        if (normalizeQk)
        {
            Q = Normalized(Q, dk, epsilon);
            K = Normalized(K, dk, epsilon);
        }
    }

    /// <summary>A dense copy of x, each row of <paramref name="dim"/> floats divided by sqrt(Σ x² + ε).</summary>
    private ReadOnlyTensorSpan<float> Normalized(ReadOnlyTensorSpan<float> x, nint dim, float epsilon)
    {
        var rows = _views.Rent(x.FlattenedLength).AsSpan();
        x.FlattenTo(rows);
        for (int at = 0; at < rows.Length; at += (int)dim) SimdOps.Normalize(rows.Slice(at, (int)dim), 1f, epsilon);
        return StridedView.Dense<float>(rows, x.Lengths.ToArray());
    }

    /// <summary>Writes a float16 output, refusing a value float16 cannot hold.</summary>
    public void Commit() => _views.Commit();

    public void Dispose() => _views.Dispose();
}

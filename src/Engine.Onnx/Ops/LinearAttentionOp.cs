using Engine.Kernels.Gla;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>The recurrence a LinearAttention node selects (attribute update_rule).</summary>
public enum UpdateRule
{
    Linear,
    Gated,
    Delta,
    GatedDelta,
}

/// <summary>
/// The ONNX LinearAttention signature (ai.onnx opset 27; com.microsoft in ONNX Runtime):
/// inputs query (B,T,Hq·dk), key (B,T,Hk·dk), value (B,T,Hkv·dv), past_state (B,Hkv,dk,dv)?,
/// decay (B,T,Hkv·dk | B,T,Hkv)?, beta (B,T,Hkv | B,T,1)?; outputs output (B,T,max(Hq,Hkv)·dv), present_state?;
/// attributes q_num_heads (Hq), kv_num_heads (Hkv; required), update_rule (default gated_delta), scale (0 → 1/sqrt(dk)),
/// chunk_size (a tuning hint). Heads grouped either way (com.microsoft, ONNX Runtime 1.32): q_num_heads a multiple of
/// kv_num_heads, key heads Hk = Hkv (grouped query heads; the only form ai.onnx LinearAttention-27 defines); or kv_num_heads
/// a multiple of q_num_heads, key heads Hk = Hq (grouped value heads, Qwen3-Next/3.5: kv_num_heads are the value heads).
/// </summary>
internal static class LinearAttentionSignature
{
    public const string OpType = "LinearAttention";
    public const string DefaultUpdateRule = "gated_delta";
    public static readonly string[] InputNames = ["query", "key", "value", "past_state", "decay", "beta"];
    public static readonly string[] OutputNames = ["output", "present_state"];
    public static readonly string[] AttributeNames = ["q_num_heads", "kv_num_heads", "update_rule", "scale", "chunk_size"];

    /// <summary>com.microsoft's attribute for the states after each of the last W tokens (ORT 1.32: CUDA only).</summary>
    public const string StateWindow = "state_window";

    /// <summary>
    /// What the engine's own LinearAttention adds, written by the rewrite that folds a projection's Split and the per-head
    /// LpNormalization of q and k into the node: qk_l2_norm = 1 normalizes q and k rows per head as LpNormalization (p = 2)
    /// does, before the scale; and query may hold the packed rows [q | k | v] (key and value left out, past_state giving dk
    /// and dv), which the CPU kernels read where they lie.
    /// </summary>
    public const string QkL2Norm = "qk_l2_norm";

    /// <summary>
    /// ONNX LpNormalization divides by the norm itself and maps a zero row to zeros: x / sqrt(Σx² + ε) with the smallest positive
    /// fp32 ε does both (it differs only for rows whose Σx² is below fp32's normal range).
    /// </summary>
    public const float LpNormalizationEpsilon = float.Epsilon;

    public const int Query = 0, Key = 1, Value = 2, PastState = 3, Decay = 4, Beta = 5;

    /// <summary>
    /// The engine's own LinearAttention also takes the short convolution that feeds packed query rows, folded in by the rewrite
    /// (ONNX Runtime GenAI's CausalConvWithState over the q|k|v projection): conv_weight (C, 1, W), conv_bias (C)?,
    /// past_conv_state (B, C, W − 1)?, output present_conv_state (B, C, W − 1)?, attribute conv_activation none | silu;
    /// query then holds the rows before the convolution, which the kernels convolve as they load them.
    /// </summary>
    public static readonly string[] EngineInputNames = [.. InputNames, "conv_weight", "conv_bias", "past_conv_state", "norm_scale", "norm_gate"];
    public const int ConvWeight = 6, ConvBias = 7, PastConvState = 8, PresentConvState = 2;
    public const string ConvActivation = "conv_activation";

    /// <summary>
    /// And the gated RMS norm that reads its output, folded in by the rewrite (GatedRMSNorm, or the builder's unfused chain):
    /// norm_scale (dv), norm_gate (B, T, heads·dv), attributes norm_epsilon (1e−5), norm_activation silu | sigmoid; the output is
    /// then the normalized, gated one.
    /// </summary>
    public const int NormScale = 9, NormGate = 10;
    public const string NormEpsilon = "norm_epsilon", NormActivation = "norm_activation";

    /// <summary>The attributes of the engine's own LinearAttention: ONNX's and those its folds write.</summary>
    public static readonly string[] EngineAttributeNames = [.. AttributeNames, QkL2Norm, ConvActivation, NormEpsilon, NormActivation];

    /// <summary>The update rule an update_rule attribute names; refused naming the node when it names none.</summary>
    public static UpdateRule ParseRule(string text, string node) => text switch
    {
        "linear" => UpdateRule.Linear,
        "gated" => UpdateRule.Gated,
        "delta" => UpdateRule.Delta,
        "gated_delta" => UpdateRule.GatedDelta,
        _ => throw new ModelNodeException($"{node}: update_rule must be one of linear, gated, delta, gated_delta, got '{text}'"),
    };

    public static string Name(UpdateRule rule) => rule switch
    {
        UpdateRule.Linear => "linear",
        UpdateRule.Gated => "gated",
        UpdateRule.Delta => "delta",
        _ => "gated_delta",
    };

    public static bool UsesDecay(UpdateRule rule) => rule is UpdateRule.Gated or UpdateRule.GatedDelta;
    public static bool UsesBeta(UpdateRule rule) => rule is UpdateRule.Delta or UpdateRule.GatedDelta;

    /// <summary>
    /// q_num_heads and kv_num_heads of an attention node, checked: present, positive, one a multiple of the other.
    /// <paramref name="node"/> names the node in errors.
    /// </summary>
    public static (int QHeads, int KvHeads) HeadCounts(long? qHeads, long? kvHeads, string node)
    {
        if (qHeads is not long q) throw new ModelNodeException($"{node}: the required attribute q_num_heads is missing");
        if (kvHeads is not long kv) throw new ModelNodeException($"{node}: the required attribute kv_num_heads is missing");
        if (q < 1 || kv < 1 || q > int.MaxValue || kv > int.MaxValue)
            throw new ModelNodeException($"{node}: q_num_heads and kv_num_heads must be positive, got {q} and {kv}");
        if (q % kv != 0 && kv % q != 0)
            throw new ModelNodeException($"{node}: q_num_heads ({q}) must be a multiple of kv_num_heads ({kv}) (grouped query heads), " +
                $"or kv_num_heads a multiple of q_num_heads (grouped value heads)");
        return ((int)q, (int)kv);
    }

    /// <summary>The key heads the engine's kernels take: min(q_num_heads, kv_num_heads).</summary>
    public static int KeyHeads(int qHeads, int kvHeads) => Math.Min(qHeads, kvHeads);

    /// <summary>
    /// Why a key of this width does not fit the node's heads and dk, or null when it does: width = key heads·dk, the key heads
    /// dividing min(q_num_heads, kv_num_heads) — that many, or fewer shared as ONNX Runtime shares them (value head h reads
    /// key head h / (kv_num_heads / key heads)), which the kernel repeats to min(q_num_heads, kv_num_heads).
    /// </summary>
    public static string? KeyWidthProblem(int qHeads, int kvHeads, long dk, long keyWidth)
    {
        long keyHeads = KeyHeads(qHeads, kvHeads);
        return keyWidth > 0 && keyWidth % dk == 0 && keyHeads % (keyWidth / dk) == 0 ? null
            : $"key width {keyWidth} must be key heads·dk with the key heads dividing min(q_num_heads, kv_num_heads) = {keyHeads} (dk = query width / q_num_heads = {dk}; {keyHeads * dk} for one key head per query head)";
    }
}

/// <summary>
/// LinearAttention in the engine's domain: the ONNX signature, run by the engine's kernels. One op per element
/// type (float32, float16), registered under the same name: ORT picks the one whose types the node has.
/// </summary>
internal sealed class LinearAttentionOp(IReadOnlySet<UpdateRule> rules, int elementType) : EngineOp
{
    public override string Name => LinearAttentionSignature.OpType;

    public IReadOnlySet<UpdateRule> Rules { get; } = rules;

    // Every input is optional to ORT: the kernel checks which ones the update rule needs and says so by name.
    public override IReadOnlyList<OpParameter> Inputs { get; } =
        LinearAttentionSignature.EngineInputNames.Select(name => new OpParameter(name, Optional: true, elementType)).ToArray();

    public override IReadOnlyList<OpParameter> Outputs { get; } =
        [new("output", false, elementType), new("present_state", true, elementType), new("present_conv_state", true, elementType)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device)
    {
        return new LinearAttentionKernel(LinearAttentionConfig.FromNode(info, Rules), device);
    }
}

/// <summary>A LinearAttention node's attributes and fixed input shapes, checked when its kernel is made.</summary>
/// <remarks>
/// A Lightning attention node is the linear rule with a constant decay per value head
/// (<see cref="ConstantLogDecay"/>, −slope) and scale 1.
/// </remarks>
internal sealed record LinearAttentionConfig(string Node, int QHeads, int KvHeads, UpdateRule Rule, float? Scale, int? ChunkSize,
    bool HasPastState, bool HasDecay, bool HasBeta, float[]? ConstantLogDecay = null, bool QkL2Norm = false, bool Packed = false,
    ConvFold? Convolution = null, NormFold? Norm = null)
{
    /// <summary>Heads of the key: min(q_num_heads, kv_num_heads).</summary>
    public int KeyHeads => LinearAttentionSignature.KeyHeads(QHeads, KvHeads);

    /// <summary>Heads of the output: max(q_num_heads, kv_num_heads).</summary>
    public int OutputHeads => Math.Max(QHeads, KvHeads);

    public static LinearAttentionConfig FromNode(KernelInfo info, IReadOnlySet<UpdateRule> rules)
    {
        string node = $"LinearAttention node '{info.NodeName}'";
        var (qHeads, kvHeads) = LinearAttentionSignature.HeadCounts(info.Int("q_num_heads"), info.Int("kv_num_heads"), node);
        string ruleText = info.String("update_rule") ?? LinearAttentionSignature.DefaultUpdateRule;
        var rule = LinearAttentionSignature.ParseRule(ruleText, node);
        if (!rules.Contains(rule))
            throw new ModelNodeException($"{node}: update_rule '{ruleText}' has no engine kernel in this build");
        float scale = info.Float("scale") ?? 0f;
        if (!float.IsFinite(scale)) throw new ModelNodeException($"{node}: scale must be finite, got {scale}");
        // A hint, as ORT's CPU kernel takes it too: a size the kernels do not run (0 and negative ones included) falls back to the default.
        long? chunk = info.Int("chunk_size");

        int inputs = info.InputCount;
        if (inputs > LinearAttentionSignature.EngineInputNames.Length)
            throw new ModelNodeException($"{node}: expected at most 11 inputs (query, key, value, past_state, decay, beta, conv_weight, conv_bias, past_conv_state, norm_scale, norm_gate), got {inputs}");
        var q = info.Input(LinearAttentionSignature.Query);
        var k = info.Input(LinearAttentionSignature.Key);
        var v = info.Input(LinearAttentionSignature.Value);
        var past = info.Input(LinearAttentionSignature.PastState);
        var decay = info.Input(LinearAttentionSignature.Decay);
        var beta = info.Input(LinearAttentionSignature.Beta);
        if (!q.Present) throw new ModelNodeException($"{node}: the required input query is missing");
        bool packed = !k.Present && !v.Present;
        if (!packed && !k.Present) throw new ModelNodeException($"{node}: the required input key is missing (key and value are given together, or both left out for packed query rows)");
        if (!packed && !v.Present) throw new ModelNodeException($"{node}: the required input value is missing (key and value are given together, or both left out for packed query rows)");
        if (packed && !past.Present) throw new ModelNodeException($"{node}: packed query rows (key and value left out) need past_state, which gives dk and dv");
        long l2 = info.Int(LinearAttentionSignature.QkL2Norm) ?? 0;
        if (l2 is not (0 or 1)) throw new ModelNodeException($"{node}: {LinearAttentionSignature.QkL2Norm} must be 0 or 1, got {l2}");
        if (l2 == 1 && !LinearAttentionSignature.UsesBeta(rule))
            throw new ModelNodeException($"{node}: {LinearAttentionSignature.QkL2Norm} needs update_rule delta or gated_delta, got '{ruleText}'");
        bool usesDecay = LinearAttentionSignature.UsesDecay(rule), usesBeta = LinearAttentionSignature.UsesBeta(rule);
        if (usesDecay && !decay.Present) throw new ModelNodeException($"{node}: update_rule '{ruleText}' requires the decay input");
        if (!usesDecay && decay.Present) throw new ModelNodeException($"{node}: update_rule '{ruleText}' takes no decay input, but '{decay.Name}' is given");
        if (usesBeta && !beta.Present) throw new ModelNodeException($"{node}: update_rule '{ruleText}' requires the beta input");
        if (!usesBeta && beta.Present) throw new ModelNodeException($"{node}: update_rule '{ruleText}' takes no beta input, but '{beta.Name}' is given");

        foreach (var (input, name, rank) in new[] { (q, "query", 3), (k, "key", 3), (v, "value", 3), (past, "past_state", 4), (decay, "decay", 3), (beta, "beta", 3) })
        {
            if (!input.Present) continue;
            if (input.ElementType != 0 && input.ElementType != Ort.ElementFloat && input.ElementType != Ort.ElementFloat16)
                throw new ModelNodeException($"{node}: input {name} ('{input.Name}') has element type {ElementTypeName(input.ElementType)}; the engine kernels take float32 or float16");
            if (input.Rank is int r && r != rank)
                throw new ModelNodeException($"{node}: input {name} ('{input.Name}') must have rank {rank}, the model gives rank {r} {Shape(input.Dims!)}");
        }

        int keyHeads = LinearAttentionSignature.KeyHeads(qHeads, kvHeads);
        var convolution = ConvFold.FromNode(info, node, packed, LinearAttentionSignature.UsesBeta(rule));
        var norm = NormFold.FromNode(info, node, LinearAttentionSignature.UsesBeta(rule));
        if (packed)
        {
            if (q.Dim(2) is long pw && past.Dim(2) is long pdk && past.Dim(3) is long pdv && pw != PackedQkv.Width(qHeads, keyHeads, kvHeads, pdk, pdv))
                throw new ModelNodeException($"{node}: packed query width {pw} must be (q_num_heads + key heads)·dk + kv_num_heads·dv = " +
                    $"({qHeads} + {keyHeads})·{pdk} + {kvHeads}·{pdv} = {PackedQkv.Width(qHeads, keyHeads, kvHeads, pdk, pdv)} (dk, dv from past_state)");
            return new LinearAttentionConfig(node, qHeads, kvHeads, rule, scale == 0f ? null : scale, chunk is long pc ? (int)Math.Min(pc, int.MaxValue) : null,
                past.Present, decay.Present, beta.Present, QkL2Norm: l2 == 1, Packed: true, Convolution: convolution, Norm: norm);
        }

        // Head dims, where the model fixes the packed widths.
        long? dk = q.Dim(2) is long qw ? (qw % qHeads == 0 ? qw / qHeads
            : throw new ModelNodeException($"{node}: query width {qw} is not a multiple of q_num_heads ({qHeads})")) : null;
        // The key's width gives no dk: its heads may be fewer than min(q_num_heads, kv_num_heads), shared.
        if (k.Dim(2) is long kw && dk is long d && LinearAttentionSignature.KeyWidthProblem(qHeads, kvHeads, d, kw) is string problem)
            throw new ModelNodeException($"{node}: {problem}");
        long? dv = v.Dim(2) is long vw ? (vw % kvHeads == 0 ? vw / kvHeads
            : throw new ModelNodeException($"{node}: value width {vw} is not a multiple of kv_num_heads ({kvHeads})")) : null;
        if (decay.Dim(2) is long gw && gw != kvHeads && (dk is not long d2 || gw != kvHeads * d2))
            throw new ModelNodeException($"{node}: decay width {gw} must be kv_num_heads ({kvHeads}, per head) or kv_num_heads·dk ({(dk is long d3 ? (kvHeads * d3).ToString() : "kv_num_heads·dk")}, per key dim)");
        if (beta.Dim(2) is long bw && bw != kvHeads && bw != 1)
            throw new ModelNodeException($"{node}: beta width {bw} must be kv_num_heads ({kvHeads}) or 1 (shared by all heads)");
        if (past.Present)
        {
            long?[] expected = [null, kvHeads, dk, dv];
            for (int axis = 1; axis < 4; axis++)
                if (past.Dim(axis) is long got && expected[axis] is long want && got != want)
                    throw new ModelNodeException($"{node}: past_state must be (B, kv_num_heads, dk, dv) = (B, {kvHeads}, {dk?.ToString() ?? "dk"}, {dv?.ToString() ?? "dv"}), the model gives {Shape(past.Dims!)}");
        }
        // Batch and time agree wherever the model fixes them.
        foreach (var (input, name) in new[] { (k, "key"), (v, "value"), (decay, "decay"), (beta, "beta") })
            for (int axis = 0; axis < 2; axis++)
                if (input.Dim(axis) is long a && q.Dim(axis) is long b && a != b)
                    throw new ModelNodeException($"{node}: {name} {Shape(input.Dims!)} and query {Shape(q.Dims!)} differ in {(axis == 0 ? "batch" : "sequence length")}");

        return new LinearAttentionConfig(node, qHeads, kvHeads, rule, scale == 0f ? null : scale,
            chunk is long c ? (int)Math.Min(c, int.MaxValue) : null,
            past.Present, decay.Present, beta.Present, QkL2Norm: l2 == 1, Norm: norm);
    }

    internal static string Shape(long[] dims) => "[" + string.Join(", ", dims.Select(d => d < 0 ? "?" : d.ToString())) + "]";

    private static string ElementTypeName(int type) => ((Proto.TensorProto.Types.DataType)type).ToString().ToLowerInvariant();
}

/// <summary>The short convolution a LinearAttention node runs on its packed query rows (the engine's inputs 6-8), checked at load.</summary>
internal sealed record ConvFold(bool Silu)
{
    public static ConvFold? FromNode(KernelInfo info, string node, bool packed, bool deltaRule)
    {
        var weight = info.Input(LinearAttentionSignature.ConvWeight);
        var bias = info.Input(LinearAttentionSignature.ConvBias);
        var past = info.Input(LinearAttentionSignature.PastConvState);
        if (!weight.Present)
        {
            if (bias.Present || past.Present)
                throw new ModelNodeException($"{node}: conv_bias and past_conv_state need conv_weight");
            return null;
        }
        if (!packed) throw new ModelNodeException($"{node}: conv_weight needs packed query rows (key and value left out)");
        if (!deltaRule) throw new ModelNodeException($"{node}: conv_weight needs update_rule delta or gated_delta");
        foreach (var (input, name, rank) in new[] { (weight, "conv_weight", 3), (bias, "conv_bias", 1), (past, "past_conv_state", 3) })
            if (input.Present && input.Rank is int r && r != rank)
                throw new ModelNodeException($"{node}: input {name} ('{input.Name}') must have rank {rank}, the model gives rank {r} {LinearAttentionConfig.Shape(input.Dims!)}");
        if (weight.Dim(1) is long one && one != 1)
            throw new ModelNodeException($"{node}: conv_weight must be (C, 1, W), the model gives {LinearAttentionConfig.Shape(weight.Dims!)}");
        return (info.String(LinearAttentionSignature.ConvActivation) ?? "none") switch
        {
            "none" => new ConvFold(false),
            "silu" or "swish" => new ConvFold(true),
            var other => throw new ModelNodeException($"{node}: {LinearAttentionSignature.ConvActivation} must be none, silu or swish, got '{other}'"),
        };
    }
}

/// <summary>The gated RMS norm a LinearAttention node applies to its output (the engine's inputs 9-10), checked at load.</summary>
internal sealed record NormFold(float Epsilon, GateActivation Activation)
{
    public static NormFold? FromNode(KernelInfo info, string node, bool deltaRule)
    {
        var scale = info.Input(LinearAttentionSignature.NormScale);
        var gate = info.Input(LinearAttentionSignature.NormGate);
        if (!scale.Present && !gate.Present) return null;
        if (!scale.Present || !gate.Present) throw new ModelNodeException($"{node}: norm_scale and norm_gate are given together");
        if (!deltaRule) throw new ModelNodeException($"{node}: norm_scale needs update_rule delta or gated_delta");
        if (scale.Rank is int rs && rs != 1)
            throw new ModelNodeException($"{node}: input norm_scale ('{scale.Name}') must have rank 1 (dv), the model gives rank {rs}");
        if (gate.Rank is int rg && rg != 3)
            throw new ModelNodeException($"{node}: input norm_gate ('{gate.Name}') must have rank 3 (B, T, heads·dv), the model gives rank {rg}");
        float epsilon = info.Float(LinearAttentionSignature.NormEpsilon) ?? 1e-5f;
        if (!GatedRmsNormSignature.EngineRuns(epsilon)) throw new ModelNodeException($"{node}: {LinearAttentionSignature.NormEpsilon} must be finite and >= 0, got {epsilon}");
        return new NormFold(epsilon, GatedRmsNormSignature.Activation(info.String(LinearAttentionSignature.NormActivation), node));
    }
}

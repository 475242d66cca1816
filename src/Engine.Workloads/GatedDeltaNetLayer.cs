using Engine.Onnx;
using Engine.Onnx.Proto;

namespace Engine.Workloads;

/// <summary>The sizes and form of a Gated DeltaNet layer (Qwen3.5's linear-attention layer).</summary>
public sealed record GatedDeltaNetSpec
{
    /// <summary>Model width: the layer maps hidden states (B, T, Hidden) to (B, T, Hidden).</summary>
    public int Hidden { get; init; } = 64;
    /// <summary>Query and key heads (linear_num_key_heads; the node's q_num_heads).</summary>
    public int QkHeads { get; init; } = 2;
    /// <summary>Value heads (linear_num_value_heads; the node's kv_num_heads): a multiple of <see cref="QkHeads"/>.</summary>
    public int ValueHeads { get; init; } = 4;
    public int KeyDim { get; init; } = 16;
    public int ValueDim { get; init; } = 16;
    /// <summary>The depthwise causal convolution's kernel width K; the conv state keeps K − 1 columns.</summary>
    public int ConvKernel { get; init; } = 4;
    /// <summary>
    /// The builder's fused-gate export: com.microsoft LinearAttentionGate for beta and the decay, GatedRMSNorm for
    /// the gated norm, instead of the float32 chains of ONNX ops around them.
    /// </summary>
    public bool FusedGates { get; init; }
    /// <summary>Tensor type of the hidden states, weights and states: Float or Float16 (the decay is computed in float32 either way).</summary>
    public TensorElementType ElementType { get; init; } = TensorElementType.Float;
    /// <summary>
    /// The builder's CPU int4 export: every projection a com.microsoft MatMulNBits with 4-bit weights (<see cref="Projection"/>)
    /// instead of a MatMul; the activations keep <see cref="ElementType"/>.
    /// </summary>
    public bool Int4Weights { get; init; }
    /// <summary>
    /// The int4 projections' accuracy_level: 4, the builder's CPU default, rounds each input row to int8 per block of 32 and
    /// multiplies in integers; 0 multiplies in the activations' type.
    /// </summary>
    public int Int4AccuracyLevel { get; init; } = 4;
    internal int? Int4Projections => Int4Weights ? Int4AccuracyLevel : null;
    /// <summary>
    /// Whether the graph declares every inner value's type and shape (value_info), batch and length symbolic unless fixed, as
    /// the builder's make_value does; false leaves them for the rewrite to infer, as exporters that declare none do.
    /// </summary>
    public bool DeclareValues { get; init; } = true;
    /// <summary>Batch and length fixed in the standalone model; null leaves them symbolic ("batch_size", "sequence_length").</summary>
    public int? Batch { get; init; }
    public int? Length { get; init; }
    public float NormEpsilon { get; init; } = 1e-6f;
    public int Seed { get; init; } = 1;

    /// <summary>Channels of the convolution: q, k and v side by side.</summary>
    public int ConvChannels => 2 * QkHeads * KeyDim + ValueHeads * ValueDim;

    internal void Validate()
    {
        if (Hidden < 1 || QkHeads < 1 || ValueHeads < 1 || KeyDim < 1 || ValueDim < 1)
            throw new ArgumentOutOfRangeException(nameof(GatedDeltaNetSpec), "hidden size, heads and head dims must be positive");
        if (ValueHeads % QkHeads != 0)
            throw new ArgumentException($"value heads ({ValueHeads}) must be a multiple of query/key heads ({QkHeads})", nameof(GatedDeltaNetSpec));
        if (ConvKernel < 2)
            throw new ArgumentOutOfRangeException(nameof(GatedDeltaNetSpec), ConvKernel, "the conv kernel must be at least 2 wide (the state keeps K - 1 columns)");
        if (Int4AccuracyLevel is < 0 or > 4)
            throw new ArgumentOutOfRangeException(nameof(GatedDeltaNetSpec), Int4AccuracyLevel, "the int4 accuracy level must be in [0, 4] (MatMulNBits' accuracy_level)");
        if (ElementType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ArgumentException($"element type must be Float or Float16, got {ElementType}", nameof(GatedDeltaNetSpec));
    }
}

/// <summary>
/// The Gated DeltaNet layer as ONNX Runtime GenAI's builder writes it for Qwen3.5: in_proj_qkv, in_proj_z, in_proj_b,
/// in_proj_a (MatMul) → Transpose → com.microsoft.CausalConvWithState (SiLU, conv state [B, C, K−1]) → Transpose →
/// Split → per-head LpNormalization of q and k, q · dk^−½ → beta = Sigmoid(b), decay = −exp(A_log) · Softplus(a + dt_bias)
/// in float32 → com.microsoft.LinearAttention (gated_delta, scale 1, grouped value heads, recurrent state
/// [B, Hv, dk, dv]) → gated RMS norm (SimplifiedLayerNormalization per head times SiLU(z)) → out_proj MatMul.
/// Weights are random from the spec's seed.
/// </summary>
public static class GatedDeltaNetLayer
{
    public const string Input = "hidden_states";
    public const string Output = "output";
    public const string PastConvState = "past_conv_state";
    public const string PastRecurrentState = "past_recurrent_state";
    public const string PresentConvState = "present_conv_state";
    public const string PresentRecurrentState = "present_recurrent_state";

    /// <summary>
    /// The layer alone: inputs hidden_states (B, T, Hidden), past_conv_state (B, C, K−1), past_recurrent_state
    /// (B, Hv, dk, dv); outputs output (B, T, Hidden), present_conv_state and present_recurrent_state.
    /// </summary>
    public static OnnxModel Model(GatedDeltaNetSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        var type = (TensorProto.Types.DataType)spec.ElementType;
        object batch = spec.Batch is int b ? b : "batch_size", length = spec.Length is int t ? t : "sequence_length";
        var builder = new ModelBuilder(21, "gated_deltanet_layer").Import(HandoverRewriter.MicrosoftDomain, 1);
        string x = builder.Input(Input, type, batch, length, spec.Hidden);
        var states = new StateNames(
            builder.Input(PastConvState, type, batch, spec.ConvChannels, spec.ConvKernel - 1),
            builder.Input(PastRecurrentState, type, batch, spec.ValueHeads, spec.KeyDim, spec.ValueDim),
            PresentConvState, PresentRecurrentState);
        string y = Add(builder, spec, new Random(spec.Seed), x, "/model/layers.0/linear_attn", states);
        builder.Node("Identity", [y], outputNames: [Output]);
        builder.Output(Output, type, batch, length, spec.Hidden);
        builder.Output(PresentConvState, type, batch, spec.ConvChannels, spec.ConvKernel - 1);
        builder.Output(PresentRecurrentState, type, batch, spec.ValueHeads, spec.KeyDim, spec.ValueDim);
        return builder.Build();
    }

    /// <summary>The graph names of one layer's states: past ones read, present ones written.</summary>
    internal sealed record StateNames(string PastConv, string PastRecurrent, string PresentConv, string PresentRecurrent);

    /// <summary>Adds the layer reading <paramref name="input"/> (B, T, Hidden); returns the name of its output (B, T, Hidden).</summary>
    internal static string Add(ModelBuilder b, GatedDeltaNetSpec spec, Random random, string input, string prefix, StateNames states)
    {
        var io = spec.ElementType;
        int d = spec.Hidden, hk = spec.QkHeads, hv = spec.ValueHeads, dk = spec.KeyDim, dv = spec.ValueDim, k = spec.ConvKernel;
        int keyWidth = hk * dk, valueWidth = hv * dv, channels = spec.ConvChannels;
        string Name(string part) => $"{prefix}/{part}";
        object batch = spec.Batch is int fixedBatch ? fixedBatch : "batch_size", length = spec.Length is int fixedLength ? fixedLength : "sequence_length";
        // The builder's make_value: each value's type, and its shape with batch and length as they are given.
        string Declared(string value, TensorElementType type, params object[] dims) =>
            spec.DeclareValues ? b.Declare(value, (TensorProto.Types.DataType)type, dims) : value;
        string Rows(string value, TensorElementType type, params object[] dims) => Declared(value, type, [batch, length, .. dims]);
        const TensorElementType fp32 = TensorElementType.Float;
        string Weight(string part, float[] values, params long[] dims) => b.Initializer(Name(part), values, io, dims);
        string MatMul(string part, string x, int rows, int columns) =>
            Projection.Add(b, x, Name(part + ".weight"), SampleModels.Weights(random, rows, columns), rows, columns, io, spec.Int4Projections, Name(part));
        string Node(string opType, string part, string[] inputs, string domain = "", params (string, object)[] attributes) =>
            b.Node(opType, inputs, domain: domain, name: Name(part), attributes: attributes)[0];
        string Cast(string part, string x, TensorElementType to) => Node("Cast", part, [x], attributes: [("to", (long)to)]);

        string qkv = Rows(MatMul("in_proj_qkv", input, d, channels), io, channels);
        string z = Rows(MatMul("in_proj_z", input, d, valueWidth), io, valueWidth);
        string betaLogits = Rows(MatMul("in_proj_b", input, d, hv), io, hv);
        string a = Rows(MatMul("in_proj_a", input, d, hv), io, hv);

        // The depthwise causal convolution over time, channels first, with its K − 1 columns of carried state.
        string channelsFirst = Declared(Node("Transpose", "qkv_transpose/Transpose", [qkv], attributes: [("perm", new long[] { 0, 2, 1 })]), io, batch, channels, length);
        string convWeight = Weight("conv1d.weight", SampleModels.Weights(random, k, channels), channels, 1, k);
        string convBias = Weight("conv1d.bias", new float[channels], channels);
        string conv = b.Node("CausalConvWithState", [channelsFirst, convWeight, convBias, states.PastConv], domain: HandoverRewriter.MicrosoftDomain,
            name: Name("CausalConvWithState"), outputNames: [Name("CausalConvWithState/output_0"), states.PresentConv],
            attributes: [("ndim", 1L), ("activation", "silu")])[0];
        Declared(conv, io, batch, channels, length);
        string convOut = Rows(Node("Transpose", "conv_out/Transpose", [conv], attributes: [("perm", new long[] { 0, 2, 1 })]), io, channels);
        var split = b.Node("Split", [convOut, b.Int64s(Name("split_sizes"), keyWidth, keyWidth, valueWidth)], outputs: 3,
            name: Name("split_qkv/Split"), attributes: [("axis", -1L)]);
        Rows(split[0], io, keyWidth);
        Rows(split[1], io, keyWidth);
        Rows(split[2], io, valueWidth);

        string PerHeadL2(string part, string x)
        {
            string heads = Rows(Node("Reshape", part + "/flat/Reshape", [x, b.Int64s(Name(part + "/heads_shape"), 0, 0, hk, dk)]), io, hk, dk);
            string unit = Rows(Node("LpNormalization", part + "/LpNormalization", [heads], attributes: [("axis", -1L), ("p", 2L)]), io, hk, dk);
            return Rows(Node("Reshape", part + "/unflat/Reshape", [unit, b.Int64s(Name(part + "/packed_shape"), 0, 0, keyWidth)]), io, keyWidth);
        }
        string q = Rows(Node("Mul", "q_scaled/Mul", [PerHeadL2("q_l2norm", split[0]), Weight("q_scale", [1f / MathF.Sqrt(dk)], 1)]), io, keyWidth);
        string key = PerHeadL2("k_l2norm", split[1]);

        // A = uniform(1, 16) and dt = log-uniform(0.001, 0.1) as the reference model initializes them; dt_bias = softplus⁻¹(dt).
        float[] negExpA = Enumerable.Range(0, hv).Select(_ => -(1f + 15f * random.NextSingle())).ToArray();
        float[] dtBias = Enumerable.Range(0, hv).Select(_ =>
        {
            double dt = Math.Exp(Math.Log(0.001) + random.NextDouble() * (Math.Log(0.1) - Math.Log(0.001)));
            return (float)(dt + Math.Log(1 - Math.Exp(-dt)));
        }).ToArray();
        string dtBiasName = b.Initializer(Name("dt_bias"), dtBias, hv);
        string negExpAName = b.Initializer(Name("neg_exp_A"), negExpA, hv);
        string decay, beta;
        if (spec.FusedGates)
        {
            var gates = b.Node("LinearAttentionGate", [a, dtBiasName, negExpAName, betaLogits], outputs: 2,
                domain: HandoverRewriter.MicrosoftDomain, name: Name("gate/LinearAttentionGate"));
            (decay, beta) = (Rows(gates[0], io, hv), Rows(gates[1], io, hv));
        }
        else
        {
            beta = Rows(Node("Sigmoid", "beta/Sigmoid", [betaLogits]), io, hv);
            string shifted = Rows(Node("Add", "decay/Add", [Rows(Cast("decay/a_cast/Cast", a, fp32), fp32, hv), dtBiasName]), fp32, hv);
            string decayFloat = Rows(Node("Mul", "decay/Mul", [negExpAName, Rows(Node("Softplus", "decay/Softplus", [shifted]), fp32, hv)]), fp32, hv);
            decay = Rows(Cast("decay/g_cast/Cast", decayFloat, io), io, hv);
        }

        string attention = b.Node("LinearAttention", [q, key, split[2], states.PastRecurrent, decay, beta], domain: HandoverRewriter.MicrosoftDomain,
            name: Name("LinearAttention"), outputNames: [Name("LinearAttention/output_0"), states.PresentRecurrent],
            attributes: [("q_num_heads", (long)hk), ("kv_num_heads", (long)hv), ("update_rule", "gated_delta"), ("scale", 1f)])[0];
        Rows(attention, io, valueWidth);

        // RMS norm per value head (a weight of dv, around 1), times SiLU(z) in float32.
        string normWeight = Weight("norm.weight", Enumerable.Range(0, dv).Select(_ => 1f + 0.1f * (2 * random.NextSingle() - 1)).ToArray(), dv);
        string gated;
        if (spec.FusedGates)
        {
            gated = Rows(Node("GatedRMSNorm", "gated_norm/GatedRMSNorm", [attention, normWeight, z], HandoverRewriter.MicrosoftDomain,
                ("epsilon", spec.NormEpsilon)), io, valueWidth);
        }
        else
        {
            string heads = Rows(Node("Reshape", "gated_norm/input_flat/Reshape", [attention, b.Int64s(Name("gated_norm/heads_shape"), 0, 0, hv, dv)]), io, hv, dv);
            string normed = Rows(Node("SimplifiedLayerNormalization", "gated_norm/SimplifiedLayerNormalization", [heads, normWeight],
                attributes: [("epsilon", spec.NormEpsilon), ("axis", -1L), ("stash_type", 1L)]), io, hv, dv);
            string packed = Rows(Node("Reshape", "gated_norm/norm_unflat/Reshape", [normed, b.Int64s(Name("gated_norm/packed_shape"), 0, 0, valueWidth)]), io, valueWidth);
            string zFloat = Rows(Cast("gated_norm/z_cast/Cast", z, fp32), fp32, valueWidth);
            string sigmoid = Rows(Node("Sigmoid", "gated_norm/z_sigmoid/Sigmoid", [zFloat]), fp32, valueWidth);
            string silu = Rows(Node("Mul", "gated_norm/z_silu/Mul", [zFloat, sigmoid]), fp32, valueWidth);
            string packedFloat = Rows(Cast("gated_norm/norm_cast/Cast", packed, fp32), fp32, valueWidth);
            string product = Rows(Node("Mul", "gated_norm/gated_fp32/Mul", [packedFloat, silu]), fp32, valueWidth);
            gated = Rows(Cast("gated_norm/gated/Cast", product, io), io, valueWidth);
        }
        return Rows(MatMul("out_proj", gated, valueWidth, d), io, d);
    }
}

using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Onnx.Proto;

namespace Engine.Workloads;

/// <summary>What the linear-attention block model looks like.</summary>
public sealed record LinearAttentionBlockSpec
{
    /// <summary>Model width: x and y are (B, T, Hidden).</summary>
    public int Hidden { get; init; } = 256;
    /// <summary>q_num_heads: the query heads.</summary>
    public int QHeads { get; init; } = 4;
    /// <summary>kv_num_heads: the value heads (of the state, decay and beta); a divisor of QHeads, or a multiple of it (grouped value heads).</summary>
    public int KvHeads { get; init; } = 4;
    /// <summary>Heads of the key: min(QHeads, KvHeads).</summary>
    public int KeyHeads => LinearAttentionSignature.KeyHeads(QHeads, KvHeads);
    /// <summary>Heads of the output: max(QHeads, KvHeads).</summary>
    public int OutputHeads => Math.Max(QHeads, KvHeads);
    public int KeyDim { get; init; } = 32;
    public int ValueDim { get; init; } = 32;
    public UpdateRule Rule { get; init; } = UpdateRule.Gated;
    public DecayForm Decay { get; init; } = DecayForm.PerKey;
    /// <summary>Beta (B, T, Hkv) per head, or (B, T, 1) shared by every head.</summary>
    public bool BetaPerHead { get; init; } = true;
    /// <summary>A past_state graph input (decode: feed present_state back).</summary>
    public bool PastState { get; init; } = true;
    /// <summary>"com.microsoft" (ONNX Runtime's contrib op) or "" (ai.onnx LinearAttention, opset 27).</summary>
    public string Domain { get; init; } = HandoverRewriter.MicrosoftDomain;
    /// <summary>0 lets the op use 1/sqrt(dk).</summary>
    public float Scale { get; init; }
    public int Seed { get; init; } = 1;
    /// <summary>Blocks stacked one after another (each with its own weights, state and LinearAttention node).</summary>
    public int Layers { get; init; } = 1;
    /// <summary>Tensor type of the node models (<see cref="SampleModels.LinearAttentionNode"/>): float or float16. The block is float.</summary>
    public TensorElementType ElementType { get; init; } = TensorElementType.Float;
    /// <summary>Batch and length fixed in the model; null leaves them symbolic ("B", "T").</summary>
    public int? Batch { get; init; }
    public int? Length { get; init; }
}

/// <summary>
/// Real ONNX models for the tests, the samples and the benchmarks.
/// The linear-attention block: x → MatMul → q; MatMul → k (L2-normalized per head for the delta rules);
/// MatMul → v; MatMul → log-sigmoid → decay; MatMul → Sigmoid → beta; LinearAttention; MatMul → y.
/// Everything but LinearAttention runs in ONNX Runtime.
/// </summary>
public static partial class SampleModels
{
    public static OnnxModel LinearAttentionBlock(LinearAttentionBlockSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Layers < 1) throw new ArgumentOutOfRangeException(nameof(spec), spec.Layers, "at least one layer");
        var random = new Random(spec.Seed);
        bool opset27 = spec.Domain.Length == 0;
        var b = new ModelBuilder(opset27 ? 27 : 21, "linear_attention_block");
        if (!opset27) b.Import(spec.Domain, 1);
        string x = b.Input("x", TensorProto.Types.DataType.Float, BatchDim(spec), LengthDim(spec), spec.Hidden);
        for (int layer = 0; layer < spec.Layers; layer++)
            x = AddLayer(b, spec, random, x, spec.Layers == 1 ? "" : $"_{layer}");
        b.Output(x, TensorProto.Types.DataType.Float, BatchDim(spec), LengthDim(spec), spec.Hidden);
        return b.Build();
    }

    /// <summary>
    /// The LinearAttention node alone, its inputs graph inputs: query, key, value, past_state (when
    /// <see cref="LinearAttentionBlockSpec.PastState"/>), decay and beta (as the rule needs); outputs output and present_state.
    /// </summary>
    public static OnnxModel LinearAttentionNode(LinearAttentionBlockSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var F = (TensorProto.Types.DataType)spec.ElementType;
        bool opset27 = spec.Domain.Length == 0;
        var b = new ModelBuilder(opset27 ? 27 : 21, "linear_attention");
        if (!opset27) b.Import(spec.Domain, 1);
        AttentionInputs(b, spec);
        object batch = BatchDim(spec), length = LengthDim(spec);
        int hkv = spec.KvHeads, dk = spec.KeyDim;
        bool decay = LinearAttentionSignature.UsesDecay(spec.Rule), beta = LinearAttentionSignature.UsesBeta(spec.Rule);
        if (decay) b.Input("decay", F, batch, length, spec.Decay == DecayForm.PerKey ? hkv * dk : hkv);
        if (beta) b.Input("beta", F, batch, length, spec.BetaPerHead ? hkv : 1);
        b.Node(LinearAttentionSignature.OpType,
            ["query", "key", "value", spec.PastState ? "past_state" : "", decay ? "decay" : "", beta ? "beta" : ""],
            domain: spec.Domain, name: "linear_attention", outputNames: ["output", "present_state"], attributes: Attributes(spec));
        AttentionOutputs(b, spec);
        return b.Build();
    }

    /// <summary>
    /// An ai.engine LightningAttention node alone, its inputs graph inputs (query, key, value, past_state when
    /// <see cref="LinearAttentionBlockSpec.PastState"/>); slopes given, or from the schedule (of a layer, when given).
    /// The spec's rule, decay and beta are not used; its scale (0 = the op's default 1) is.
    /// </summary>
    public static OnnxModel LightningAttentionNode(LinearAttentionBlockSpec spec, float[]? slopes = null, (int Layer, int Layers)? schedule = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var b = new ModelBuilder(21, "lightning_attention").Import(HandoverRewriter.EngineDomain, 1);
        AttentionInputs(b, spec);
        var attributes = new List<(string, object)> { ("q_num_heads", (long)spec.QHeads), ("kv_num_heads", (long)spec.KvHeads) };
        if (slopes is not null) attributes.Add(("slopes", slopes));
        if (schedule is (int layer, int layers)) attributes.AddRange([("layer", (long)layer), ("num_layers", (long)layers)]);
        if (spec.Scale != 0f) attributes.Add(("scale", spec.Scale));
        b.Node(LightningAttentionSignature.OpType, ["query", "key", "value", spec.PastState ? "past_state" : ""],
            domain: HandoverRewriter.EngineDomain, name: "lightning_attention", outputNames: ["output", "present_state"], attributes: [.. attributes]);
        AttentionOutputs(b, spec);
        return b.Build();
    }

    /// <summary>
    /// An ai.engine LsslScan node: u (B, L, H) and past_state (B, H, N) graph inputs (past_state when
    /// <paramref name="pastState"/>), the parameters initializers: HiPPO-LegS A (N, N) shared (or its diagonal
    /// (H, N) when <paramref name="diagonal"/>), B (N), random C (H, N) and D (H), log-uniform Δ (H) stored as
    /// log Δ; outputs y and present_state.
    /// </summary>
    public static OnnxModel LsslScanNode(int channels, int stateSize, bool diagonal = false, bool pastState = true,
        string discretization = "bilinear", int seed = 1)
    {
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
        var random = new Random(seed);
        var b = new ModelBuilder(21, "lssl_scan").Import(HandoverRewriter.EngineDomain, 1);
        b.Input("u", F, "B", "L", channels);
        if (pastState) b.Input("past_state", F, "B", channels, stateSize);
        var (a, bVector) = Lssl.HippoLegS(stateSize);
        float[] aValues = a.ToArray();
        string aName = diagonal
            ? b.Initializer("A", Enumerable.Range(0, channels * stateSize).Select(i => aValues[(i % stateSize) * (stateSize + 1)]).ToArray(), channels, stateSize)
            : b.Initializer("A", aValues, stateSize, stateSize);
        string bName = b.Initializer("B", bVector.ToArray(), stateSize);
        string cName = b.Initializer("C", Weights(random, channels, stateSize), channels, stateSize);
        string dName = b.Initializer("D", Weights(random, 1, channels), channels);
        string dtName = b.Initializer("dt", Lssl.LogUniformDt(channels, seed).ToArray().Select(dt => MathF.Log(dt)).ToArray(), channels);
        b.Node(LsslScanSignature.OpType, ["u", pastState ? "past_state" : "", aName, bName, cName, dName, dtName],
            domain: HandoverRewriter.EngineDomain, name: "lssl", outputNames: ["y", "present_state"],
            attributes: [("discretization", discretization), ("log_dt", 1L)]);
        b.Output("y", F, "B", "L", channels);
        b.Output("present_state", F, "B", channels, stateSize);
        return b.Build();
    }

    /// <summary>query, key, value (B, T, heads·dim) and, when the spec has one, past_state (B, Hkv, dk, dv).</summary>
    private static void AttentionInputs(ModelBuilder b, LinearAttentionBlockSpec spec)
    {
        var F = (TensorProto.Types.DataType)spec.ElementType;
        object batch = BatchDim(spec), length = LengthDim(spec);
        b.Input("query", F, batch, length, spec.QHeads * spec.KeyDim);
        b.Input("key", F, batch, length, spec.KeyHeads * spec.KeyDim);
        b.Input("value", F, batch, length, spec.KvHeads * spec.ValueDim);
        if (spec.PastState) b.Input("past_state", F, batch, spec.KvHeads, spec.KeyDim, spec.ValueDim);
    }

    /// <summary>output (B, T, max(Hq, Hkv)·dv) and present_state (B, Hkv, dk, dv).</summary>
    private static void AttentionOutputs(ModelBuilder b, LinearAttentionBlockSpec spec)
    {
        var F = (TensorProto.Types.DataType)spec.ElementType;
        b.Output("output", F, BatchDim(spec), LengthDim(spec), spec.OutputHeads * spec.ValueDim);
        b.Output("present_state", F, BatchDim(spec), spec.KvHeads, spec.KeyDim, spec.ValueDim);
    }

    private static object BatchDim(LinearAttentionBlockSpec spec) => spec.Batch is int n ? n : "B";
    private static object LengthDim(LinearAttentionBlockSpec spec) => spec.Length is int n ? n : "T";

    private static (string, object)[] Attributes(LinearAttentionBlockSpec spec)
    {
        var attributes = new List<(string, object)>
        {
            ("q_num_heads", (long)spec.QHeads), ("kv_num_heads", (long)spec.KvHeads), ("update_rule", LinearAttentionSignature.Name(spec.Rule)),
        };
        if (spec.Scale != 0f) attributes.Add(("scale", spec.Scale));
        return [.. attributes];
    }

    /// <summary>Names of a layer's state input and output (suffix "" for a single layer, "_l" for layer l).</summary>
    public static string PastStateName(string suffix) => "past_state" + suffix;
    public static string PresentStateName(string suffix) => "present_state" + suffix;

    private static string AddLayer(ModelBuilder b, LinearAttentionBlockSpec spec, Random random, string x, string suffix)
    {
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
        int d = spec.Hidden, hq = spec.QHeads, hk = spec.KeyHeads, hkv = spec.KvHeads, ho = spec.OutputHeads, dk = spec.KeyDim, dv = spec.ValueDim;
        string? past = spec.PastState ? b.Input(PastStateName(suffix), F, BatchDim(spec), hkv, dk, dv) : null;
        string Project(string name, int width) => b.Op("MatMul", x, b.Initializer(name + suffix, Weights(random, d, width), d, width));

        string q = Project("w_query", hq * dk);
        string k = Project("w_key", hk * dk);
        if (LinearAttentionSignature.UsesBeta(spec.Rule))
        {
            // The delta rule wants unit keys: normalize each head's key.
            var heads = b.Op("Reshape", k, b.Initializer("key_heads_shape" + suffix, TensorData.Create(new long[] { 0, 0, hk, dk }, 4)));
            var unit = b.Node("LpNormalization", [heads], attributes: [("axis", -1L), ("p", 2L)])[0];
            k = b.Op("Reshape", unit, b.Initializer("key_packed_shape" + suffix, TensorData.Create(new long[] { 0, 0, hk * dk }, 3)));
        }
        string v = Project("w_value", hkv * dv);
        string decay = "", beta = "";
        if (LinearAttentionSignature.UsesDecay(spec.Rule))
        {
            int width = spec.Decay == DecayForm.PerKey ? hkv * dk : hkv;
            // log sigmoid(z) = -softplus(-z), shifted so most gates stay near 1, as trained models' do.
            var z = b.Op("Add", Project("w_decay", width), b.Initializer("decay_bias" + suffix, Filled(width, DecayBias), width));
            var logSigmoid = b.Op("Neg", b.Op("Softplus", b.Op("Neg", z)));
            decay = b.Op("Mul", logSigmoid, b.Initializer("decay_strength" + suffix, [DecayStrength(spec.Decay)]));
        }
        if (LinearAttentionSignature.UsesBeta(spec.Rule))
            beta = b.Op("Sigmoid", Project("w_beta", spec.BetaPerHead ? hkv : 1));

        var outputs = b.Node(LinearAttentionSignature.OpType, [q, k, v, past ?? "", decay, beta], domain: spec.Domain,
            name: "linear_attention" + suffix, outputNames: ["attention" + suffix, PresentStateName(suffix)], attributes: Attributes(spec));
        b.Output(PresentStateName(suffix), F, BatchDim(spec), hkv, dk, dv);
        return b.Node("MatMul", [outputs[0], b.Initializer("w_out" + suffix, Weights(random, ho * dv, d), ho * dv, d)],
            outputNames: ["y" + suffix])[0];
    }

    /// <summary>The decay is strength · log sigmoid(x W + bias).</summary>
    public const float DecayBias = 3f;

    public static float DecayStrength(DecayForm form) => form == DecayForm.PerKey ? 0.25f : 1f;

    /// <summary>The sample models kept in the repository (samples/models), by file name.</summary>
    public static IReadOnlyDictionary<string, OnnxModel> Samples()
    {
        var small = new LinearAttentionBlockSpec { Hidden = 32, QHeads = 2, KvHeads = 2, KeyDim = 16, ValueDim = 16 };
        return new Dictionary<string, OnnxModel>
        {
            ["gla_block.onnx"] = LinearAttentionBlock(small with { Rule = UpdateRule.Gated, Decay = DecayForm.PerKey }),
            ["retnet_block.onnx"] = LinearAttentionBlock(small with { Rule = UpdateRule.Gated, Decay = DecayForm.PerHead }),
            ["gated_deltanet_block_opset27.onnx"] = LinearAttentionBlock(small with { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, Domain = "", Layers = 2 }),
            ["lightning_attention.onnx"] = LightningAttentionNode(small with { QHeads = 4, KvHeads = 2 }, schedule: (2, 12)),
            ["lssl_scan.onnx"] = LsslScanNode(channels: 8, stateSize: 16),
        };
    }

    /// <summary>Writes <see cref="Samples"/> into <paramref name="directory"/>.</summary>
    public static void WriteSamples(string directory)
    {
        Directory.CreateDirectory(directory);
        foreach (var (name, model) in Samples()) model.Save(Path.Combine(directory, name));
    }

    /// <summary>Normal(0, 1/sqrt(rows)) weights, so activations keep unit scale.</summary>
    public static float[] Weights(Random random, int rows, int columns)
    {
        var w = new float[rows * columns];
        double std = 1 / Math.Sqrt(rows);
        for (int i = 0; i < w.Length; i++)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            w[i] = (float)(std * Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return w;
    }

    private static float[] Filled(int n, float value)
    {
        var a = new float[n];
        Array.Fill(a, value);
        return a;
    }
}

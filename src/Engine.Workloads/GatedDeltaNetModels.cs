using Engine.Onnx;
using Engine.Onnx.Proto;

namespace Engine.Workloads;

/// <summary>How a com.microsoft GatedDeltaNet node's query, key and value are laid out.</summary>
public enum GatedDeltaNetLayout
{
    /// <summary>query [N, Hq, dk], key [N, Hq, dk], value [N, Hv, dv]: the token axis (uniform batches, or ragged with cu_seqlens).</summary>
    Tokens,
    /// <summary>query [B, S, Hq, dk], key, value likewise: the rank-4 spelling.</summary>
    Batched,
}

/// <summary>One com.microsoft GatedDeltaNet node: its layout, heads, gate form and attributes.</summary>
public sealed record GatedDeltaNetNodeSpec
{
    public GatedDeltaNetLayout Layout { get; init; } = GatedDeltaNetLayout.Tokens;
    /// <summary>query packed QKV [N, 2·Hq·dk + Hv·dv] (or [B, S, ..]), no key and value inputs.</summary>
    public bool PackedQkv { get; init; }
    /// <summary>A cu_seqlens input (ragged packing; <see cref="GatedDeltaNetLayout.Tokens"/> only).</summary>
    public bool Ragged { get; init; }
    /// <summary>Query and key heads.</summary>
    public int QHeads { get; init; } = 2;
    /// <summary>Value heads: a multiple of <see cref="QHeads"/>.</summary>
    public int ValueHeads { get; init; } = 4;
    public int KeyDim { get; init; } = 16;
    public int ValueDim { get; init; } = 16;
    /// <summary>update_rule: delta or gated_delta.</summary>
    public string UpdateRule { get; init; } = "gated_delta";
    /// <summary>decay [N, Hv, dk] (one per key dim) instead of [N, Hv].</summary>
    public bool DecayPerKey { get; init; }
    /// <summary>gate_activation: none, softplus (qwen), sigmoid (kda).</summary>
    public string DecayGateActivation { get; init; } = "none";
    /// <summary>dt_bias's shape: [Hv] (null), [Hv, dk] (2) or [Hv·dk] (1, flat).</summary>
    public int? DtBiasPerKeyRank { get; init; }
    public float? GateLowerBound { get; init; }
    public bool BetaSigmoid { get; init; }
    public bool QkL2Norm { get; init; }
    public float Scale { get; init; }
    public int? ChunkSize { get; init; }
    /// <summary>state_update_capacity: 0 leaves out capture_count, state_update_active and state_update.</summary>
    public int StateUpdateCapacity { get; init; }
    /// <summary>query, key, value and output: float, float16 or bfloat16.</summary>
    public TensorElementType ElementType { get; init; } = TensorElementType.Float;
    /// <summary>decay and beta: float, or the query's type.</summary>
    public TensorElementType GateElementType { get; init; } = TensorElementType.Float;
    /// <summary>Heads and head dims as symbols in the model too (only the calls fix them).</summary>
    public bool SymbolicShapes { get; init; }
    /// <summary>a_log and dt_bias as initializers with these values rather than graph inputs.</summary>
    public (float[] ALog, float[] DtBias)? GateParameters { get; init; }

    public bool UsesDecay => UpdateRule is "gated" or "gated_delta";
    public bool UsesBeta => UpdateRule is "delta" or "gated_delta";
    public bool FusedGate => DecayGateActivation != "none";
    public int DecayWidth => DecayPerKey ? ValueHeads * KeyDim : ValueHeads;
    public int PackedWidth => 2 * QHeads * KeyDim + ValueHeads * ValueDim;
}

public static partial class SampleModels
{
    public const string GatedDeltaNetOpType = "GatedDeltaNet";

    /// <summary>
    /// A com.microsoft GatedDeltaNet node alone, every input a graph input named as the op names it (query, key, value,
    /// cu_seqlens, decay, beta, initial_state, a_log, dt_bias, capture_count, state_update_active; a_log and dt_bias
    /// initializers when the spec gives their values); outputs output, final_state and, with a capacity, state_update.
    /// Token and batch axes are symbols (N; B, S).
    /// </summary>
    public static OnnxModel GatedDeltaNetNode(GatedDeltaNetNodeSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var t = (TensorProto.Types.DataType)spec.ElementType;
        var gt = (TensorProto.Types.DataType)spec.GateElementType;
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float, I = TensorProto.Types.DataType.Int32;
        var b = new ModelBuilder(21, "gated_delta_net").Import(HandoverRewriter.MicrosoftDomain, 1);
        object hq = Dim(spec, spec.QHeads, "Hq"), hv = Dim(spec, spec.ValueHeads, "Hv"), dk = Dim(spec, spec.KeyDim, "Dk"), dv = Dim(spec, spec.ValueDim, "Dv");
        object[] tokens = spec.Layout == GatedDeltaNetLayout.Tokens ? ["N"] : ["B", "S"];
        object[] Dims(params object[] tail) => [.. tokens, .. tail];

        var inputs = new string[11];
        if (spec.PackedQkv)
        {
            inputs[0] = b.Input("query", t, Dims(Dim(spec, spec.PackedWidth, "W")));
        }
        else
        {
            inputs[0] = b.Input("query", t, Dims(hq, dk));
            inputs[1] = b.Input("key", t, Dims(hq, dk));
            inputs[2] = b.Input("value", t, Dims(hv, dv));
        }
        if (spec.Ragged) inputs[3] = b.Input("cu_seqlens", I, "B1");
        if (spec.UsesDecay) inputs[4] = b.Input("decay", gt, spec.DecayPerKey ? Dims(hv, dk) : Dims(hv));
        int heads = spec.ValueHeads, keyDim = spec.KeyDim;
        if (spec.UsesBeta) inputs[5] = b.Input("beta", gt, Dims(hv));
        inputs[6] = b.Input("initial_state", F, "B", hv, dv, dk);
        if (spec.FusedGate)
        {
            long[] dtShape = spec.DtBiasPerKeyRank switch { 2 => [heads, keyDim], 1 => [(long)heads * keyDim], _ => [heads] };
            if (spec.GateParameters is var (aLog, dtBias))
            {
                inputs[7] = b.Initializer("a_log", aLog, heads);
                inputs[8] = b.Initializer("dt_bias", dtBias, dtShape);
            }
            else
            {
                inputs[7] = b.Input("a_log", F, hv);
                inputs[8] = b.Input("dt_bias", F, spec.SymbolicShapes ? dtShape.Select((_, i) => (object)$"DT{i}").ToArray() : dtShape.Cast<object>().ToArray());
            }
        }
        if (spec.StateUpdateCapacity > 0)
        {
            inputs[9] = b.Input("capture_count", I, "B");
            inputs[10] = b.Input("state_update_active", I, 1);
        }

        var attributes = new List<(string, object)> { ("update_rule", spec.UpdateRule) };
        if (spec.Scale != 0f) attributes.Add(("scale", spec.Scale));
        if (spec.FusedGate) attributes.Add(("gate_activation", spec.DecayGateActivation));
        if (spec.GateLowerBound is float bound) attributes.Add(("gate_lower_bound", bound));
        if (spec.BetaSigmoid) attributes.Add(("beta_activation", "sigmoid"));
        if (spec.QkL2Norm) attributes.Add(("qk_l2_norm", 1L));
        if (spec.ChunkSize is int chunk) attributes.Add(("chunk_size", (long)chunk));
        if (spec.StateUpdateCapacity > 0) attributes.Add(("state_update_capacity", (long)spec.StateUpdateCapacity));
        int used = Array.FindLastIndex(inputs, name => name is not null) + 1;
        string[] outputs = spec.StateUpdateCapacity > 0 ? ["output", "final_state", "state_update"] : ["output", "final_state"];
        b.Node(GatedDeltaNetOpType, inputs.Take(used).Select(name => name ?? "").ToArray(), domain: HandoverRewriter.MicrosoftDomain,
            name: "gated_delta_net", outputNames: outputs, attributes: [.. attributes]);
        b.Output("output", t, Dims(hv, dv));
        b.Output("final_state", F, "B", hv, dv, dk);
        if (spec.StateUpdateCapacity > 0) b.Output("state_update", F, "B", "W");
        return b.Build();
    }

    /// <summary>
    /// One call of an update rule (gated_delta, or another GatedDeltaNet takes) as a GatedDeltaNet node (rank-4 spelling,
    /// per-head decay given as log gates, no fused activations) and as a LinearAttention node (the same rule, grouped value
    /// heads), on the same random inputs (B = 1, unit keys, zero state): the two ONNX Runtime kernels of the same math, for
    /// the benchmark.
    /// </summary>
    public static (OnnxModel Model, Dictionary<string, TensorData> Inputs)[] GatedDeltaNetAndLinearAttention(int qHeads, int valueHeads, int keyDim, int valueDim, int tokens,
        string updateRule = "gated_delta", int seed = 1)
    {
        var spec = new GatedDeltaNetNodeSpec { Layout = GatedDeltaNetLayout.Batched, QHeads = qHeads, ValueHeads = valueHeads, KeyDim = keyDim, ValueDim = valueDim, UpdateRule = updateRule };
        var gdn = GatedDeltaNetNode(spec);
        var inputs = ModelInputs.Random(gdn, new Dictionary<string, long> { ["B"] = 1, ["S"] = tokens }, seed);
        var keys = inputs["key"].As<float>();
        for (int row = 0; row < keys.Length; row += keyDim)
        {
            var key = keys.AsSpan(row, keyDim);
            float norm = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(key));
            System.Numerics.Tensors.TensorPrimitives.Divide(key, norm, key);
        }
        var linear = LinearAttentionNode(new LinearAttentionBlockSpec
        {
            QHeads = qHeads, KvHeads = valueHeads, KeyDim = keyDim, ValueDim = valueDim, Rule = Onnx.Ops.LinearAttentionSignature.ParseRule(updateRule, "update rule"),
            Decay = DecayForm.PerHead, PastState = false,
        });
        TensorData Packed(string name) => TensorData.Create(inputs[name].As<float>(), 1, tokens, inputs[name].ElementCount / tokens);
        var linearInputs = new[] { "query", "key", "value", "decay", "beta" }.Where(inputs.ContainsKey).ToDictionary(name => name, Packed);
        return [(gdn, inputs), (linear, linearInputs)];
    }

    private static object Dim(GatedDeltaNetNodeSpec spec, int value, string symbol) => spec.SymbolicShapes ? symbol : value;
}

using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Engine.IO;
using Engine.Onnx;
using Engine.Onnx.Proto;

namespace Engine.Workloads;

/// <summary>The sizes of the hybrid decoder sample (Qwen3.5's layout, small by default so tests run fast).</summary>
public sealed record HybridDecoderSpec
{
    public int VocabSize { get; init; } = 1024;
    public int Hidden { get; init; } = 128;
    /// <summary>Decoder layers; every <see cref="FullAttentionInterval"/>-th is full attention, the others Gated DeltaNet.</summary>
    public int Layers { get; init; } = 4;
    public int FullAttentionInterval { get; init; } = 4;
    /// <summary>The Gated DeltaNet layers' heads, head dims, conv kernel and gate form; their width and element type are this spec's.</summary>
    public GatedDeltaNetSpec LinearAttention { get; init; } = new() { QkHeads = 2, ValueHeads = 4, KeyDim = 32, ValueDim = 32 };
    public int AttentionHeads { get; init; } = 4;
    public int KvHeads { get; init; } = 2;
    public int HeadSize { get; init; } = 32;
    public int Intermediate { get; init; } = 256;
    /// <summary>The longest sequence (prompt and generated tokens): the rotary caches' rows.</summary>
    public int ContextLength { get; init; } = 8192;
    public float RopeTheta { get; init; } = 10_000f;
    public float NormEpsilon { get; init; } = 1e-6f;
    public TensorElementType ElementType { get; init; } = TensorElementType.Float;
    /// <summary>input_ids' and attention_mask's element type: int64, as the builder writes them, or int32, as some exports take them.</summary>
    public TensorElementType IndexType { get; init; } = TensorElementType.Int64;
    /// <summary>The builder's CPU int4 export: every projection, the LM head's too, a com.microsoft MatMulNBits with 4-bit weights.</summary>
    public bool Int4Weights { get; init; }
    /// <summary>The int4 projections' accuracy_level (<see cref="GatedDeltaNetSpec.Int4AccuracyLevel"/>).</summary>
    public int Int4AccuracyLevel { get; init; } = 4;
    public int Seed { get; init; } = 1;

    /// <summary>Whether layer <paramref name="layer"/> is full attention (layer_types as Qwen3.5's config derives them).</summary>
    public bool IsFullAttention(int layer) => (layer + 1) % FullAttentionInterval == 0;

    /// <summary>The Gated DeltaNet layers' spec at this model's width, element type and weight form.</summary>
    public GatedDeltaNetSpec LinearLayer => LinearAttention with { Hidden = Hidden, ElementType = ElementType, NormEpsilon = NormEpsilon, Int4Weights = Int4Weights, Int4AccuracyLevel = Int4AccuracyLevel };

    /// <summary>
    /// About how many weights the model holds: the projections, the embeddings and LM head and the rotary caches (norms,
    /// biases and per-head scalars left out). What writing the model allocates grows with it.
    /// </summary>
    public double WeightCount
    {
        get
        {
            var linear = LinearLayer;
            double d = Hidden, valueWidth = (double)linear.ValueHeads * linear.ValueDim;
            double linearLayer = d * (linear.ConvChannels + valueWidth + 2.0 * linear.ValueHeads) + valueWidth * d + (double)linear.ConvKernel * linear.ConvChannels;
            // The q projection is doubled (its output gate); k and v have the key/value heads; o maps the heads back.
            double fullLayer = d * (2.0 * AttentionHeads * HeadSize + 2.0 * KvHeads * HeadSize) + (double)AttentionHeads * HeadSize * d;
            int full = Layers / FullAttentionInterval;
            return (Layers - full) * linearLayer + full * fullLayer + Layers * 3.0 * d * Intermediate + 2.0 * VocabSize * d + (double)ContextLength * HeadSize;
        }
    }

    internal void Validate()
    {
        if (VocabSize < 2 || Hidden < 1 || Layers < 1 || FullAttentionInterval < 1 || AttentionHeads < 1 || KvHeads < 1 || Intermediate < 1 || ContextLength < 1)
            throw new ArgumentOutOfRangeException(nameof(HybridDecoderSpec), "sizes must be positive (vocabulary at least 2)");
        if (AttentionHeads % KvHeads != 0)
            throw new ArgumentException($"attention heads ({AttentionHeads}) must be a multiple of key/value heads ({KvHeads})", nameof(HybridDecoderSpec));
        if (HeadSize < 2 || HeadSize % 2 != 0)
            throw new ArgumentException($"the head size ({HeadSize}) must be even (rotary embedding rotates pairs)", nameof(HybridDecoderSpec));
        if (IndexType is not (TensorElementType.Int64 or TensorElementType.Int32))
            throw new ArgumentException($"the index type ({IndexType}) must be Int64 or Int32", nameof(HybridDecoderSpec));
        LinearLayer.Validate();
    }
}

/// <summary>
/// The hybrid decoder as ONNX Runtime GenAI's builder writes Qwen3.5 (text only): token embeddings, Gated DeltaNet layers
/// (<see cref="GatedDeltaNetLayer"/>) with one full-attention layer in every <see cref="HybridDecoderSpec.FullAttentionInterval"/>
/// (doubled q projection with an output gate, per-head q/k RMS norm, com.microsoft.GroupQueryAttention with rotary embedding
/// and a KV cache), RMS norms (SkipSimplifiedLayerNormalization carrying the residual), a SiLU-gated MLP and the LM head.
/// Inputs input_ids and attention_mask; per layer past_key_values.{i}.conv_state / .recurrent_state (Gated DeltaNet) or
/// .key / .value (full attention); outputs logits and the present.{i}.* counterparts. Random weights from the seed.
/// </summary>
public static class HybridDecoder
{
    public const string ModelFile = "model.onnx";
    public const string DataFile = "model.onnx.data";
    public const string ConfigFile = "genai_config.json";

    public static OnnxModel Model(HybridDecoderSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        var io = spec.ElementType;
        var type = (TensorProto.Types.DataType)io;
        var random = new Random(spec.Seed);
        var b = new ModelBuilder(21, "hybrid_decoder").Import(HandoverRewriter.MicrosoftDomain, 1);
        int d = spec.Hidden;
        var index = (TensorProto.Types.DataType)spec.IndexType;
        string ids = b.Input("input_ids", index, "batch_size", "sequence_length");
        string mask = b.Input("attention_mask", index, "batch_size", "total_sequence_length");
        string Weight(string name, float[] values, params long[] dims) => b.Initializer(name, values, io, dims);
        string NormWeight(string name, int width) => Weight(name, Enumerable.Range(0, width).Select(_ => 1f + 0.1f * (2 * random.NextSingle() - 1)).ToArray(), width);
        int? int4 = spec.LinearLayer.Int4Projections;
        string MatMul(string name, string x, int rows, int columns) => Projection.Add(b, x, name.TrimStart('/').Replace('/', '.') + ".weight",
            SampleModels.Weights(random, rows, columns), rows, columns, io, int4, name);

        string embeddings = b.Node("Gather", [Weight("model.embed_tokens.weight", SampleModels.Weights(random, d, spec.VocabSize), spec.VocabSize, d), ids],
            name: "/model/embed_tokens/Gather")[0];
        // GroupQueryAttention's lengths from the mask, as the builder derives them: seqlens_k = tokens − 1, total_sequence_length.
        string tokens = b.Node("ReduceSum", [mask, b.Int64s("/model/constants/axis_1", 1)], name: "/model/attn_mask_reformat/ReduceSum", attributes: [("keepdims", 0L)])[0];
        string one = spec.IndexType == TensorElementType.Int32 ? b.Initializer("/model/constants/one", TensorData.Create(new[] { 1 }, 1)) : b.Int64s("/model/constants/one", 1);
        string lastIndex = b.Node("Sub", [tokens, one], name: "/model/attn_mask_reformat/Sub")[0];
        string seqlensK = b.Node("Cast", [lastIndex], name: "/model/attn_mask_reformat/seqlens_k", attributes: [("to", (long)TensorElementType.Int32)])[0];
        string maskShape = b.Node("Shape", [mask], name: "/model/attn_mask_reformat/Shape")[0];
        string total = b.Node("Gather", [maskShape, b.Initializer("/model/constants/index_1", TensorData.Create(new long[] { 1 }))], name: "/model/attn_mask_reformat/Gather")[0];
        string totalLength = b.Node("Cast", [total], name: "/model/attn_mask_reformat/total_seq_len", attributes: [("to", (long)TensorElementType.Int32)])[0];
        var (cos, sin) = RotaryCaches(b, spec);

        string residual = embeddings, normed = b.Node("SimplifiedLayerNormalization", [embeddings, NormWeight("model.layers.0.input_layernorm.weight", d)],
            name: "/model/layers.0/input_layernorm/LayerNorm", attributes: [("epsilon", spec.NormEpsilon), ("axis", -1L), ("stash_type", 1L)])[0];
        for (int layer = 0; layer < spec.Layers; layer++)
        {
            string prefix = $"/model/layers.{layer}";
            string mixed;
            if (spec.IsFullAttention(layer))
            {
                b.Input(PastKey(layer), type, "batch_size", spec.KvHeads, "past_sequence_length", spec.HeadSize);
                b.Input(PastValue(layer), type, "batch_size", spec.KvHeads, "past_sequence_length", spec.HeadSize);
                mixed = FullAttention(b, spec, layer, normed, seqlensK, totalLength, cos, sin, MatMul, NormWeight);
                b.Output(PresentKey(layer), type, "batch_size", spec.KvHeads, "total_sequence_length", spec.HeadSize);
                b.Output(PresentValue(layer), type, "batch_size", spec.KvHeads, "total_sequence_length", spec.HeadSize);
            }
            else
            {
                var linear = spec.LinearLayer;
                var states = new GatedDeltaNetLayer.StateNames(
                    b.Input(PastConv(layer), type, "batch_size", linear.ConvChannels, linear.ConvKernel - 1),
                    b.Input(PastRecurrent(layer), type, "batch_size", linear.ValueHeads, linear.KeyDim, linear.ValueDim),
                    PresentConv(layer), PresentRecurrent(layer));
                mixed = GatedDeltaNetLayer.Add(b, linear, random, normed, prefix + "/linear_attn", states);
                b.Output(PresentConv(layer), type, "batch_size", linear.ConvChannels, linear.ConvKernel - 1);
                b.Output(PresentRecurrent(layer), type, "batch_size", linear.ValueHeads, linear.KeyDim, linear.ValueDim);
            }
            (normed, residual) = SkipNorm(b, mixed, residual, NormWeight($"model.layers.{layer}.post_attention_layernorm.weight", d), prefix + "/post_attention_layernorm", spec);
            string gate = MatMul(prefix + "/mlp/gate_proj", normed, d, spec.Intermediate);
            string silu = b.Node("Mul", [gate, b.Node("Sigmoid", [gate], name: prefix + "/mlp/act_fn/Sigmoid")[0]], name: prefix + "/mlp/act_fn/Mul")[0];
            string up = b.Node("Mul", [silu, MatMul(prefix + "/mlp/up_proj", normed, d, spec.Intermediate)], name: prefix + "/mlp/Mul")[0];
            string down = MatMul(prefix + "/mlp/down_proj", up, spec.Intermediate, d);
            bool last = layer == spec.Layers - 1;
            (normed, residual) = SkipNorm(b, down, residual, NormWeight(last ? "model.norm.weight" : $"model.layers.{layer + 1}.input_layernorm.weight", d),
                last ? "/model/layers.final/norm" : $"/model/layers.{layer + 1}/input_layernorm", spec);
        }
        Projection.Add(b, normed, "lm_head.weight", SampleModels.Weights(random, d, spec.VocabSize), d, spec.VocabSize, io, int4, "/lm_head", "logits");
        b.Output("logits", type, "batch_size", "sequence_length", spec.VocabSize);
        return b.Build();
    }

    /// <summary>Writes the model folder as the builder does: model.onnx with its weights in model.onnx.data, and genai_config.json.</summary>
    public static void Write(string directory, HybridDecoderSpec spec)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var model = Model(spec);
        Directory.CreateDirectory(directory);
        model.SaveWithExternalData(Path.Combine(directory, ModelFile), DataFile);
        string config = Config(spec).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        OutputFile.Write(Path.Combine(directory, ConfigFile), stream => stream.Write(Encoding.UTF8.GetBytes(config)));
    }

    /// <summary>
    /// genai_config.json as the builder writes it for Qwen3.5. GenAI names the KV cache by templates and finds the
    /// Gated DeltaNet layers' states by the same templates with conv_state / recurrent_state for key.
    /// </summary>
    public static JsonObject Config(HybridDecoderSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = 1,
                ["context_length"] = spec.ContextLength,
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                    ["filename"] = ModelFile,
                    ["head_size"] = spec.HeadSize,
                    ["hidden_size"] = spec.Hidden,
                    ["inputs"] = new JsonObject
                    {
                        ["input_ids"] = "input_ids",
                        ["attention_mask"] = "attention_mask",
                        ["past_key_names"] = "past_key_values.%d.key",
                        ["past_value_names"] = "past_key_values.%d.value",
                    },
                    ["outputs"] = new JsonObject
                    {
                        ["logits"] = "logits",
                        ["present_key_names"] = "present.%d.key",
                        ["present_value_names"] = "present.%d.value",
                    },
                    ["num_attention_heads"] = spec.AttentionHeads,
                    ["num_hidden_layers"] = spec.Layers,
                    ["num_key_value_heads"] = spec.KvHeads,
                },
                ["eos_token_id"] = spec.VocabSize - 1,
                ["pad_token_id"] = spec.VocabSize - 1,
                ["type"] = "qwen3_5_text",
                ["vocab_size"] = spec.VocabSize,
            },
            ["search"] = new JsonObject
            {
                ["do_sample"] = false,
                ["max_length"] = spec.ContextLength,
                ["min_length"] = 0,
                ["num_beams"] = 1,
                ["past_present_share_buffer"] = true,
                ["temperature"] = 1.0,
                ["top_k"] = 50,
                ["top_p"] = 1.0,
            },
        };
    }

    public static string PastKey(int layer) => $"past_key_values.{layer}.key";
    public static string PastValue(int layer) => $"past_key_values.{layer}.value";
    public static string PresentKey(int layer) => $"present.{layer}.key";
    public static string PresentValue(int layer) => $"present.{layer}.value";
    public static string PastConv(int layer) => $"past_key_values.{layer}.conv_state";
    public static string PastRecurrent(int layer) => $"past_key_values.{layer}.recurrent_state";
    public static string PresentConv(int layer) => $"present.{layer}.conv_state";
    public static string PresentRecurrent(int layer) => $"present.{layer}.recurrent_state";

    /// <summary>cos and sin of position · θ^(−2i/head size), [context length, head size / 2], for GroupQueryAttention's rotary embedding.</summary>
    private static (string Cos, string Sin) RotaryCaches(ModelBuilder b, HybridDecoderSpec spec)
    {
        int half = spec.HeadSize / 2;
        var cos = new float[spec.ContextLength * half];
        var sin = new float[cos.Length];
        for (int position = 0; position < spec.ContextLength; position++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = position / Math.Pow(spec.RopeTheta, 2.0 * i / spec.HeadSize);
                cos[position * half + i] = (float)Math.Cos(angle);
                sin[position * half + i] = (float)Math.Sin(angle);
            }
        }
        return (b.Initializer("cos_cache", cos, spec.ElementType, spec.ContextLength, half),
                b.Initializer("sin_cache", sin, spec.ElementType, spec.ContextLength, half));
    }

    /// <summary>
    /// Qwen3.5's full attention: q_proj gives q and an output gate per head, q and k RMS-normalized per head,
    /// GroupQueryAttention (rotary inside, KV cache past → present), output times Sigmoid(gate), o_proj.
    /// </summary>
    private static string FullAttention(ModelBuilder b, HybridDecoderSpec spec, int layer, string x, string seqlensK, string totalLength,
        string cos, string sin, Func<string, string, int, int, string> matMul, Func<string, int, string> normWeight)
    {
        string prefix = $"/model/layers.{layer}/attn";
        int d = spec.Hidden, hq = spec.AttentionHeads, hkv = spec.KvHeads, hs = spec.HeadSize;
        string Reshape(string name, string input, params long[] shape) =>
            b.Node("Reshape", [input, b.Int64s($"{prefix}/{name}/shape", shape)], name: $"{prefix}/{name}/Reshape")[0];
        string HeadNorm(string name, string input, int heads)
        {
            string perHead = Reshape(name + "_flat", input, 0, 0, heads, hs);
            string normed = b.Node("SimplifiedLayerNormalization", [perHead, normWeight($"model.layers.{layer}.attn.{name}.weight", hs)],
                name: $"{prefix}/{name}/SimplifiedLayerNormalization", attributes: [("epsilon", spec.NormEpsilon), ("axis", -1L), ("stash_type", 1L)])[0];
            return Reshape(name + "_unflat", normed, 0, 0, heads * hs);
        }

        string queryAndGate = Reshape("q_gate_reshape", matMul(prefix + "/q_proj", x, d, hq * hs * 2), 0, 0, hq, 2 * hs);
        var split = b.Node("Split", [queryAndGate, b.Int64s($"{prefix}/q_gate_split/sizes", hs, hs)], outputs: 2, name: $"{prefix}/q_gate_split/Split",
            attributes: [("axis", -1L)]);
        string q = HeadNorm("q_norm", Reshape("q_reshape", split[0], 0, 0, hq * hs), hq);
        string gate = Reshape("gate_reshape", split[1], 0, 0, hq * hs);
        string k = HeadNorm("k_norm", matMul(prefix + "/k_proj", x, d, hkv * hs), hkv);
        string v = matMul(prefix + "/v_proj", x, d, hkv * hs);
        string attention = b.Node("GroupQueryAttention", [q, k, v, PastKey(layer), PastValue(layer), seqlensK, totalLength, cos, sin],
            domain: HandoverRewriter.MicrosoftDomain, name: $"{prefix}/GroupQueryAttention",
            outputNames: [$"{prefix}/GroupQueryAttention/output_0", PresentKey(layer), PresentValue(layer)],
            attributes: [("num_heads", (long)hq), ("kv_num_heads", (long)hkv), ("do_rotary", 1L), ("rotary_interleaved", 0L), ("local_window_size", -1L)])[0];
        string gated = b.Node("Mul", [attention, b.Node("Sigmoid", [gate], name: $"{prefix}/gate/Sigmoid")[0]], name: $"{prefix}/gate/Mul")[0];
        return matMul(prefix + "/o_proj", gated, hq * hs, d);
    }

    /// <summary>SkipSimplifiedLayerNormalization: the residual sum (output 3) carried on, and its norm.</summary>
    private static (string Normed, string Residual) SkipNorm(ModelBuilder b, string input, string residual, string weight, string name, HybridDecoderSpec spec)
    {
        var outputs = b.Node("SkipSimplifiedLayerNormalization", [input, residual, weight], domain: HandoverRewriter.MicrosoftDomain, name: name + "/SkipLayerNorm",
            outputNames: [name + "/output_0", "", "", name + "/output_3"], attributes: [("epsilon", spec.NormEpsilon)]);
        return (outputs[0], outputs[3]);
    }
}

using Engine.Kernels.Gla;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>
/// ai.engine LightningAttention: linear attention with a constant decay per value head
/// (TransNormerLLM, Lightning Attention-2, MiniMax-01), in the packed layout of LinearAttention:
///   S_t = exp(−s_h) S_{t−1} + k_t v_tᵀ,   o_t = scale · S_tᵀ q_t
/// inputs query (B,T,Hq·dk), key (B,T,min(Hq,Hkv)·dk), value (B,T,Hkv·dv), past_state (B,Hkv,dk,dv)?;
/// outputs output (B,T,max(Hq,Hkv)·dv), present_state?; attributes q_num_heads, kv_num_heads (required; grouped
/// either way as LinearAttention's), slopes (floats, one per kv head) or the ALiBi schedule for kv_num_heads heads, scaled by
/// (1 − layer/(num_layers − 1) + 1e−5) when layer and num_layers are given; scale (default 1);
/// block_size (a tuning hint: 16, 32, 64, 128 or 256; default 64).
/// </summary>
internal static class LightningAttentionSignature
{
    public const string OpType = "LightningAttention";
    public static readonly string[] InputNames = ["query", "key", "value", "past_state"];
    public static readonly string[] OutputNames = ["output", "present_state"];
    public static readonly string[] AttributeNames = ["q_num_heads", "kv_num_heads", "slopes", "layer", "num_layers", "scale", "block_size"];
}

/// <summary>Lightning attention as an engine-domain op, run on the GLA kernels with a constant decay.</summary>
internal sealed class LightningAttentionOp : EngineOp
{
    public override string Name => LightningAttentionSignature.OpType;

    public override IReadOnlyList<OpParameter> Inputs { get; } =
        LightningAttentionSignature.InputNames.Select(name => new OpParameter(name, Optional: true)).ToArray();

    public override IReadOnlyList<OpParameter> Outputs { get; } = [new("output", false), new("present_state", true)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device)
    {
        string node = $"LightningAttention node '{info.NodeName}'";
        var (qHeads, kvHeads) = LinearAttentionSignature.HeadCounts(info.Int("q_num_heads"), info.Int("kv_num_heads"), node);
        if (info.InputCount > LightningAttentionSignature.InputNames.Length)
            throw new ModelNodeException($"{node}: expected at most 4 inputs (query, key, value, past_state), got {info.InputCount}");
        foreach (var (index, name) in new[] { (0, "query"), (1, "key"), (2, "value") })
            if (!info.Input(index).Present) throw new ModelNodeException($"{node}: the required input {name} is missing");
        for (int i = 0; i < info.InputCount; i++)
        {
            var input = info.Input(i);
            int rank = i == 3 ? 4 : 3;
            if (input.Present && input.Rank is int r && r != rank)
                throw new ModelNodeException($"{node}: input {LightningAttentionSignature.InputNames[i]} ('{input.Name}') must have rank {rank}, the model gives rank {r}");
            if (input.Present && input.ElementType != 0 && input.ElementType != Ort.ElementFloat)
                throw new ModelNodeException($"{node}: input {LightningAttentionSignature.InputNames[i]} ('{input.Name}') must be float32");
        }

        float[] slopes = Slopes(info, node, kvHeads);
        float scale = info.Float("scale") ?? 1f;
        if (!float.IsFinite(scale) || scale == 0f) throw new ModelNodeException($"{node}: scale must be finite and non-zero, got {scale}");
        long block = info.Int("block_size") ?? 64;
        if (!GlaConfig.ChunkSizes.Contains((int)Math.Clamp(block, 0, 1024)))
            throw new ModelNodeException($"{node}: block_size must be one of {string.Join(", ", GlaConfig.ChunkSizes)}, got {block}");
        var config = new LinearAttentionConfig(node, qHeads, kvHeads, UpdateRule.Linear, scale, (int)block,
            info.Input(3).Present, HasDecay: false, HasBeta: false, ConstantLogDecay: slopes.Select(x => -x).ToArray());
        return new LinearAttentionKernel(config, device);
    }

    private static float[] Slopes(KernelInfo info, string node, int kvHeads)
    {
        var given = info.Floats("slopes");
        long? layer = info.Int("layer"), layers = info.Int("num_layers");
        if (given is not null && (layer is not null || layers is not null))
            throw new ModelNodeException($"{node}: give either slopes or layer and num_layers, not both");
        if (given is not null)
        {
            if (given.Length != kvHeads) throw new ModelNodeException($"{node}: slopes must hold one value per value head (kv_num_heads = {kvHeads}), got {given.Length}");
            for (int h = 0; h < given.Length; h++)
                if (!(given[h] >= 0f) || float.IsInfinity(given[h]))
                    throw new ModelNodeException($"{node}: slopes must be finite and >= 0, got {given[h]} at head {h}");
            return given;
        }
        if (layer.HasValue != layers.HasValue) throw new ModelNodeException($"{node}: layer and num_layers are given together");
        if (layer is < int.MinValue or > int.MaxValue || layers is < int.MinValue or > int.MaxValue)
            throw new ModelNodeException($"{node}: layer and num_layers must be 32-bit integers, got {layer} and {layers}");
        try
        {
            return Lightning.Slopes(kvHeads, (int?)layer, (int?)layers);
        }
        catch (ArgumentException e)
        {
            throw new ModelNodeException($"{node}: {e.Message}");
        }
    }
}

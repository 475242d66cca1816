using Engine.Onnx.Ops;
using Engine.Onnx.Proto;

namespace Engine.Onnx;

/// <summary>
/// What lies between a packed q|k|v projection and a delta-rule LinearAttention node in ONNX Runtime GenAI's Gated DeltaNet
/// export: Split(x, [Hq·dk, Hk·dk, Hkv·dv], last axis); q = Reshape(LpNormalization(Reshape(q, (.., .., Hq, dk))), (.., .., Hq·dk))
/// times a constant; k the same without the constant; v as split. <see cref="Match"/> finds it when every tensor in between
/// has one reader and every node of it lies in the graph searched.
/// </summary>
internal sealed record QkPreparation(NodeProto Split, float Scale, IReadOnlyList<NodeProto> Removed)
{
    /// <param name="refusal">when the preparation is there but the engine node would not compute what it does: why; else null.</param>
    public static QkPreparation? Match(NodeProto attention, GraphProto graph, ShapeHints hints, IReadOnlyDictionary<string, int> uses, out string? refusal)
    {
        refusal = null;
        var inputs = attention.Input;
        if (inputs.Count <= LinearAttentionSignature.PastState || inputs[LinearAttentionSignature.PastState].Length == 0) return null;
        string rule = attention.Attribute.FirstOrDefault(a => a.Name == "update_rule")?.S.ToStringUtf8() ?? LinearAttentionSignature.DefaultUpdateRule;
        if (rule is not ("delta" or "gated_delta") || attention.Attribute.Any(a => a.Name == LinearAttentionSignature.QkL2Norm)) return null;
        long? qHeads = Int(attention, "q_num_heads"), kvHeads = Int(attention, "kv_num_heads");
        if (qHeads is not > 0 || kvHeads is not > 0) return null;
        long keyHeads = Math.Min(qHeads.Value, kvHeads.Value);
        var removed = new List<NodeProto>();
        bool OnlyReader(string value) => uses.GetValueOrDefault(value) == 1;
        // A producer in an enclosing graph is no node this graph can remove.
        NodeProto? Producer(string value) => hints.Producer(value) is NodeProto node && graph.Node.Contains(node) ? node : null;

        // q: an optional Mul by a constant, then the normalized heads.
        string query = inputs[LinearAttentionSignature.Query];
        float factor = 1f;
        if (Producer(query) is { OpType: "Mul" } mul && IsOnnx(mul) && mul.Input.Count == 2 && OnlyReader(query))
        {
            // A one-element factor of rank above q's 3 makes the product rank 4, a query LinearAttention refuses; one of another
            // type than the attention's makes a Mul ORT refuses.
            var type = hints.InferredType(inputs[LinearAttentionSignature.PastState]);
            bool IsFactor(string value) => hints.Scalar(value) is not null && hints.DeclaredRank(value) <= 3 && type is not null && hints.Constant(value)!.DataType == (int)type;
            int constant = IsFactor(mul.Input[1]) ? 1 : IsFactor(mul.Input[0]) ? 0 : -1;
            if (constant < 0) return null;
            factor = hints.Scalar(mul.Input[constant])!.Value;
            query = mul.Input[1 - constant];
            removed.Add(mul);
        }
        if (Normalized(query, qHeads.Value, hints, Producer, OnlyReader, removed) is not (string qPart, long dk)) return null;
        if (Normalized(inputs[LinearAttentionSignature.Key], keyHeads, hints, Producer, OnlyReader, removed) is not (string kPart, long dk2) || dk2 != dk) return null;
        string vPart = inputs[LinearAttentionSignature.Value];

        // The three parts, in order, of one Split of the packed rows on the last axis.
        if (Producer(qPart) is not { OpType: "Split" } split || !IsOnnx(split) || split.Output.Count != 3 ||
            split.Output[0] != qPart || split.Output[1] != kPart || split.Output[2] != vPart || !split.Output.All(OnlyReader))
            return null;
        long axis = Int(split, "axis") ?? 0;
        if (axis is not (-1 or 2)) return null;
        bool sizesInput = split.Input.Count > 1 && split.Input[1].Length > 0;
        // num_outputs (opset 18) with a sizes input too, or other than its outputs, is a Split ORT refuses: never read past it.
        long[]? sizes = Int(split, "num_outputs") is long parts ? (sizesInput || parts != split.Output.Count ? null : EvenParts(hints.LastDim(split.Input[0]), split.Output.Count))
            : sizesInput ? hints.Int64s(split.Input[1])
            : split.Attribute.FirstOrDefault(a => a.Name == "split")?.Ints.ToArray();
        if (sizes is not [long qWidth, long kWidth, long vWidth] || qWidth != qHeads * dk || kWidth != keyHeads * dk || vWidth % kvHeads != 0) return null;
        removed.Add(split);

        float scale = attention.Attribute.FirstOrDefault(a => a.Name == "scale")?.F ?? 0f;
        float folded = factor * (scale == 0f ? 1f / MathF.Sqrt(dk) : scale);
        // The kernel reads a scale of 0 as 1/sqrt(dk).
        if (folded == 0f || !float.IsFinite(folded))
        {
            refusal = $"q's factor {factor} times the scale gives {folded}, which the engine's scale attribute cannot carry";
            return null;
        }
        return new QkPreparation(split, folded, removed);
    }

    /// <summary>
    /// value = Reshape(LpNormalization(Reshape(part, (.., .., heads, d)), last axis, p = 2), (.., .., heads·d)): the part and d, the
    /// three nodes added to <paramref name="removed"/>; or null.
    /// </summary>
    private static (string Part, long Dim)? Normalized(string value, long heads, ShapeHints hints, Func<string, NodeProto?> producer, Func<string, bool> onlyReader,
        List<NodeProto> removed)
    {
        if (producer(value) is not { OpType: "Reshape" } unflat || !IsOnnx(unflat) || unflat.Input.Count != 2 || !onlyReader(value)) return null;
        // Nodes of other input counts are models ORT refuses: left to it, never read past their inputs.
        if (producer(unflat.Input[0]) is not { OpType: "LpNormalization", Input.Count: 1 } norm || !IsOnnx(norm) || !onlyReader(unflat.Input[0])) return null;
        if ((Int(norm, "p") ?? 2) != 2 || (Int(norm, "axis") ?? -1) is not (-1 or 3)) return null;
        if (producer(norm.Input[0]) is not { OpType: "Reshape" } flat || !IsOnnx(flat) || flat.Input.Count != 2 || !onlyReader(norm.Input[0])) return null;
        if (hints.Int64s(flat.Input[1]) is not [0, 0, long h, long d] || h != heads || d < 1) return null;
        if (hints.Int64s(unflat.Input[1]) is not [0, 0, long width] || (width != heads * d && width != -1)) return null;
        if (Int(flat, "allowzero") is 1 || Int(unflat, "allowzero") is 1) return null;
        removed.AddRange([unflat, norm, flat]);
        return (flat.Input[0], d);
    }

    /// <summary>The sizes Split's num_outputs gives a width: each part ceil(width / parts), the last what is left; or null.</summary>
    private static long[]? EvenParts(long? width, int parts)
    {
        if (width is not long n || n < parts) return null;
        long part = (n + parts - 1) / parts;
        var sizes = Enumerable.Repeat(part, parts).ToArray();
        sizes[^1] = n - part * (parts - 1);
        return sizes[^1] > 0 ? sizes : null;
    }

    private static bool IsOnnx(NodeProto node) => OnnxModel.SameDomain(node.Domain, OnnxModel.OnnxDomain);

    private static long? Int(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I;
}

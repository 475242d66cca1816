using Engine.Onnx.Proto;

namespace Engine.Onnx;

/// <summary>
/// The gated RMS norm as ONNX Runtime GenAI's builder writes it without com.microsoft.GatedRMSNorm:
/// y = Cast(Cast(Reshape(SimplifiedLayerNormalization(Reshape(x, (.., .., H, d)), scale), (.., .., H·d)), float) · SiLU(z_f)),
/// z_f = Cast(z, float) (each Cast to float optional), SiLU(z_f) = z_f · Sigmoid(z_f), the last Cast back to x's type.
/// <see cref="Match"/> finds it when every tensor in between has one reader (z_f two: the Sigmoid and the product).
/// </summary>
internal sealed record GatedNormChain(string X, string Scale, string Gate, string Output, float Epsilon, IReadOnlyList<NodeProto> Removed)
{
    public static GatedNormChain? Match(NodeProto norm, GraphProto graph, ShapeHints hints, IReadOnlyDictionary<string, int> uses)
    {
        var removed = new List<NodeProto>();
        int Uses(string value) => uses.GetValueOrDefault(value);
        NodeProto? OnlyReader(string value) =>
            Uses(value) == 1 ? graph.Node.FirstOrDefault(n => n.Input.Contains(value)) : null;

        if (norm.Input.Count != 2 || norm.Output.Skip(1).Any(o => o.Length > 0 && Uses(o) > 0)) return null;
        if ((Int(norm, "axis") ?? -1) != -1 || (Int(norm, "stash_type") ?? 1) != 1) return null;
        float epsilon = norm.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
        string scale = norm.Input[1];
        var type = hints.ElementType(scale);
        if (type is not (TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Float16) || hints.LastDim(scale) is not long d) return null;

        // x → heads → norm → packed.
        if (hints.Producer(norm.Input[0]) is not { OpType: "Reshape" } toHeads || !IsOnnx(toHeads) || Uses(norm.Input[0]) != 1) return null;
        if (hints.Int64s(toHeads.Input[1]) is not [0, 0, long heads, long dim] || dim != d) return null;
        if (OnlyReader(norm.Output[0]) is not { OpType: "Reshape" } toPacked || !IsOnnx(toPacked)) return null;
        if (hints.Int64s(toPacked.Input[1]) is not [0, 0, long width] || (width != heads * d && width != -1)) return null;
        removed.AddRange([toHeads, norm, toPacked]);
        // The fused node writes y in x's shape: x must be [B, T, H·d], as the chain's output is.
        string x = toHeads.Input[0];
        if (hints.InferredType(x) is { } xType && xType != type) return null;
        if (hints.DeclaredDims(x) is { } xDims && (xDims.Count != 3 || xDims[2] >= 0 && xDims[2] != heads * d)) return null;

        // packed (as float) · SiLU(z_f).
        string normed = toPacked.Output[0];
        var reader = OnlyReader(normed);
        bool productInFloat = false;
        if (reader is { OpType: "Cast" } && IsCastToFloat(reader))
        {
            removed.Add(reader);
            normed = reader.Output[0];
            reader = OnlyReader(normed);
            productInFloat = true;
        }
        if (reader is not { OpType: "Mul" } product || !IsOnnx(product) || product.Input.Count != 2) return null;
        string silu = product.Input[0] == normed ? product.Input[1] : product.Input[0];
        if (Uses(silu) != 1 || hints.Producer(silu) is not { OpType: "Mul" } siluMul || !IsOnnx(siluMul) || siluMul.Input.Count != 2) return null;
        var sigmoidSide = siluMul.Input.Select(i => hints.Producer(i)).ToArray();
        int s = sigmoidSide[0] is { OpType: "Sigmoid" } ? 0 : sigmoidSide[1] is { OpType: "Sigmoid" } ? 1 : -1;
        if (s < 0) return null;
        var sigmoid = sigmoidSide[s]!;
        string gateFloat = siluMul.Input[1 - s];
        if (sigmoid.Input[0] != gateFloat || Uses(siluMul.Input[s]) != 1 || Uses(gateFloat) != 2) return null;
        removed.AddRange([sigmoid, siluMul, product]);
        string gate = gateFloat;
        // The fused node takes the gate in x's type: z itself when it is cast to float, else z_f, float when the product is.
        if (hints.Producer(gateFloat) is { OpType: "Cast" } gateCast && IsCastToFloat(gateCast))
        {
            removed.Add(gateCast);
            gate = gateCast.Input[0];
            if (hints.InferredType(gate) is { } gateType && gateType != type) return null;
        }
        else if (productInFloat && type != TensorProto.Types.DataType.Float) return null;
        if (!SameShape(hints.DeclaredDims(x), hints.DeclaredDims(gate))) return null;

        // Back to x's type: the fused node writes the Cast's output.
        if (OnlyReader(product.Output[0]) is not { OpType: "Cast" } back || !IsOnnx(back) || Int(back, "to") != (long)type) return null;
        removed.Add(back);
        return new GatedNormChain(x, scale, gate, back.Output[0], epsilon, removed);
    }

    /// <summary>
    /// Whether x and the gate have one shape as far as the model declares them: the product broadcasts a dim of 1 on one side
    /// (a gate [B, 1, H·d]), where the fused node takes both in one shape. A dim of 1 declared on either side counts only when
    /// the other side declares it too.
    /// </summary>
    private static bool SameShape(IReadOnlyList<long>? x, IReadOnlyList<long>? gate)
    {
        if (x is not null && gate is not null && x.Count != gate.Count) return false;
        for (int i = 0; i < Math.Max(x?.Count ?? 0, gate?.Count ?? 0); i++)
        {
            long a = x?[i] ?? -1, b = gate?[i] ?? -1;
            if ((a == 1 || b == 1) && a != b) return false;
            if (a > 0 && b > 0 && a != b) return false;
        }
        return gate is null || gate.Count == 3;
    }

    private static bool IsCastToFloat(NodeProto cast) => IsOnnx(cast) && Int(cast, "to") == (long)TensorProto.Types.DataType.Float;

    private static bool IsOnnx(NodeProto node) => OnnxModel.SameDomain(node.Domain, OnnxModel.OnnxDomain);

    private static long? Int(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I;
}

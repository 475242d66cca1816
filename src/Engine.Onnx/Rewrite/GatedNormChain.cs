using Engine.Onnx.Ops;
using Engine.Onnx.Proto;

namespace Engine.Onnx;

/// <summary>
/// The gated RMS norm as ONNX Runtime GenAI's builder writes it without com.microsoft.GatedRMSNorm:
/// y = Cast(Cast(Reshape(SimplifiedLayerNormalization(Reshape(x, (.., .., H, d)), scale), (.., .., H·d)), float) · SiLU(z_f)),
/// z_f = Cast(z, float) (each Cast to float optional), SiLU(z_f) = z_f · Sigmoid(z_f) (or com.microsoft QuickGelu(z_f) with
/// alpha 1), the last Cast back to x's type (optional for a float32 chain).
/// <see cref="Match"/> finds it when every tensor in between has one reader (z_f two: the Sigmoid and the product; one: the
/// QuickGelu) and every node of it lies in the graph searched.
/// </summary>
internal sealed record GatedNormChain(string X, string Scale, string Gate, string Output, float Epsilon, IReadOnlyList<NodeProto> Removed)
{
    /// <param name="refusal">when the chain is there but one GatedRMSNorm would not compute what it does: why; else null.</param>
    public static GatedNormChain? Match(NodeProto norm, GraphProto graph, ShapeHints hints, IReadOnlyDictionary<string, int> uses, out string? refusal)
    {
        refusal = null;
        var removed = new List<NodeProto>();
        int Uses(string value) => uses.GetValueOrDefault(value);
        NodeProto? OnlyReader(string value) =>
            Uses(value) == 1 ? graph.Node.FirstOrDefault(n => n.Input.Contains(value)) : null;
        // A producer in an enclosing graph is no node this graph can replace.
        NodeProto? Producer(string value) => hints.Producer(value) is NodeProto node && graph.Node.Contains(node) ? node : null;

        if (norm.Input.Count != 2 || norm.Output.Skip(1).Any(o => o.Length > 0 && Uses(o) > 0)) return null;
        if ((Int(norm, "axis") ?? -1) != -1 || (Int(norm, "stash_type") ?? 1) != 1) return null;
        float epsilon = norm.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
        string scale = norm.Input[1];

        // x → heads → norm → packed.
        // Nodes of other input counts are models ORT refuses: left to it, never read past their inputs.
        if (Producer(norm.Input[0]) is not { OpType: "Reshape", Input.Count: 2 } toHeads || !IsOnnx(toHeads) || Uses(norm.Input[0]) != 1) return null;
        if (hints.Int64s(toHeads.Input[1]) is not [0, 0, long heads, long d] || d < 1) return null;
        if (OnlyReader(norm.Output[0]) is not { OpType: "Reshape", Input.Count: 2 } toPacked || !IsOnnx(toPacked)) return null;
        if (hints.Int64s(toPacked.Input[1]) is not [0, 0, long width] || (width != heads * d && width != -1)) return null;
        // allowzero = 1 takes the shapes' zeros as sizes, not as "keep": a chain ORT refuses unless x is empty.
        if (Int(toHeads, "allowzero") is 1 || Int(toPacked, "allowzero") is 1) return null;
        removed.AddRange([toHeads, norm, toPacked]);
        string x = toHeads.Input[0];

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
        string gateFloat;
        if (Uses(silu) != 1) return null;
        if (Producer(silu) is { } quickGelu && IsSiluQuickGelu(quickGelu))
        {
            // ONNX Runtime's QuickGeluFusion (EXTENDED) writes x · Sigmoid(x) as com.microsoft QuickGelu, x · sigmoid(alpha · x),
            // alpha 1: the same SiLU.
            gateFloat = quickGelu.Input[0];
            if (Uses(gateFloat) != 1) return null;
            removed.AddRange([quickGelu, product]);
        }
        else
        {
            if (Producer(silu) is not { OpType: "Mul" } siluMul || !IsOnnx(siluMul) || siluMul.Input.Count != 2) return null;
            var sigmoidSide = siluMul.Input.Select(Producer).ToArray();
            int s = IsSigmoid(sigmoidSide[0]) ? 0 : IsSigmoid(sigmoidSide[1]) ? 1 : -1;
            if (s < 0) return null;
            var sigmoid = sigmoidSide[s]!;
            gateFloat = siluMul.Input[1 - s];
            if (sigmoid.Input[0] != gateFloat || Uses(siluMul.Input[s]) != 1 || Uses(gateFloat) != 2) return null;
            removed.AddRange([sigmoid, siluMul, product]);
        }
        // The fused node takes the gate in x's type: z itself when it is cast to float, else z_f, float when the product is.
        string gate = gateFloat;
        bool gateCast = false;
        if (Producer(gateFloat) is { OpType: "Cast" } cast && IsCastToFloat(cast))
        {
            removed.Add(cast);
            gate = cast.Input[0];
            gateCast = true;
        }

        // Back to x's type: the fused node writes the Cast's output; without one (a float32 chain whose no-op Cast an optimizer
        // removed) the product's, which must then be float32 already.
        string output = product.Output[0];
        long? backTo = (long)TensorProto.Types.DataType.Float;
        if (OnlyReader(output) is { OpType: "Cast" } back && IsOnnx(back))
        {
            removed.Add(back);
            output = back.Output[0];
            backTo = Int(back, "to");
        }

        refusal = !GatedRmsNormSignature.EngineRuns(epsilon) ? $"its epsilon is {epsilon}, the engine takes a finite epsilon >= 0"
            : Refusal(hints, x, scale, gate, gateCast, productInFloat, heads, d, backTo);
        return refusal is null ? new GatedNormChain(x, scale, gate, output, epsilon, removed) : null;
    }

    /// <summary>
    /// Why one GatedRMSNorm (x, scale and gate in one type; y in x's shape; each group of scale's length normalized) would not
    /// compute what the chain does, or null. The chain normalizes each head of d; the fused node groups of the whole scale.
    /// </summary>
    private static string? Refusal(ShapeHints hints, string x, string scale, string gate, bool gateCast, bool productInFloat, long heads, long d, long? backTo)
    {
        var type = hints.ElementType(scale);
        if (type is not (TensorProto.Types.DataType.Float or TensorProto.Types.DataType.Float16))
            return $"its weight '{scale}' is {TypeName(type)}, the fold needs float32 or float16";
        var scaleDims = hints.DeclaredDims(scale);
        if (scaleDims is null || scaleDims.Any(n => n < 0) || scaleDims.Aggregate(1L, (a, n) => a * n) != d)
            return $"its weight '{scale}' is {Dims(scaleDims)}, the fold needs [{d}] (one head's)";
        if (backTo != (long)type) return $"its output is {TypeName((TensorProto.Types.DataType?)backTo)}, its weight {TypeName(type)}";
        var xDims = hints.DeclaredDims(x);
        if (hints.Rank(x) != 3 || xDims is not null && xDims[2] >= 0 && xDims[2] != heads * d)
            return $"x '{x}' is {Dims(xDims)}, the fold needs [B, T, {heads * d}]";
        if (hints.InferredType(x) != type) return $"x '{x}' is {TypeName(hints.InferredType(x))}, its weight {TypeName(type)}";
        if (gateCast && hints.InferredType(gate) != type) return $"the gate '{gate}' is {TypeName(hints.InferredType(gate))}, its weight {TypeName(type)}";
        if (!gateCast && productInFloat && type != TensorProto.Types.DataType.Float) return $"the gate '{gate}' is float32, its weight {TypeName(type)}";
        if (!SameShape(xDims, hints.DeclaredDims(gate))) return $"x '{x}' is {Dims(xDims)} and the gate '{gate}' {Dims(hints.DeclaredDims(gate))}: the product broadcasts";
        return null;
    }

    private static string TypeName(TensorProto.Types.DataType? type) => type switch
    {
        null => "of unknown type",
        TensorProto.Types.DataType.Float => "float32",
        _ => type.Value.ToString().ToLowerInvariant(),
    };

    private static string Dims(IReadOnlyList<long>? dims) =>
        dims is null ? "of unknown shape" : $"[{string.Join(", ", dims.Select(n => n >= 0 ? n.ToString() : "?"))}]";

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

    // Another domain's Sigmoid is no SiLU's: ORT runs it (or refuses it) as that domain says.
    private static bool IsSigmoid(NodeProto? node) => node is { OpType: "Sigmoid", Input.Count: 1 } && IsOnnx(node);

    /// <summary>
    /// com.microsoft QuickGelu with alpha given as exactly 1: x · sigmoid(x), SiLU. Without the attribute alpha is 1.702 (ORT's
    /// schema), another function.
    /// </summary>
    private static bool IsSiluQuickGelu(NodeProto node) =>
        node is { OpType: "QuickGelu", Domain: "com.microsoft", Input.Count: 1, Output.Count: 1, Attribute.Count: 1 }
        && node.Attribute[0] is { Name: "alpha", Type: AttributeProto.Types.AttributeType.Float } alpha && alpha.F == 1f;

    private static bool IsCastToFloat(NodeProto cast) => IsOnnx(cast) && cast.Input.Count == 1 && Int(cast, "to") == (long)TensorProto.Types.DataType.Float;

    private static bool IsOnnx(NodeProto node) => OnnxModel.SameDomain(node.Domain, OnnxModel.OnnxDomain);

    private static long? Int(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I;
}

using System.Runtime.InteropServices;
using Engine.Onnx.Ops;
using Engine.Onnx.Proto;

namespace Engine.Onnx;

/// <summary>
/// The last dim of a value when the model makes it plain: declared (graph inputs, outputs, value_info,
/// initializers) or carried through the ops exporters put in front of attention inputs (MatMul or Gemm with
/// a constant weight, elementwise ops, Reshape to a constant shape). Enough to tell a per-head decay from a
/// per-key one before ORT runs; null when the model does not say.
/// </summary>
internal sealed class ShapeHints
{
    private const int MaxDepth = 32;
    /// <summary>com.microsoft's matrix product by block-quantized weights: attribute N is its output's last dim.</summary>
    private const string MatMulNBits = "MatMulNBits";

    private static readonly HashSet<string> Unary =
    [
        "Neg", "Exp", "Log", "Sigmoid", "Softplus", "Softsign", "Tanh", "Relu", "LeakyRelu", "Elu", "Selu", "Abs", "Identity",
        "Cast", "Clip", "HardSigmoid", "Sqrt", "Reciprocal", "Erf", "Gelu", "Silu", "Swish", "Mish", "ThresholdedRelu", "Softmax", "LogSoftmax",
        "LpNormalization", "LayerNormalization", "RMSNormalization",
    ];

    private static readonly HashSet<string> Broadcasting = ["Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Where"];

    private readonly Dictionary<string, long[]> _declared = [];
    private readonly Dictionary<string, int> _elementTypes = [];
    private readonly Dictionary<string, TensorProto> _constants = [];
    private readonly Dictionary<string, NodeProto> _producers = [];

    /// <summary>
    /// The hints of <paramref name="graph"/>, and of every subgraph (If, Loop, Scan bodies) with its enclosing graphs' in
    /// scope: a body reads outer values by name. Depth first; each graph's hints are made when it is reached, so a pass
    /// may change a graph before its subgraphs are reached.
    /// </summary>
    public static IEnumerable<(GraphProto Graph, ShapeHints Hints)> OfEveryGraph(GraphProto graph, ShapeHints? enclosing = null)
    {
        var hints = new ShapeHints(graph, enclosing);
        yield return (graph, hints);
        foreach (var node in graph.Node.ToArray())
            foreach (var attribute in node.Attribute)
                foreach (var sub in attribute.G is null ? attribute.Graphs : attribute.Graphs.Prepend(attribute.G))
                    foreach (var scoped in OfEveryGraph(sub, hints))
                        yield return scoped;
    }

    /// <param name="enclosing">the hints of the graph whose node holds <paramref name="graph"/> as a body, or null.</param>
    public ShapeHints(GraphProto graph, ShapeHints? enclosing = null)
    {
        if (enclosing is not null)
        {
            _declared = new(enclosing._declared);
            _elementTypes = new(enclosing._elementTypes);
            _constants = new(enclosing._constants);
            _producers = new(enclosing._producers);
        }
        // A body's own inputs hide outer values of the same name.
        foreach (var input in graph.Input)
        {
            _declared.Remove(input.Name);
            _elementTypes.Remove(input.Name);
            _constants.Remove(input.Name);
            _producers.Remove(input.Name);
        }
        foreach (var info in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo))
        {
            if (info.Type?.TensorType is { ElemType: > 0 } tensorType) _elementTypes[info.Name] = tensorType.ElemType;
            var shape = info.Type?.TensorType?.Shape;
            if (shape is null) continue;
            _declared[info.Name] = shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1).ToArray();
        }
        // An initializer that is also a graph input is a default the caller may feed over: its value is no constant,
        // and its declared input shape is what a feed must have.
        var inputs = graph.Input.Select(i => i.Name).ToHashSet();
        foreach (var tensor in graph.Initializer.Where(t => !inputs.Contains(t.Name)))
        {
            _constants[tensor.Name] = tensor;
            _elementTypes[tensor.Name] = tensor.DataType;
            _declared[tensor.Name] = tensor.Dims.ToArray();
        }
        foreach (var node in graph.Node)
        {
            foreach (var output in node.Output) _producers[output] = node;
            if (node.OpType == "Constant" && node.Output.Count == 1 && ConstantValue(node) is TensorProto value)
            {
                _constants[node.Output[0]] = value;
                _elementTypes[node.Output[0]] = value.DataType;
                _declared[node.Output[0]] = value.Dims.ToArray();
            }
        }
    }

    /// <summary>
    /// A Constant node's tensor: its value attribute, or one of the numbers value_int, value_ints, value_float and value_floats
    /// give (int64 and float32; a scalar or a 1-D tensor); null for one given otherwise (sparse, strings).
    /// </summary>
    private static TensorProto? ConstantValue(NodeProto node)
    {
        if (node.Attribute.Count != 1) return null;
        var a = node.Attribute[0];
        return a.Name switch
        {
            "value" => a.T,
            "value_int" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Int64, Int64Data = { a.I } },
            "value_ints" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Int64, Dims = { a.Ints.Count }, Int64Data = { a.Ints } },
            "value_float" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Float, FloatData = { a.F } },
            "value_floats" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Float, Dims = { a.Floats.Count }, FloatData = { a.Floats } },
            _ => null,
        };
    }

    /// <summary>The element type the model declares for <paramref name="value"/> (a Constant node's tensor declares its own), or null.</summary>
    public TensorProto.Types.DataType? ElementType(string value) =>
        _elementTypes.TryGetValue(value, out int type) ? (TensorProto.Types.DataType)type : null;

    /// <summary>
    /// The element type of <paramref name="value"/>: declared, or a MatMul's by its declared weight, or a Cast's target, or an
    /// engine LinearAttention's by its declared inputs (it takes and writes one type); else null.
    /// </summary>
    public TensorProto.Types.DataType? InferredType(string value) => ElementType(value) ?? Producer(value) switch
    {
        { OpType: "MatMul" } m when m.Input.Count == 2 => ElementType(m.Input[1]),
        // int4/int8 weights (the builder's quantized exports): the scales are of the activations' type.
        { OpType: MatMulNBits, Domain: HandoverRewriter.MicrosoftDomain } m when m.Input.Count >= 3 => ElementType(m.Input[2]),
        { OpType: "Cast" } c => (TensorProto.Types.DataType?)c.Attribute.FirstOrDefault(a => a.Name == "to")?.I,
        { OpType: LinearAttentionSignature.OpType, Domain: HandoverRewriter.EngineDomain } a =>
            a.Input.Where(i => i.Length > 0).Select(ElementType).FirstOrDefault(t => t is not null),
        _ => null,
    };

    /// <summary>The dims the model declares for <paramref name="value"/> (−1 for a symbolic one), or null.</summary>
    public IReadOnlyList<long>? DeclaredDims(string value) => _declared.GetValueOrDefault(value);

    /// <summary>The last dim of <paramref name="value"/>, or null when the model does not make it plain.</summary>
    public long? LastDim(string value) => LastDim(value, 0);

    /// <summary>
    /// The values of an int64 constant (an initializer no graph input overrides, or a Constant node) held in the model itself
    /// as many as its dims say, or null: a constant in an external file, or one whose data do not hold its dims, is no hint
    /// (ONNX Runtime reads and checks it).
    /// </summary>
    public long[]? Int64s(string value)
    {
        if (!_constants.TryGetValue(value, out var t) || t.DataType != (int)TensorProto.Types.DataType.Int64 || InlineCount(t) is not long count) return null;
        if (t.HasRawData) return t.RawData.Length == count * sizeof(long) ? MemoryMarshal.Cast<byte, long>(t.RawData.Span).ToArray() : null;
        return t.Int64Data.Count == count ? t.Int64Data.ToArray() : null;
    }

    /// <summary>The tensor of a constant (an initializer no graph input overrides, or a Constant node), or null.</summary>
    public TensorProto? Constant(string value) => _constants.GetValueOrDefault(value);

    /// <summary>
    /// The value of a float32 or float16 constant holding one element in the model itself, or null (as for <see cref="Int64s"/>,
    /// a constant in an external file or with data that do not hold one element is none).
    /// </summary>
    public float? Scalar(string value)
    {
        if (!_constants.TryGetValue(value, out var t) || InlineCount(t) != 1) return null;
        return (TensorProto.Types.DataType)t.DataType switch
        {
            TensorProto.Types.DataType.Float when t.HasRawData => t.RawData.Length == sizeof(float) ? MemoryMarshal.Read<float>(t.RawData.Span) : null,
            TensorProto.Types.DataType.Float => t.FloatData.Count == 1 ? t.FloatData[0] : null,
            // float16 keeps its bits in int32_data unless raw.
            TensorProto.Types.DataType.Float16 when t.HasRawData => t.RawData.Length == sizeof(ushort) ? (float)MemoryMarshal.Read<Half>(t.RawData.Span) : null,
            TensorProto.Types.DataType.Float16 => t.Int32Data.Count == 1 ? (float)BitConverter.UInt16BitsToHalf((ushort)t.Int32Data[0]) : null,
            _ => null,
        };
    }

    /// <summary>The element count of a constant whose data the model holds (not in an external file) and whose dims are valid, or null.</summary>
    private static long? InlineCount(TensorProto t)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External) return null;
        long count = 1;
        foreach (long d in t.Dims)
        {
            if (d < 0 || (d > 0 && count > int.MaxValue / d)) return null;
            count *= d;
        }
        return count;
    }

    /// <summary>The node that writes <paramref name="value"/>, or null.</summary>
    public NodeProto? Producer(string value) => _producers.GetValueOrDefault(value);

    /// <summary>Dim <paramref name="axis"/> of <paramref name="value"/> as the model declares it (of rank <paramref name="rank"/>), or null when it does not.</summary>
    public long? DeclaredDim(string value, int rank, int axis) =>
        _declared.TryGetValue(value, out var dims) && dims.Length == rank && dims[axis] >= 0 ? dims[axis] : null;

    /// <summary>The rank the model declares for <paramref name="value"/>, or null.</summary>
    public int? DeclaredRank(string value) => _declared.TryGetValue(value, out var dims) ? dims.Length : null;

    /// <summary>
    /// The rank of <paramref name="value"/>: declared, or 3 for an engine LinearAttention's output (its kernel takes and writes
    /// (B, T, H·d) only); else null.
    /// </summary>
    public int? Rank(string value) => DeclaredRank(value) ?? Producer(value) switch
    {
        { OpType: LinearAttentionSignature.OpType, Domain: HandoverRewriter.EngineDomain } a when a.Output[0] == value => 3,
        _ => null,
    };

    private long? LastDim(string value, int depth)
    {
        if (value.Length == 0 || depth > MaxDepth) return null;
        if (_declared.TryGetValue(value, out var dims)) return dims.Length == 0 ? 1 : dims[^1] >= 0 ? dims[^1] : null;
        if (!_producers.TryGetValue(value, out var node) || node.Input.Count == 0) return null;
        if (node.OpType == "MatMul" && node.Input.Count == 2) return LastDim(node.Input[1], depth + 1);
        if (node.OpType == MatMulNBits && node.Domain == HandoverRewriter.MicrosoftDomain)
            return node.Attribute.FirstOrDefault(a => a.Name == "N")?.I is long n && n > 0 ? n : null;
        if (node.OpType == "Gemm" && node.Input.Count >= 2)
        {
            bool transB = node.Attribute.Any(a => a.Name == "transB" && a.I != 0);
            return _declared.TryGetValue(node.Input[1], out var w) && w.Length == 2 && w[transB ? 0 : 1] >= 0 ? w[transB ? 0 : 1] : null;
        }
        if (Unary.Contains(node.OpType)) return LastDim(node.Input[0], depth + 1);
        if (node.OpType == "Transpose" && _declared.TryGetValue(node.Input[0], out var input))
        {
            // Without perm, Transpose reverses the dims.
            var perm = node.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints;
            long from = perm is { Count: > 0 } ? perm[^1] : 0;
            return perm is { Count: > 0 } && perm.Count != input.Length || from < 0 || from >= input.Length || input[from] < 0 ? null : input[from];
        }
        if (Broadcasting.Contains(node.OpType))
        {
            // Broadcasting stretches only dims of 1: any known dim above 1 is the result's.
            var known = node.Input.Where(i => i.Length > 0).Select(i => LastDim(i, depth + 1)).ToArray();
            long? wide = known.Where(d => d > 1).Max();
            if (wide is not null) return wide;
            return known.All(d => d is not null) ? 1 : null;
        }
        if (node.OpType == "Reshape" && node.Input.Count == 2 && Int64s(node.Input[1]) is long[] target)
            return target.Length > 0 && target[^1] > 0 ? target[^1] : null;
        return null;
    }
}

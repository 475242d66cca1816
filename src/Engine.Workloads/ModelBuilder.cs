using Engine.Onnx;
using Engine.Onnx.Proto;
using Google.Protobuf;

namespace Engine.Workloads;

/// <summary>
/// Builds small ONNX models in code: graph inputs and outputs, initializers and nodes. Used by the tests,
/// the sample models and the benchmarks to make real model files.
/// </summary>
internal sealed class ModelBuilder
{
    private readonly ModelProto _model;
    private readonly GraphProto _graph;
    private readonly HashSet<string> _names = [];
    private int _nodeCount;

    /// <param name="onnxOpset">The ai.onnx opset the model imports.</param>
    public ModelBuilder(long onnxOpset = 21, string graphName = "model")
    {
        _graph = new GraphProto { Name = graphName };
        _model = new ModelProto
        {
            IrVersion = onnxOpset >= 27 ? 13 : 10,
            // No version: the sample models kept in the repository stay the same bytes from release to release.
            ProducerName = "Engine.Workloads",
            Graph = _graph,
        };
        _model.OpsetImport.Add(new OperatorSetIdProto { Domain = OnnxModel.OnnxDomain, Version = onnxOpset });
    }

    /// <summary>Imports another operator set (e.g. com.microsoft 1).</summary>
    public ModelBuilder Import(string domain, long version)
    {
        if (!_model.OpsetImport.Any(o => o.Domain == domain))
            _model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        return this;
    }

    /// <summary>A graph input. Dims are numbers or symbol names (strings); null leaves the shape unknown.</summary>
    public string Input(string name, TensorProto.Types.DataType type, params object[]? dims)
    {
        Claim(name);
        _graph.Input.Add(ValueInfo(name, type, dims));
        return name;
    }

    /// <summary>Declares an inner value's type and shape (the graph's value_info), as exporters that annotate every value do.</summary>
    public string Declare(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        _graph.ValueInfo.Add(ValueInfo(name, type, dims));
        return name;
    }

    /// <summary>A graph output; dims null leaves the shape to inference.</summary>
    public void Output(string name, TensorProto.Types.DataType type, params object[]? dims) =>
        _graph.Output.Add(ValueInfo(name, type, dims));

    /// <summary>A float initializer stored as raw bytes.</summary>
    public string Initializer(string name, float[] values, params long[] dims) => Initializer(name, TensorData.Create(values, dims));

    /// <summary>A float initializer stored as float32 or float16 (the values rounded to the nearest half).</summary>
    public string Initializer(string name, float[] values, TensorElementType type, params long[] dims) => type switch
    {
        TensorElementType.Float => Initializer(name, values, dims),
        TensorElementType.Float16 => Initializer(name, TensorData.Create(Array.ConvertAll(values, v => (Half)v), dims)),
        _ => throw new ArgumentException($"initializer '{name}': float weights are stored as Float or Float16, not {type}", nameof(type)),
    };

    /// <summary>An int64 initializer (shapes, split sizes, axes).</summary>
    public string Int64s(string name, params long[] values) => Initializer(name, TensorData.Create(values, values.Length));

    public string Initializer(string name, TensorData data)
    {
        Claim(name);
        var tensor = new TensorProto { Name = name, DataType = (int)data.ElementType, RawData = ByteString.CopyFrom(data.Bytes) };
        tensor.Dims.AddRange(data.Shape);
        _graph.Initializer.Add(tensor);
        return name;
    }

    /// <summary>
    /// A node; returns its output names (generated unless given). Attribute values: long or int (INT),
    /// float (FLOAT), string (STRING), long[] (INTS), float[] (FLOATS), TensorData (TENSOR), OnnxModel (GRAPH: its graph,
    /// e.g. an If's branch, whose nodes may read the outer graph's values).
    /// </summary>
    public string[] Node(string opType, IReadOnlyList<string> inputs, int outputs = 1, string domain = "",
        string? name = null, IReadOnlyList<string>? outputNames = null, params (string Name, object Value)[] attributes)
    {
        name ??= $"{opType}_{_nodeCount}";
        _nodeCount++;
        var node = new NodeProto { OpType = opType, Domain = domain, Name = name };
        node.Input.AddRange(inputs);
        var names = outputNames?.ToArray() ?? Enumerable.Range(0, outputs).Select(i => $"{name}_out{i}").ToArray();
        foreach (var n in names) if (n.Length > 0) Claim(n);
        node.Output.AddRange(names);
        foreach (var (attributeName, value) in attributes) node.Attribute.Add(Attribute(attributeName, value));
        _graph.Node.Add(node);
        return names;
    }

    /// <summary>A node with one output.</summary>
    public string Op(string opType, params string[] inputs) => Node(opType, inputs)[0];

    public OnnxModel Build() => new(_model.Clone());

    private void Claim(string name)
    {
        if (!_names.Add(name)) throw new ArgumentException($"the name '{name}' is already used in this graph", nameof(name));
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[]? dims)
    {
        var tensorType = new TypeProto.Types.Tensor { ElemType = (int)type };
        if (dims is not null)
        {
            tensorType.Shape = new TensorShapeProto();
            foreach (var d in dims)
            {
                tensorType.Shape.Dim.Add(d switch
                {
                    string symbol => new TensorShapeProto.Types.Dimension { DimParam = symbol },
                    int n => new TensorShapeProto.Types.Dimension { DimValue = n },
                    long n => new TensorShapeProto.Types.Dimension { DimValue = n },
                    _ => throw new ArgumentException($"dim {d} of '{name}' must be a number or a symbol name", nameof(dims)),
                });
            }
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensorType } };
    }

    private static AttributeProto Attribute(string name, object value)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case int i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case long l: a.Type = AttributeProto.Types.AttributeType.Int; a.I = l; break;
            case float f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f; break;
            case string s: a.Type = AttributeProto.Types.AttributeType.String; a.S = ByteString.CopyFromUtf8(s); break;
            case long[] ls: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ls); break;
            case float[] fs: a.Type = AttributeProto.Types.AttributeType.Floats; a.Floats.AddRange(fs); break;
            case TensorData t:
                a.Type = AttributeProto.Types.AttributeType.Tensor;
                a.T = new TensorProto { DataType = (int)t.ElementType, RawData = ByteString.CopyFrom(t.Bytes) };
                a.T.Dims.AddRange(t.Shape);
                break;
            case OnnxModel m: a.Type = AttributeProto.Types.AttributeType.Graph; a.G = m.Proto.Graph.Clone(); break;
            default: throw new ArgumentException($"attribute '{name}': values of type {value.GetType().Name} are not supported", nameof(value));
        }
        return a;
    }
}

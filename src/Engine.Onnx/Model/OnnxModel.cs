using Engine.Onnx.Proto;
using Google.Protobuf;

namespace Engine.Onnx;

/// <summary>A graph input or output as the model declares it: name, element type and dims (numbers or symbols).</summary>
public sealed record ModelValueInfo(string Name, TensorProto.Types.DataType ElementType, IReadOnlyList<string>? Dims)
{
    public override string ToString() => $"{Name}: {ElementType} {(Dims is null ? "(shape unknown)" : "[" + string.Join(", ", Dims) + "]")}";

    public static ModelValueInfo From(ValueInfoProto info)
    {
        var tensor = info.Type?.TensorType;
        IReadOnlyList<string>? dims = tensor?.Shape?.Dim.Select(d =>
            d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue.ToString()
            : d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam ? d.DimParam : "?").ToArray();
        return new ModelValueInfo(info.Name, (TensorProto.Types.DataType)(tensor?.ElemType ?? 0), dims);
    }
}

/// <summary>
/// An ONNX model held as its protobuf messages. Loaded from a path (external data then resolves next to
/// the file) or from bytes (with an optional folder for external data); saved back as bytes.
/// </summary>
public sealed class OnnxModel
{
    public const string OnnxDomain = "";

    public OnnxModel(ModelProto proto, string? baseDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(proto);
        if (proto.Graph is null) throw new InvalidDataException("the model has no graph");
        Proto = proto;
        BaseDirectory = baseDirectory;
    }

    public ModelProto Proto { get; }

    /// <summary>The folder external tensor data is read from (the model file's folder), if any.</summary>
    public string? BaseDirectory { get; }

    public GraphProto Graph => Proto.Graph;

    public static OnnxModel Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new FileNotFoundException($"model file not found: {path}", path);
        return Load(File.ReadAllBytes(full), Path.GetDirectoryName(full));
    }

    public static OnnxModel Load(byte[] bytes, string? baseDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"not an ONNX model: {e.Message}", e);
        }
        return new OnnxModel(proto, baseDirectory);
    }

    public byte[] ToBytes() => Proto.ToByteArray();

    public void Save(string path) => File.WriteAllBytes(path, ToBytes());

    /// <summary>
    /// Saves the model with every raw initializer of at least <paramref name="minBytes"/> bytes moved to
    /// <paramref name="dataFileName"/> next to it (ONNX external data).
    /// </summary>
    public void SaveWithExternalData(string path, string dataFileName, long minBytes = 1024)
    {
        var copy = Proto.Clone();
        var dataPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, dataFileName);
        using (var data = File.Create(dataPath))
        {
            foreach (var tensor in AllGraphs(copy.Graph).SelectMany(g => g.Initializer))
            {
                if (!tensor.HasRawData || tensor.RawData.Length < minBytes) continue;
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataFileName });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = data.Position.ToString() });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = tensor.RawData.Length.ToString() });
                data.Write(tensor.RawData.Span);
                tensor.DataLocation = TensorProto.Types.DataLocation.External;
                tensor.ClearRawData();
            }
        }
        File.WriteAllBytes(path, copy.ToByteArray());
    }

    public OnnxModel Clone() => new(Proto.Clone(), BaseDirectory);

    /// <summary>Graph inputs that are fed at run time (initializers listed as inputs are left out).</summary>
    public IReadOnlyList<ModelValueInfo> Inputs
    {
        get
        {
            var initializers = Graph.Initializer.Select(t => t.Name).ToHashSet();
            return Graph.Input.Where(i => !initializers.Contains(i.Name)).Select(ModelValueInfo.From).ToArray();
        }
    }

    public IReadOnlyList<ModelValueInfo> Outputs => Graph.Output.Select(ModelValueInfo.From).ToArray();

    /// <summary>The opset the model imports for a domain ("" and "ai.onnx" are the same), or null.</summary>
    public long? OpsetOf(string domain)
    {
        foreach (var o in Proto.OpsetImport)
            if (SameDomain(o.Domain, domain)) return o.Version;
        return null;
    }

    public static bool SameDomain(string a, string b) => NormalizeDomain(a) == NormalizeDomain(b);

    public static string NormalizeDomain(string domain) => domain == "ai.onnx" ? OnnxDomain : domain;

    /// <summary>Whether any initializer keeps its data in an external file.</summary>
    public bool HasExternalData => AllGraphs(Graph).Any(g => g.Initializer.Any(t => t.DataLocation == TensorProto.Types.DataLocation.External));

    /// <summary>The graph and every subgraph held in node attributes (If, Loop, Scan bodies), depth first.</summary>
    public static IEnumerable<GraphProto> AllGraphs(GraphProto graph)
    {
        yield return graph;
        foreach (var node in graph.Node)
            foreach (var attribute in node.Attribute)
            {
                if (attribute.G is not null)
                    foreach (var g in AllGraphs(attribute.G)) yield return g;
                foreach (var sub in attribute.Graphs)
                    foreach (var g in AllGraphs(sub)) yield return g;
            }
    }

    /// <summary>An initializer's values, wherever they are stored (raw bytes, typed fields or an external file).</summary>
    public TensorData ReadTensor(TensorProto tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var type = (TensorProto.Types.DataType)tensor.DataType;
        var shape = tensor.Dims.ToArray();
        if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
            return TensorData.FromBytes(type, shape, ReadExternal(tensor));
        if (tensor.HasRawData) return TensorData.FromBytes(type, shape, tensor.RawData.Span);
        return type switch
        {
            TensorProto.Types.DataType.Float => TensorData.Create(tensor.FloatData.ToArray(), shape),
            TensorProto.Types.DataType.Double => TensorData.Create(tensor.DoubleData.ToArray(), shape),
            TensorProto.Types.DataType.Int64 => TensorData.Create(tensor.Int64Data.ToArray(), shape),
            TensorProto.Types.DataType.Int32 => TensorData.Create(tensor.Int32Data.ToArray(), shape),
            _ => throw new NotSupportedException($"tensor '{tensor.Name}': reading {type} from typed fields is not supported"),
        };
    }

    private byte[] ReadExternal(TensorProto tensor)
    {
        string? location = null;
        long offset = 0, length = -1;
        foreach (var entry in tensor.ExternalData)
        {
            switch (entry.Key)
            {
                case "location": location = entry.Value; break;
                case "offset": offset = long.Parse(entry.Value); break;
                case "length": length = long.Parse(entry.Value); break;
            }
        }
        if (location is null) throw new InvalidDataException($"tensor '{tensor.Name}': external data without a location");
        if (BaseDirectory is null)
            throw new InvalidOperationException($"tensor '{tensor.Name}' keeps its data in '{location}': load the model from its path or give the folder of its data");
        var file = Path.GetFullPath(Path.Combine(BaseDirectory, location));
        using var stream = File.OpenRead(file);
        if (length < 0) length = stream.Length - offset;
        var bytes = new byte[length];
        stream.Seek(offset, SeekOrigin.Begin);
        stream.ReadExactly(bytes);
        return bytes;
    }
}

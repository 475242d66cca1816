using System.Globalization;
using Engine.IO;
using Engine.Onnx.Proto;
using Google.Protobuf;

namespace Engine.Onnx;

/// <summary>A graph input or output as the model declares it: name, element type and dims (numbers or symbols).</summary>
public sealed record ModelValueInfo(string Name, TensorElementType ElementType, IReadOnlyList<string>? Dims)
{
    public override string ToString() => $"{Name}: {ElementType} {(Dims is null ? "(shape unknown)" : "[" + string.Join(", ", Dims) + "]")}";

    internal static ModelValueInfo From(ValueInfoProto info)
    {
        var tensor = info.Type?.TensorType;
        IReadOnlyList<string>? dims = tensor?.Shape?.Dim.Select(d =>
            d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue.ToString()
            : d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam ? d.DimParam : "?").ToArray();
        return new ModelValueInfo(info.Name, (TensorElementType)(tensor?.ElemType ?? 0), dims);
    }
}

/// <summary>
/// An ONNX model held as its protobuf messages. Loaded from a path (external data then resolves next to
/// the file) or from bytes (with an optional folder for external data); saved back as bytes.
/// Errors name the model (its file, or its graph) and say what was expected: a file that is not an ONNX
/// model is an <see cref="InvalidDataException"/>; what <see cref="ReadTensor"/> refuses is said there.
/// </summary>
public sealed class OnnxModel
{
    public const string OnnxDomain = "";

    internal OnnxModel(ModelProto proto, string? baseDirectory = null) : this(proto, baseDirectory, filePath: null)
    {
    }

    private OnnxModel(ModelProto proto, string? baseDirectory, string? filePath)
    {
        ArgumentNullException.ThrowIfNull(proto);
        if (proto.Graph is null) throw new InvalidDataException($"{Prefix(filePath)}the model has no graph");
        Proto = proto;
        BaseDirectory = baseDirectory;
        FilePath = filePath;
    }

    internal ModelProto Proto { get; }

    /// <summary>The folder external tensor data is read from (the model file's folder), if any.</summary>
    public string? BaseDirectory { get; }

    /// <summary>The file the model was loaded from, as given, if any.</summary>
    public string? FilePath { get; }

    /// <summary>What messages call the model: its file, or its graph's name.</summary>
    public string DisplayName => FilePath ?? $"model '{Graph.Name}'";

    internal GraphProto Graph => Proto.Graph;

    /// <summary>Loads a model file; <see cref="FileNotFoundException"/> if it is absent, <see cref="InvalidDataException"/> if it is not an ONNX model.</summary>
    public static OnnxModel Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new FileNotFoundException($"{path}: is a folder, not a model file", path);
        if (!File.Exists(full)) throw new FileNotFoundException($"model file not found: {path}", path);
        // Parsed as it is read: a path that is no model (a device such as /dev/zero, which has no end) fails at its first bytes.
        using var stream = File.OpenRead(full);
        return Parse(() => ModelProto.Parser.ParseFrom(stream), Path.GetDirectoryName(full), path);
    }

    /// <summary>A model from its bytes, external data read from <paramref name="baseDirectory"/>; <see cref="InvalidDataException"/> if they are not an ONNX model.</summary>
    public static OnnxModel Load(byte[] bytes, string? baseDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        return Parse(() => ModelProto.Parser.ParseFrom(bytes), baseDirectory, filePath: null);
    }

    private static OnnxModel Parse(Func<ModelProto> parse, string? baseDirectory, string? filePath)
    {
        ModelProto proto;
        try
        {
            proto = parse();
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"{Prefix(filePath)}not an ONNX model: {e.Message}", e);
        }
        return new OnnxModel(proto, baseDirectory, filePath);
    }

    private static string Prefix(string? filePath) => filePath is null ? "" : filePath + ": ";

    public byte[] ToBytes() => Proto.ToByteArray();

    public void Save(string path) => OutputFile.Write(path, stream => stream.Write(ToBytes()));

    /// <summary>
    /// Saves the model with every raw initializer of at least <paramref name="minBytes"/> bytes moved to
    /// <paramref name="dataFileName"/> next to it (ONNX external data).
    /// </summary>
    public void SaveWithExternalData(string path, string dataFileName, long minBytes = 1024)
    {
        var copy = Proto.Clone();
        var dataPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, dataFileName);
        OutputFile.Write(dataPath, data =>
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
        });
        OutputFile.Write(path, stream => stream.Write(copy.ToByteArray()));
    }

    public OnnxModel Clone() => new(Proto.Clone(), BaseDirectory, FilePath);

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

    /// <summary>The ONNX IR version the model declares.</summary>
    public long IrVersion => Proto.IrVersion;

    /// <summary>The tool that produced the model ("" when not recorded).</summary>
    public string ProducerName => Proto.ProducerName;

    /// <summary>The producing tool's version ("" when not recorded).</summary>
    public string ProducerVersion => Proto.ProducerVersion;

    /// <summary>The opsets the model imports, as (domain, version) in the model's order.</summary>
    public IReadOnlyList<(string Domain, long Version)> Opsets => Proto.OpsetImport.Select(o => (o.Domain, o.Version)).ToArray();

    /// <summary>The op type of every node, subgraphs included (depth first).</summary>
    public IReadOnlyList<string> NodeOpTypes => AllGraphs(Graph).SelectMany(g => g.Node).Select(n => n.OpType).ToArray();

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
    internal static IEnumerable<GraphProto> AllGraphs(GraphProto graph)
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

    /// <summary>
    /// An initializer's values, wherever they are stored (raw bytes, typed fields or an external file).
    /// Throws <see cref="InvalidDataException"/>, naming the model and the tensor, when the data does not
    /// hold what the type and dims need, or the external data is not a file inside the model's folder
    /// (absolute locations, '..' and symbolic links that lead out of it are refused) holding those bytes at
    /// its offset; <see cref="NotSupportedException"/> for element types it does not read, and
    /// <see cref="InvalidOperationException"/> for external data when the model has no folder.
    /// </summary>
    internal TensorData ReadTensor(TensorProto tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var type = (TensorElementType)tensor.DataType;
        var shape = tensor.Dims.ToArray();
        long count = ElementCount(tensor);
        if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
            return TensorData.FromBytes(type, shape, ReadExternal(tensor, ByteCount(tensor, count)));
        if (tensor.HasRawData)
        {
            long needed = ByteCount(tensor, count);
            if (tensor.RawData.Length != needed)
                throw Invalid(tensor, $"{type} {TensorData.Format(shape)} needs {needed} bytes, raw_data holds {tensor.RawData.Length}");
            return TensorData.FromBytes(type, shape, tensor.RawData.Span);
        }
        return type switch
        {
            TensorElementType.Float => Typed(tensor.FloatData.ToArray(), "float_data"),
            TensorElementType.Double => Typed(tensor.DoubleData.ToArray(), "double_data"),
            TensorElementType.Int64 => Typed(tensor.Int64Data.ToArray(), "int64_data"),
            TensorElementType.Int32 => Typed(tensor.Int32Data.ToArray(), "int32_data"),
            _ => throw new NotSupportedException($"{DisplayName}: tensor '{tensor.Name}': reading {type} from typed fields is not supported"),
        };

        TensorData Typed<T>(T[] values, string field) where T : unmanaged => values.LongLength == count ? TensorData.Create(values, shape)
            : throw Invalid(tensor, $"{type} {TensorData.Format(shape)} needs {count} values, {field} holds {values.LongLength}");
    }

    /// <summary>
    /// Checks every initializer kept in an external file as <see cref="ReadTensor"/> would read it, reading none of its data:
    /// a file inside the model's folder holding, at its offset, the bytes its type and dims take (where the type is one
    /// <see cref="TensorData"/> holds; for others only where the file lies). ONNX Runtime reads them itself; this names
    /// the tensor and refuses a location outside the folder whatever the native library does.
    /// </summary>
    internal void CheckExternalData()
    {
        foreach (var tensor in AllGraphs(Graph).SelectMany(g => g.Initializer).Where(t => t.DataLocation == TensorProto.Types.DataLocation.External))
        {
            long count = ElementCount(tensor);
            LocateExternal(tensor, TensorData.Holds((TensorElementType)tensor.DataType) ? ByteCount(tensor, count) : null);
        }
    }

    private long ElementCount(TensorProto tensor)
    {
        long count = 1;
        foreach (long d in tensor.Dims)
        {
            if (d < 0) throw Invalid(tensor, $"dims {TensorData.Format(tensor.Dims)} have the negative dimension {d}");
            if (d > 0 && count > long.MaxValue / d) throw Invalid(tensor, $"dims {TensorData.Format(tensor.Dims)} are too large: more than 2^63 elements");
            count *= d;
        }
        return count;
    }

    private InvalidDataException Invalid(TensorProto tensor, string why) => new($"{DisplayName}: tensor '{tensor.Name}': {why}");

    /// <summary>The bytes <paramref name="count"/> elements of the tensor's type take.</summary>
    private long ByteCount(TensorProto tensor, long count)
    {
        var type = (TensorElementType)tensor.DataType;
        if (!TensorData.Holds(type)) throw new NotSupportedException($"{DisplayName}: tensor '{tensor.Name}': element type {type} is not supported");
        int size = TensorData.ElementSize(type);
        if (count > long.MaxValue / size) throw Invalid(tensor, $"{type} {TensorData.Format(tensor.Dims)} is too large: more than 2^63 bytes");
        return count * size;
    }

    /// <summary>The tensor's <paramref name="bytes"/> from its external file, checked against the file before anything is allocated.</summary>
    private byte[] ReadExternal(TensorProto tensor, long bytes)
    {
        var (file, offset, length) = LocateExternal(tensor, bytes);
        if (length > Array.MaxLength)
            throw new NotSupportedException($"{DisplayName}: tensor '{tensor.Name}': {length} bytes of external data: tensors over {Array.MaxLength} bytes are not read");
        var data = new byte[length];
        using var stream = File.OpenRead(file);
        stream.Seek(offset, SeekOrigin.Begin);
        stream.ReadExactly(data);
        return data;
    }

    /// <summary>
    /// The file, offset and length of the tensor's external data, checked against the file: inside the model's folder, and
    /// holding <paramref name="bytes"/> (when known) at the offset.
    /// </summary>
    private (string File, long Offset, long Length) LocateExternal(TensorProto tensor, long? bytes)
    {
        string? location = null, offsetText = null, lengthText = null;
        foreach (var entry in tensor.ExternalData)
        {
            switch (entry.Key)
            {
                case "location": location = entry.Value; break;
                case "offset": offsetText = entry.Value; break;
                case "length": lengthText = entry.Value; break;
            }
        }
        if (string.IsNullOrEmpty(location)) throw Invalid(tensor, "external data without a location");
        if (BaseDirectory is null)
            throw new InvalidOperationException($"{DisplayName}: tensor '{tensor.Name}' keeps its data in '{location}': load the model from its path or give the folder of its data");
        string file = ExternalFile(tensor, location);
        long offset = offsetText is null ? 0 : ExternalNumber(tensor, "offset", offsetText);
        long fileLength = new FileInfo(file).Length;
        if (offset > fileLength)
            throw Invalid(tensor, $"external data offset {offset} is beyond the end of '{location}': the file holds {fileLength} bytes");
        long length = lengthText is null ? fileLength - offset : ExternalNumber(tensor, "length", lengthText);
        if (bytes is long needed && length != needed)
            throw Invalid(tensor, $"external data length {length} in '{location}', but {(TensorElementType)tensor.DataType} {TensorData.Format(tensor.Dims)} needs {needed} bytes");
        if (length > fileLength - offset)
            throw Invalid(tensor, $"external data [{offset}, {offset} + {length}) runs past the end of '{location}': the file holds {fileLength} bytes");
        return (file, offset, length);
    }

    private long ExternalNumber(TensorProto tensor, string key, string text) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value) ? value
            : throw Invalid(tensor, $"external data {key} '{text}' is not a non-negative integer");

    /// <summary>
    /// The file an external data location names, with its symbolic links resolved, once it is known to lie
    /// inside the model's folder: the location relative, inside the folder as written, and no link on its
    /// way leading out.
    /// </summary>
    private string ExternalFile(TensorProto tensor, string location)
    {
        if (location.Contains('\0')) throw Invalid(tensor, "external data location contains a NUL character");
        if (Path.IsPathRooted(location))
            throw Invalid(tensor, $"external data location '{location}' is an absolute path: it must be relative to the model's folder");
        string folder = Path.GetFullPath(BaseDirectory!);
        string file = Path.GetFullPath(Path.Combine(folder, location));
        if (!FilePaths.IsInside(folder, file)) throw Invalid(tensor, $"external data location '{location}' is outside the model's folder");
        string realFolder = FilePaths.Real(folder);
        string path = folder;
        foreach (var segment in Path.GetRelativePath(folder, file).Split(Path.DirectorySeparatorChar))
        {
            path = Path.Join(path, segment);
            if (!Path.Exists(path) || new FileInfo(path).LinkTarget is null) continue;
            string target = FilePaths.Real(path);
            if (!FilePaths.IsInside(realFolder, target))
                throw Invalid(tensor, $"external data location '{location}' goes through the symbolic link '{Path.GetRelativePath(folder, path)}' to '{target}', outside the model's folder");
        }
        if (!File.Exists(file)) throw Invalid(tensor, $"external data file '{location}' not found in the model's folder");
        return FilePaths.Real(file);
    }
}

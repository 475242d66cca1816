using System.Runtime.InteropServices;
using Engine.Onnx;
using Engine.Workloads;
using Engine.Onnx.Proto;
using Engine.Tests.Harness;
using Google.Protobuf;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// Seeded mutations of valid ONNX models, some with external data (bytes flipped, cut, inserted or removed;
/// initializers' dims, types, raw data and external data entries edited): loading each model and reading
/// every initializer ends in the documented InvalidDataException or NotSupportedException naming the model
/// (and the tensor), or in the values the file holds; never a read of a file outside the model's folder.
/// </summary>
[TestFixture]
public sealed class ModelFuzzTests
{
    private const int Mutations = 3000;
    private string _root = "";
    private string _folder = "";
    private string _secret = "";
    private byte[][] _models = [];
    private HashSet<string> _folderFiles = [];

    /// <summary>
    /// root/model: a model of every element type the loader reads with three initializers in weights.bin, a
    /// block model with its weights in block.bin, a folder, and links to root/secret.bin and root/secret/.
    /// </summary>
    [OneTimeSetUp]
    public void WriteModels()
    {
        _root = Directory.CreateTempSubdirectory("engine-model-fuzz-").FullName;
        _folder = Directory.CreateDirectory(Path.Combine(_root, "model")).FullName;
        Directory.CreateDirectory(Path.Combine(_folder, "sub"));
        Directory.CreateDirectory(Path.Combine(_root, "secret"));
        _secret = Path.Combine(_root, "secret.bin");
        File.WriteAllBytes(_secret, new byte[4096]);
        File.WriteAllBytes(Path.Combine(_root, "secret", "secret.bin"), new byte[4096]);
        File.CreateSymbolicLink(Path.Combine(_folder, "out-link.bin"), _secret);
        Directory.CreateSymbolicLink(Path.Combine(_folder, "out-dir"), Path.Combine(_root, "secret"));

        var b = new ModelBuilder();
        b.Input("x", TensorProto.Types.DataType.Float, 2, 8);
        b.Initializer("w", Enumerable.Range(0, 64).Select(i => i * 0.5f).ToArray(), 8, 8);
        b.Initializer("b", TensorData.Create(Enumerable.Range(0, 8).Select(i => i / 3.0).ToArray(), 8));
        b.Initializer("idx", TensorData.Create(new long[] { 0, -1, long.MaxValue }, 3));
        b.Initializer("h", TensorData.Create(new[] { (Half)1, (Half)(-2), (Half)0.5f, (Half)3, (Half)4, (Half)5 }, 2, 3));
        b.Initializer("n", TensorData.Create(new[] { 7, -7 }, 2));
        b.Output(b.Op("MatMul", "x", "w"), TensorProto.Types.DataType.Float, 2, 8);
        var mixed = b.Build();
        var typed = new TensorProto { Name = "typed_float", DataType = (int)TensorProto.Types.DataType.Float };
        typed.Dims.Add(3);
        typed.FloatData.Add([1f, 2f, 3f]);
        mixed.Graph.Initializer.Add(typed);
        var typedLong = new TensorProto { Name = "typed_long", DataType = (int)TensorProto.Types.DataType.Int64 };
        typedLong.Int64Data.Add(42);
        mixed.Graph.Initializer.Add(typedLong);
        string mixedPath = Path.Combine(_folder, "model.onnx");
        mixed.SaveWithExternalData(mixedPath, "weights.bin", minBytes: 24);

        var spec = new LinearAttentionBlockSpec { Hidden = 16, QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8 };
        var block = SampleModels.LinearAttentionBlock(spec);
        string blockPath = Path.Combine(_root, "block.onnx");
        block.SaveWithExternalData(blockPath, "block.bin", minBytes: 256);
        File.Move(Path.Combine(_root, "block.bin"), Path.Combine(_folder, "block.bin"));
        _models = [File.ReadAllBytes(mixedPath), File.ReadAllBytes(blockPath), block.ToBytes()];
        _folderFiles = [mixedPath, Path.Combine(_folder, "weights.bin"), Path.Combine(_folder, "block.bin")];
    }

    [OneTimeTearDown]
    public void RemoveModels() => Directory.Delete(_root, recursive: true);

    private string[] Locations() =>
    [
        "weights.bin", "block.bin", "./weights.bin", "sub/../block.bin", "model.onnx", "../secret.bin", "../../secret.bin",
        "sub/../../secret.bin", _secret, "out-link.bin", "out-dir/secret.bin", "absent.bin", ".", "sub", "sub/", "", "..", "/",
        "weights.bin\0", "weights.bin/", "WEIGHTS.BIN", "~/secret.bin", "..\\secret.bin",
    ];

    private static readonly string[] Numbers =
    [
        "0", "4", "24", "64", "256", "257", "1024", "abc", "-1", "", " 0", "+0", "0x10", "1e3",
        "1099511627776", "9223372036854775807", "99999999999999999999",
    ];

    private static readonly long[][] DimsChoices =
    [
        [], [0], [-1], [3], [2, 3], [8, 8], [1L << 40, 1L << 40], [1L << 62, 4], [1L << 28], [long.MaxValue], [2, -2],
    ];

    private static readonly int[] DataTypes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 999, -3];

    /// <summary>One edit of a tensor's fields; a third of them set an external data entry.</summary>
    private void Edit(TensorProto t, Random random)
    {
        T Pick<T>(IReadOnlyList<T> values) => values[random.Next(values.Count)];
        switch (random.Next(10))
        {
            case < 3:
                string key = Pick(new[] { "location", "offset", "length" });
                string value = key == "location" ? Pick(Locations()) : Pick(Numbers);
                var entry = t.ExternalData.FirstOrDefault(e => e.Key == key);
                if (entry is null) t.ExternalData.Add(new StringStringEntryProto { Key = key, Value = value });
                else entry.Value = value;
                break;
            case 3:
                var dims = random.Next(3) == 0 && t.Dims.Count > 0 ? t.Dims.Select((d, i) => i == 0 ? d + random.Next(-1, 2) : d).ToArray() : Pick(DimsChoices);
                t.Dims.Clear();
                t.Dims.AddRange(dims);
                break;
            case 4:
                t.DataType = Pick(DataTypes);
                break;
            case 5:
                t.DataLocation = t.DataLocation == TensorProto.Types.DataLocation.External
                    ? TensorProto.Types.DataLocation.Default : TensorProto.Types.DataLocation.External;
                break;
            case 6:
                if (t.ExternalData.Count > 0) t.ExternalData.RemoveAt(random.Next(t.ExternalData.Count));
                break;
            case 7:
                t.ExternalData.Add(new StringStringEntryProto { Key = Pick(new[] { "location", "offset", "length", "checksum" }), Value = Pick(Numbers.Concat(Locations()).ToArray()) });
                break;
            case 8:
                var raw = t.RawData.ToByteArray();
                t.RawData = ByteString.CopyFrom(random.Next(3) switch { 0 => [], 1 => raw[..random.Next(raw.Length + 1)], _ => [.. raw, 1, 2, 3, 4] });
                break;
            default:
                if (random.Next(2) == 0) t.FloatData.Add(1.5f);
                else t.Int64Data.Add(-5);
                break;
        }
    }

    private byte[] Mutation(Random random)
    {
        var valid = _models[random.Next(_models.Length)];
        if (random.Next(2) == 0) return Fuzz.Mutate(valid, random);
        var proto = ModelProto.Parser.ParseFrom(valid);
        var initializers = proto.Graph.Initializer;
        for (int edits = random.Next(1, 4); edits > 0; edits--) Edit(initializers[random.Next(initializers.Count)], random);
        var bytes = proto.ToByteArray();
        return random.Next(4) == 0 ? Fuzz.Mutate(bytes, random) : bytes;
    }

    /// <summary>Null when the tensor read holds what its fields (and the file of the model's folder they name) say it holds.</summary>
    private string? Expected(TensorProto t, TensorData read)
    {
        if ((int)read.ElementType != t.DataType || !read.Shape.SequenceEqual(t.Dims)) return $"tensor '{t.Name}' read as {read}";
        byte[] expected;
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
        {
            string Entry(string key) => t.ExternalData.LastOrDefault(e => e.Key == key)?.Value ?? "";
            string file = Path.GetFullPath(Path.Combine(_folder, Entry("location")));
            if (!_folderFiles.Contains(file)) return $"tensor '{t.Name}' read from '{Entry("location")}', which is not a file of the model's folder";
            long offset = Entry("offset") is { Length: > 0 } o ? long.Parse(o) : 0;
            if (Entry("length") is { Length: > 0 } l && long.Parse(l) != read.Bytes.Length) return $"tensor '{t.Name}' read {read.Bytes.Length} bytes, its length says {l}";
            expected = File.ReadAllBytes(file).AsSpan((int)offset, read.Bytes.Length).ToArray();
        }
        else if (t.HasRawData)
        {
            expected = t.RawData.ToByteArray();
        }
        else
        {
            expected = (TensorProto.Types.DataType)t.DataType switch
            {
                TensorProto.Types.DataType.Float => MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).ToArray(),
                TensorProto.Types.DataType.Double => MemoryMarshal.AsBytes(t.DoubleData.ToArray().AsSpan()).ToArray(),
                TensorProto.Types.DataType.Int64 => MemoryMarshal.AsBytes(t.Int64Data.ToArray().AsSpan()).ToArray(),
                _ => MemoryMarshal.AsBytes(t.Int32Data.ToArray().AsSpan()).ToArray(),
            };
        }
        return read.Bytes.SequenceEqual(expected) ? null : $"tensor '{t.Name}' read other bytes than its data";
    }

    /// <summary>What is wrong with loading the model and reading its initializers (from bytes, or every 16th case from its file), or null.</summary>
    private string? Check(byte[] bytes, string? path)
    {
        OnnxModel model;
        try
        {
            model = path is null ? OnnxModel.Load(bytes, _folder) : OnnxModel.Load(path);
        }
        catch (Exception e)
        {
            return Fuzz.Judge(e, path ?? "", typeof(InvalidDataException));
        }
        _ = model.Inputs;
        _ = model.Outputs;
        _ = model.HasExternalData;
        foreach (var tensor in OnnxModel.AllGraphs(model.Graph).SelectMany(g => g.Initializer))
        {
            TensorData read;
            try
            {
                read = model.ReadTensor(tensor);
            }
            catch (Exception e)
            {
                if (Fuzz.Judge(e, $"{model.DisplayName}: tensor '{tensor.Name}'", typeof(InvalidDataException), typeof(NotSupportedException)) is { } problem) return problem;
                continue;
            }
            if (Expected(tensor, read) is { } wrong) return wrong;
        }
        return null;
    }

    [Test]
    public void MutatedModelsAreReadOrRefusedNamingTheModelAndTheTensor()
    {
        var random = new Random(20260612);
        Fuzz.Run(Mutations, i =>
        {
            var bytes = Mutation(random);
            string? path = null;
            if (i % 16 == 0)
            {
                path = Path.Combine(_folder, "mutated.onnx");
                File.WriteAllBytes(path, bytes);
            }
            return Check(bytes, path) is { } problem ? $"{problem}\n  model: {Convert.ToBase64String(bytes)}" : null;
        }, TimeSpan.FromMinutes(2));
    }
}

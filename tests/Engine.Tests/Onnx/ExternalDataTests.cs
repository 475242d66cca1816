using Engine.Onnx;
using Engine.Workloads;
using Engine.Onnx.Proto;
using Google.Protobuf;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// An initializer's external data is read only from inside the model's folder, and only what the file holds:
/// every bad location, offset or length is an InvalidDataException naming the model, the tensor and the value.
/// </summary>
[TestFixture]
public sealed class ExternalDataTests
{
    private const int TensorBytes = 32 * sizeof(float);
    private string _root = "";
    private string _modelPath = "";
    private string _secretPath = "";
    private float[] _weights = [];

    /// <summary>root/model/{w.onnx, w.bin}, and root/secret/secret.bin beside the model's folder, as large as the tensor.</summary>
    [SetUp]
    public void WriteModel()
    {
        _root = Directory.CreateTempSubdirectory("engine-external-").FullName;
        var folder = Directory.CreateDirectory(Path.Combine(_root, "model")).FullName;
        Directory.CreateDirectory(Path.Combine(_root, "secret"));
        _secretPath = Path.Combine(_root, "secret", "secret.bin");
        File.WriteAllBytes(_secretPath, Enumerable.Repeat((byte)0x5A, TensorBytes).ToArray());
        _weights = Enumerable.Range(0, 32).Select(i => i * 0.25f).ToArray();
        var b = new ModelBuilder();
        b.Input("x", TensorProto.Types.DataType.Float, 4, 32);
        string w = b.Initializer("w", _weights, 32);
        b.Output(b.Op("Add", "x", w), TensorProto.Types.DataType.Float, 4, 32);
        _modelPath = Path.Combine(folder, "w.onnx");
        b.Build().SaveWithExternalData(_modelPath, "w.bin", minBytes: 1);
    }

    [TearDown]
    public void RemoveFolder() => Directory.Delete(_root, recursive: true);

    /// <summary>The model loaded from its path with the initializer's external data entries replaced (null leaves a key out).</summary>
    private (OnnxModel Model, TensorProto Tensor) Edited(string? location, string? offset = "0", string? length = null, params long[] dims)
    {
        var model = OnnxModel.Load(_modelPath);
        var tensor = model.Graph.Initializer.Single();
        tensor.ExternalData.Clear();
        if (location is not null) tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        if (offset is not null) tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset });
        if (length is not null) tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length });
        if (dims.Length > 0)
        {
            tensor.Dims.Clear();
            tensor.Dims.AddRange(dims);
        }
        return (model, tensor);
    }

    /// <summary>
    /// Reading the tensor and opening a session on the model are refused alike, before ONNX Runtime sees the model: whatever
    /// its native library would do with the location, the session reads nothing outside the folder.
    /// </summary>
    private InvalidDataException Refused(string? location, string? offset = "0", string? length = null, params long[] dims)
    {
        var (model, tensor) = Edited(location, offset, length, dims);
        var e = Assert.Throws<InvalidDataException>(() => model.ReadTensor(tensor))!;
        Assert.That(e.Message, Does.Contain(_modelPath).And.Contain("tensor 'w'"));
        var opening = Assert.Throws<InvalidDataException>(() => ModelSession.Open(model, new ModelSessionOptions { Backend = HandoverBackend.None }).Dispose())!;
        Assert.That(opening.Message, Is.EqualTo(e.Message), "opening a session");
        return e;
    }

    [Test]
    public void ReadsTheTensorFromItsFile()
    {
        var (model, tensor) = Edited("w.bin", "0", TensorBytes.ToString());
        Assert.That(model.ReadTensor(tensor).As<float>(), Is.EqualTo(_weights));
        (model, tensor) = Edited("./sub/../w.bin", offset: null);
        Assert.That(model.ReadTensor(tensor).As<float>(), Is.EqualTo(_weights), "no offset and no length: the whole file");
    }

    [Test]
    public void AbsoluteLocationIsRefused() =>
        Assert.That(Refused(_secretPath, length: TensorBytes.ToString()).Message, Does.Contain($"'{_secretPath}'").And.Contain("absolute"));

    [TestCase("../secret/secret.bin")]
    [TestCase("../../secret/secret.bin")]
    [TestCase("sub/../../secret/secret.bin")]
    public void LocationOutsideTheModelsFolderIsRefused(string location) =>
        Assert.That(Refused(location).Message, Does.Contain($"'{location}'").And.Contain("outside the model's folder"));

    [TestCase("secret-link.bin", "secret-link.bin")]
    [TestCase("secret-dir/secret.bin", "secret-dir")]
    public void SymbolicLinkOutOfTheFolderIsRefused(string location, string link)
    {
        var folder = Path.GetDirectoryName(_modelPath)!;
        File.CreateSymbolicLink(Path.Combine(folder, "secret-link.bin"), _secretPath);
        Directory.CreateSymbolicLink(Path.Combine(folder, "secret-dir"), Path.Combine(_root, "secret"));
        var e = Refused(location);
        Assert.That(e.Message, Does.Contain($"'{location}'").And.Contain($"symbolic link '{link}'").And.Contain("outside the model's folder"));
    }

    [Test]
    public void SymbolicLinkInsideTheFolderIsFollowed()
    {
        var folder = Path.GetDirectoryName(_modelPath)!;
        var data = Directory.CreateDirectory(Path.Combine(folder, "data")).FullName;
        File.Move(Path.Combine(folder, "w.bin"), Path.Combine(data, "w.bin"));
        File.CreateSymbolicLink(Path.Combine(folder, "w-link.bin"), Path.Combine("data", "w.bin"));
        Directory.CreateSymbolicLink(Path.Combine(folder, "data-link"), data);
        foreach (var location in new[] { "w-link.bin", "data-link/w.bin" })
        {
            var (model, tensor) = Edited(location);
            Assert.That(model.ReadTensor(tensor).As<float>(), Is.EqualTo(_weights), location);
            using var session = ModelSession.Open(model, new ModelSessionOptions { Backend = HandoverBackend.None });
            var y = session.Run(new Dictionary<string, TensorData> { ["x"] = TensorData.Create(new float[4 * 32], 4, 32) })[session.OutputNames[0]];
            Assert.That(y.As<float>()[..32], Is.EqualTo(_weights), $"{location}: a session reads the same weights");
        }
    }

    [TestCase("abc", null, "offset 'abc'")]
    [TestCase("-1", null, "offset '-1'")]
    [TestCase("0", "-5", "length '-5'")]
    [TestCase("0", "1099511627776", "length 1099511627776")]
    [TestCase("0", "99999999999999999999", "length '99999999999999999999'")]
    [TestCase("0", "64", "needs 128 bytes")]
    [TestCase("200", null, "offset 200 is beyond the end")]
    [TestCase("64", "128", "file holds 128 bytes")]
    [TestCase("9223372036854775807", "128", "file holds 128 bytes")]
    [TestCase("64", null, "needs 128 bytes")]
    public void BadOffsetOrLengthIsInvalidData(string offset, string? length, string why) =>
        Assert.That(Refused("w.bin", offset, length).Message, Does.Contain(why));

    [TestCase(null, "without a location")]
    [TestCase("", "without a location")]
    [TestCase("absent.bin", "not found")]
    [TestCase(".", "not found")]
    [TestCase("w.bin/", "not found")]
    [TestCase("w\0.bin", "location")]
    public void LocationNamingNoFileIsInvalidData(string? location, string why) =>
        Assert.That(Refused(location).Message, Does.Contain(why));

    [Test]
    public void TensorLargerThanItsFileIsRefusedBeforeAnyAllocation()
    {
        var (model, tensor) = Edited("w.bin", "0", (1L << 30).ToString(), 1L << 28);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<InvalidDataException>(() => model.ReadTensor(tensor));
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.LessThan(1 << 20), "bytes allocated to refuse it");
        Assert.That(e!.Message, Does.Contain("file holds 128 bytes"));
    }

    [TestCase(new long[] { -1, 32 }, "dimension -1")]
    [TestCase(new long[] { 1L << 40, 1L << 40 }, "too large")]
    public void BadDimsAreInvalidData(long[] dims, string why) =>
        Assert.That(Refused("w.bin", dims: dims).Message, Does.Contain(why));

    [Test]
    public void InlineDataOfTheWrongSizeIsInvalidData()
    {
        var model = OnnxModel.Load(_modelPath);
        var raw = new TensorProto { Name = "r", DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(new byte[12]) };
        raw.Dims.Add(4);
        var e = Assert.Throws<InvalidDataException>(() => model.ReadTensor(raw));
        Assert.That(e!.Message, Does.Contain("tensor 'r'").And.Contain("needs 16 bytes").And.Contain("12"));

        var typed = new TensorProto { Name = "t", DataType = (int)TensorProto.Types.DataType.Int64 };
        typed.Dims.Add(3);
        typed.Int64Data.Add([1, 2]);
        e = Assert.Throws<InvalidDataException>(() => model.ReadTensor(typed));
        Assert.That(e!.Message, Does.Contain("tensor 't'").And.Contain("3 values").And.Contain("2"));

        var unknown = new TensorProto { Name = "u", DataType = 999, RawData = ByteString.CopyFrom(new byte[4]) };
        var n = Assert.Throws<NotSupportedException>(() => model.ReadTensor(unknown));
        Assert.That(n!.Message, Does.Contain("tensor 'u'"));
    }
}

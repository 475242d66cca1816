using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Workloads;
using Google.Protobuf;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>The ONNX protobuf classes against the wire format of the specification, round trips and external data.</summary>
[TestFixture]
public sealed class ModelFileTests
{
    // Expected bytes are written out by hand from the protobuf wire format (tag = field << 3 | wire type)
    // and the field numbers of onnx.proto.

    [Test]
    public void ModelFieldsHaveTheSpecificationsNumbers()
    {
        var model = new ModelProto { IrVersion = 10, ProducerName = "p", Graph = new GraphProto { Name = "g" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 26 });
        byte[] expected =
        [
            0x08, 10,                      // ir_version = 1, varint
            0x12, 1, (byte)'p',            // producer_name = 2
            0x3A, 3, 0x12, 1, (byte)'g',   // graph = 7 { name = 2 }
            0x42, 4, 0x0A, 0, 0x10, 26,    // opset_import = 8 { domain = 1, version = 2 }
        ];
        Assert.That(model.ToByteArray(), Is.EqualTo(expected));
    }

    [Test]
    public void NodeAndAttributeFieldsHaveTheSpecificationsNumbers()
    {
        var node = new NodeProto { Name = "n", OpType = "A", Domain = "d" };
        node.Input.Add("x");
        node.Output.Add("y");
        node.Attribute.Add(new AttributeProto { Name = "k", Type = AttributeProto.Types.AttributeType.Int, I = 3 });
        node.Attribute.Add(new AttributeProto { Name = "s", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8("v") });
        node.Attribute.Add(new AttributeProto { Name = "f", Type = AttributeProto.Types.AttributeType.Float, F = 1f });
        byte[] expected =
        [
            0x0A, 1, (byte)'x',                // input = 1
            0x12, 1, (byte)'y',                // output = 2
            0x1A, 1, (byte)'n',                // name = 3
            0x22, 1, (byte)'A',                // op_type = 4
            0x2A, 8, 0x0A, 1, (byte)'k', 0x18, 3, 0xA0, 0x01, 2,                    // attribute = 5 { name = 1, i = 3, type = 20: INT (2) }
            0x2A, 9, 0x0A, 1, (byte)'s', 0x22, 1, (byte)'v', 0xA0, 0x01, 3,          // { name, s = 4, type: STRING (3) }
            0x2A, 11, 0x0A, 1, (byte)'f', 0x15, 0x00, 0x00, 0x80, 0x3F, 0xA0, 0x01, 1, // { name, f = 2 (fixed32 1.0f), type: FLOAT (1) }
            0x3A, 1, (byte)'d',                // domain = 7
        ];
        Assert.That(node.ToByteArray(), Is.EqualTo(expected));
    }

    [Test]
    public void TensorAndValueInfoFieldsHaveTheSpecificationsNumbers()
    {
        var tensor = new TensorProto { Name = "w", DataType = 1, RawData = ByteString.CopyFrom(1, 2), DataLocation = TensorProto.Types.DataLocation.External };
        tensor.Dims.Add(2);
        tensor.Dims.Add(3);
        tensor.FloatData.Add(1f);
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "a", Value = "b" });
        byte[] expectedTensor =
        [
            0x08, 2, 0x08, 3,                          // dims = 1, unpacked
            0x10, 1,                                   // data_type = 2
            0x22, 4, 0x00, 0x00, 0x80, 0x3F,           // float_data = 4, packed
            0x42, 1, (byte)'w',                        // name = 8
            0x4A, 2, 1, 2,                             // raw_data = 9
            0x6A, 6, 0x0A, 1, (byte)'a', 0x12, 1, (byte)'b', // external_data = 13 { key = 1, value = 2 }
            0x70, 1,                                   // data_location = 14: EXTERNAL
        ];
        Assert.That(tensor.ToByteArray(), Is.EqualTo(expectedTensor));

        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "B" });
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 4 });
        var info = new ValueInfoProto { Name = "x", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1, Shape = shape } } };
        byte[] expectedInfo =
        [
            0x0A, 1, (byte)'x',                        // name = 1
            0x12, 15,                                  // type = 2
            0x0A, 13,                                  //   tensor_type = 1
            0x08, 1,                                   //     elem_type = 1
            0x12, 9,                                   //     shape = 2
            0x0A, 3, 0x12, 1, (byte)'B',               //       dim = 1 { dim_param = 2 }
            0x0A, 2, 0x08, 4,                          //       dim = 1 { dim_value = 1 }
        ];
        Assert.That(info.ToByteArray(), Is.EqualTo(expectedInfo));
    }

    [Test]
    public void LoadAndSaveKeepEveryByteIncludingFieldsThisSchemaLeavesOut()
    {
        var original = SampleModels.LinearAttentionBlock(new LinearAttentionBlockSpec()).ToBytes();
        // ModelProto field 26 (multi-device configuration) is not in this schema: it must survive as an unknown field.
        byte[] unknown = [0xD2, 0x01, 2, 0x0A, 0];
        var withUnknown = original.Concat(unknown).ToArray();
        var loaded = OnnxModel.Load(withUnknown);
        Assert.That(loaded.ToBytes(), Is.EqualTo(withUnknown));
        Assert.That(loaded.Inputs.Select(i => i.ToString()), Is.EqualTo(new[] { "x: Float [B, T, 256]", "past_state: Float [B, 4, 32, 32]" }));
        Assert.That(loaded.Outputs.Select(o => o.Name), Is.EqualTo(new[] { "present_state", "y" }));
    }

    [Test]
    public void NotAModelIsRefusedClearly()
    {
        var e = Assert.Throws<InvalidDataException>(() => OnnxModel.Load([0xFF, 0xFF, 0xFF]));
        Assert.That(e!.Message, Does.StartWith("not an ONNX model"));
    }

    /// <summary>A device named as the model is refused at its first bytes: /dev/zero, which has no end, was read up to 2 GiB first.</summary>
    [Test]
    public void ADeviceNamedAsTheModelIsRefusedAtOnce()
    {
        Assume.That(File.Exists("/dev/zero"), "a system with /dev/zero");
        var e = Assert.Throws<InvalidDataException>(() => OnnxModel.Load("/dev/zero"));
        Assert.That(e!.Message, Does.StartWith("/dev/zero: not an ONNX model"));
    }

    [Test]
    public void ModelsWithExternalDataRunFromTheirPath()
    {
        var spec = new LinearAttentionBlockSpec { Hidden = 16, QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8 };
        var (inputs, x, pasts) = ModelGraphTests.BlockInputs(spec);
        var model = SampleModels.LinearAttentionBlock(spec);
        var expected = BlockReference.Run(spec, model, x, 2, 30, pasts);

        var folder = Directory.CreateTempSubdirectory("engine-onnx-").FullName;
        try
        {
            var path = Path.Combine(folder, "block.onnx");
            model.SaveWithExternalData(path, "block.weights", minBytes: 256);
            Assert.That(new FileInfo(Path.Combine(folder, "block.weights")).Length, Is.GreaterThan(0));

            var loaded = OnnxModel.Load(path);
            Assert.That(loaded.HasExternalData);
            var wOut = loaded.ReadTensor(loaded.Graph.Initializer.Single(t => t.Name == "w_out"));
            Assert.That(wOut.As<float>(), Is.EqualTo(model.ReadTensor(model.Graph.Initializer.Single(t => t.Name == "w_out")).As<float>()));

            foreach (var backend in new[] { HandoverBackend.Cpu, HandoverBackend.None })
            {
                using var session = ModelSession.Open(path, OnnxTestHost.Options(backend));
                OnnxAssert.Close(session.Run(inputs)["y"], expected.Y, $"y from a model with external data on {backend}");
            }
            var fromBytes = OnnxModel.Load(File.ReadAllBytes(path));
            var e = Assert.Throws<InvalidOperationException>(() => OnnxTestHost.Open(fromBytes, HandoverBackend.Cpu));
            Assert.That(e!.Message, Does.Contain("external files"));
            using var withFolder = OnnxTestHost.Open(OnnxModel.Load(File.ReadAllBytes(path), folder), HandoverBackend.Cpu);
            OnnxAssert.Close(withFolder.Run(inputs)["y"], expected.Y, "y from bytes and the data folder");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}

using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// Split → per-head LpNormalization of q and k → q times a constant → LinearAttention, folded into one engine node that reads the
/// packed rows where they lie: the fold happens only where nothing else reads the tensors in between, and every variant runs
/// as ONNX Runtime alone runs it — zero q and k rows included (LpNormalization maps them to zeros).
/// </summary>
[TestFixture]
public sealed class QkPreparationFoldTests
{
    private const int Batch = 2, Length = 37, QkHeads = 2, ValueHeads = 4, Dk = 8, Dv = 4;
    private const int KeyWidth = QkHeads * Dk, ValueWidth = ValueHeads * Dv, Width = 2 * KeyWidth + ValueWidth;

    /// <summary>
    /// How a test model departs from the builder's pattern (QueryScaleFedOver: q's factor is an initializer that is also a graph
    /// input, fed 2.5; QueryTimesZero: q's factor is 0, a scale the engine's attribute reads as 1/sqrt(dk); SplitIntoEqualParts:
    /// the Split's num_outputs of opset 18, q, k and v of one width, instead of its sizes).
    /// </summary>
    public enum Variant { AsTheBuilderWrites, ConstantFirstInMul, NoQueryScaling, SplitIntoEqualParts, SplitOutputAlsoAGraphOutput, L1Normalization, QueryScaleFedOver, QueryTimesZero }

    [TestCase(Variant.AsTheBuilderWrites, true)]
    [TestCase(Variant.ConstantFirstInMul, true)]
    [TestCase(Variant.NoQueryScaling, true)]
    [TestCase(Variant.SplitIntoEqualParts, true)]
    [TestCase(Variant.SplitOutputAlsoAGraphOutput, false)]
    [TestCase(Variant.L1Normalization, false)]
    [TestCase(Variant.QueryScaleFedOver, false)]
    [TestCase(Variant.QueryTimesZero, false)]
    public void FoldsWhereThePatternAllowsAndAgreesWithOrtAlone(Variant variant, bool folded)
    {
        var model = Model(variant);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var attention = engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention");
        Assert.That(attention.Detail.Contains("reads the packed rows"), Is.EqualTo(folded), attention.Detail);
        Assert.That(engine.Handover.Model.NodeOpTypes.Contains("LpNormalization"), Is.EqualTo(!folded), "LpNormalization nodes left");
        if (variant == Variant.QueryTimesZero) Assert.That(attention.Detail, Does.Contain("q/k preparation kept: q's factor 0 times the scale gives 0"));

        var random = new Random(3);
        var rows = SampleModels.Weights(random, 1, Batch * Length * Width);
        // Zero q and k rows in some tokens of some heads: LpNormalization gives zeros, not NaN.
        for (int token = 0; token < Batch * Length; token += 5)
            Array.Clear(rows, token * Width + (token % 2) * Dk, Dk);
        for (int token = 2; token < Batch * Length; token += 7)
            Array.Clear(rows, token * Width + KeyWidth + Dk, Dk);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(rows, Batch, Length, Width),
            ["past_state"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * ValueHeads * Dk * Dv), Batch, ValueHeads, Dk, Dv),
            ["decay"] = TensorData.Create(Enumerable.Range(0, Batch * Length * ValueHeads).Select(i => -0.05f * (1 + i % 7)).ToArray(), Batch, Length, ValueHeads),
            ["beta"] = TensorData.Create(Enumerable.Range(0, Batch * Length * ValueHeads).Select(i => 0.2f + 0.1f * (i % 6)).ToArray(), Batch, Length, ValueHeads),
        };
        if (variant == Variant.QueryScaleFedOver) inputs["q_scale"] = TensorData.Create(new[] { 2.5f }, 1);
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, $"{variant}");
    }

    /// <summary>
    /// q's factor kept in an external file (a valid model, as an export with no size threshold writes it): the hand-over does
    /// not read it as a constant, and the model runs as ONNX Runtime alone runs it.
    /// </summary>
    [Test]
    public void ConstantsInAnExternalFileRunAsOrtAloneRunsThem()
    {
        var folder = Directory.CreateTempSubdirectory("engine-qk-external-").FullName;
        try
        {
            string path = Path.Combine(folder, "model.onnx");
            var built = Model(Variant.AsTheBuilderWrites);
            var scale = built.Graph.Initializer.Single(t => t.Name == "q_scale");
            File.WriteAllBytes(Path.Combine(folder, "q_scale.bin"), scale.RawData.ToByteArray());
            scale.ClearRawData();
            scale.DataLocation = TensorProto.Types.DataLocation.External;
            scale.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "q_scale.bin" });
            built.Save(path);
            var model = OnnxModel.Load(path);
            using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
            using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
            OnnxAssert.AgreesWithOrtAlone(engine, ort, PlainInputs(seed: 5), "constants in an external file");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// q's factor of one element but rank 4 (the product, the query, is rank 4, which ORT's LinearAttention refuses when it runs),
    /// or float16 in a float32 model (a Mul ORT refuses at load): the hand-over leaves the Mul in place, and the model is refused
    /// with it as ORT alone refuses it, never run with the factor folded into the scale.
    /// </summary>
    [TestCase(false, "query must be 3D")]
    [TestCase(true, "bound to different types")]
    public void AQueryFactorTheMulCannotTakeIsNotFolded(bool half, string ortSays)
    {
        var model = Model(Variant.AsTheBuilderWrites);
        var scale = model.Graph.Initializer.Single(t => t.Name == "q_scale");
        if (half)
        {
            scale.DataType = (int)TensorProto.Types.DataType.Float16;
            scale.RawData = Google.Protobuf.ByteString.CopyFrom(BitConverter.GetBytes((Half)0.25f));
        }
        else
        {
            scale.Dims.Clear();
            scale.Dims.Add([1, 1, 1, 1]);
        }
        Assert.That(HandoverRewriter.Rewrite(model, OnnxTestHost.Host.Capabilities).Model.NodeOpTypes, Does.Contain("Mul"), "q's factor is left in place");
        var inputs = PlainInputs(seed: 6);
        foreach (var backend in new[] { HandoverBackend.None, HandoverBackend.Cpu })
        {
            var e = Assert.Throws<ModelRunException>(() =>
            {
                using var session = OnnxTestHost.Open(model, backend);
                session.Run(inputs);
            }, $"{backend}");
            Assert.That(e!.Message, Does.Contain(backend == HandoverBackend.Cpu && !half ? "input query ('" : ortSays), $"{backend}");
        }
    }

    /// <summary>
    /// q's factor or a Reshape shape whose data do not hold its dims: no constant to fold, so ONNX Runtime, which checks every
    /// initializer it keeps, refuses the model naming the tensor; never an index past the data.
    /// </summary>
    [TestCase("q_scale", 2, null)]
    [TestCase("q_scale", 0, null)]
    [TestCase("q_scale", 8, null)]
    [TestCase("q_heads", 40, null)]
    [TestCase("q_heads", -1, new long[] { 5 })]
    [TestCase("k_packed", -1, new long[] { 2 })]
    public void ConstantWhoseDataDoNotHoldItsDimsIsRefusedNamingIt(string name, int rawBytes, long[]? dims)
    {
        var model = Model(Variant.AsTheBuilderWrites);
        var tensor = model.Graph.Initializer.Single(t => t.Name == name);
        if (rawBytes >= 0) tensor.RawData = Google.Protobuf.ByteString.CopyFrom(new byte[rawBytes]);
        if (dims is not null)
        {
            tensor.Dims.Clear();
            tensor.Dims.AddRange(dims);
        }
        var plan = HandoverRewriter.Rewrite(model, OnnxTestHost.Host.Capabilities);
        Assert.That(plan.Model.Graph.Initializer.Any(t => t.Name == name), Is.True, $"'{name}' is still read by a node ORT runs");
        var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, HandoverBackend.Cpu).Dispose());
        Assert.That(e!.Message, Does.Contain(name));
    }

    private static OnnxModel Model(Variant variant)
    {
        var b = new ModelBuilder().Import("com.microsoft", 1);
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
        string x = b.Input("x", F, Batch, Length, Width);
        string past = b.Input("past_state", F, Batch, ValueHeads, Dk, Dv);
        string decay = b.Input("decay", F, Batch, Length, ValueHeads);
        string beta = b.Input("beta", F, Batch, Length, ValueHeads);
        var split = variant == Variant.SplitIntoEqualParts
            ? b.Node("Split", [x], outputs: 3, attributes: [("axis", -1L), ("num_outputs", 3L)])
            : b.Node("Split", [x, b.Int64s("sizes", KeyWidth, KeyWidth, ValueWidth)], outputs: 3, attributes: [("axis", -1L)]);
        string PerHead(string part, string input)
        {
            string heads = b.Op("Reshape", input, b.Int64s(part + "_heads", 0, 0, QkHeads, Dk));
            string unit = b.Node("LpNormalization", [heads], attributes: [("axis", -1L), ("p", variant == Variant.L1Normalization ? 1L : 2L)])[0];
            return b.Op("Reshape", unit, b.Int64s(part + "_packed", 0, 0, KeyWidth));
        }
        string q = PerHead("q", split[0]);
        string scale = b.Initializer("q_scale", [variant == Variant.QueryTimesZero ? 0f : 1f / MathF.Sqrt(Dk)], 1);
        q = variant switch
        {
            Variant.NoQueryScaling => q,
            Variant.ConstantFirstInMul => b.Op("Mul", scale, q),
            _ => b.Op("Mul", q, scale),
        };
        string k = PerHead("k", split[1]);
        b.Node("LinearAttention", [q, k, split[2], past, decay, beta], domain: "com.microsoft", name: "attention", outputNames: ["output", "present_state"],
            attributes: [("q_num_heads", (long)QkHeads), ("kv_num_heads", (long)ValueHeads), ("update_rule", "gated_delta"), ("scale", 1f)]);
        b.Output("output", F, Batch, Length, ValueWidth);
        b.Output("present_state", F, Batch, ValueHeads, Dk, Dv);
        if (variant == Variant.SplitOutputAlsoAGraphOutput) b.Output(split[2], F, Batch, Length, ValueWidth);
        var model = b.Build();
        // A default the caller may feed over (ONNX IR >= 4): ORT takes the fed value.
        if (variant == Variant.QueryScaleFedOver)
            model.Proto.Graph.Input.Add(new ValueInfoProto
            {
                Name = scale,
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)F, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 1 } } } } },
            });
        return model;
    }

    /// <summary>Random rows and past state, a constant decay and beta.</summary>
    private static Dictionary<string, TensorData> PlainInputs(int seed)
    {
        var random = new Random(seed);
        return new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * Length * Width), Batch, Length, Width),
            ["past_state"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * ValueHeads * Dk * Dv), Batch, ValueHeads, Dk, Dv),
            ["decay"] = TensorData.Create(Enumerable.Repeat(-0.1f, Batch * Length * ValueHeads).ToArray(), Batch, Length, ValueHeads),
            ["beta"] = TensorData.Create(Enumerable.Repeat(0.5f, Batch * Length * ValueHeads).ToArray(), Batch, Length, ValueHeads),
        };
    }
}

using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// The unfused gated RMS norm (Reshape → SimplifiedLayerNormalization → Reshape → Cast → times SiLU(z) → Cast back) folded into one
/// engine GatedRMSNorm node only where nothing else reads the tensors in between; every variant runs as ONNX Runtime alone runs it.
/// </summary>
[TestFixture]
public sealed class GatedNormFoldTests
{
    private const int Batch = 2, Length = 9, Heads = 3, Dim = 16, Width = Heads * Dim;

    public enum Variant { AsTheBuilderWrites, NoCastOfZ, NormOutputAlsoAGraphOutput, TanhGate }

    [TestCase(Variant.AsTheBuilderWrites, true)]
    [TestCase(Variant.NoCastOfZ, true)]
    [TestCase(Variant.NormOutputAlsoAGraphOutput, false)]
    [TestCase(Variant.TanhGate, false)]
    public void FoldsWhereThePatternAllowsAndAgreesWithOrtAlone(Variant variant, bool folded)
    {
        var model = Model(variant);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Any(n => n.OpType == "SimplifiedLayerNormalization"), Is.EqualTo(folded), "folded into GatedRMSNorm");
        Assert.That(engine.Handover.Model.NodeOpTypes.Contains("SimplifiedLayerNormalization"), Is.EqualTo(!folded));

        var random = new Random(9);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * Length * Width), Batch, Length, Width),
            ["z"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * Length * Width), Batch, Length, Width),
        };
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, $"{variant}");
    }

    private static OnnxModel Model(Variant variant)
    {
        var b = new ModelBuilder();
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
        string x = b.Input("x", F, Batch, Length, Width);
        string z = b.Input("z", F, Batch, Length, Width);
        const int dim = Dim;
        string weight = b.Initializer("norm_weight", Enumerable.Range(0, dim).Select(i => 0.9f + 0.01f * i).ToArray(), dim);
        string heads = b.Op("Reshape", x, b.Int64s("heads_shape", 0, 0, Width / dim, dim));
        var norm = b.Node("SimplifiedLayerNormalization", [heads, weight], attributes: [("epsilon", 1e-6f), ("axis", -1L), ("stash_type", 1L)])[0];
        string packed = b.Op("Reshape", norm, b.Int64s("packed_shape", 0, 0, Width));
        string Cast(string value) => b.Node("Cast", [value], attributes: [("to", (long)TensorElementType.Float)])[0];
        string zFloat = variant == Variant.NoCastOfZ ? z : Cast(z);
        string silu = b.Op("Mul", zFloat, b.Op(variant == Variant.TanhGate ? "Tanh" : "Sigmoid", zFloat));
        string product = b.Op("Mul", Cast(packed), silu);
        b.Node("Cast", [product], outputNames: ["y"], attributes: [("to", (long)TensorElementType.Float)]);
        b.Output("y", F, Batch, Length, Width);
        if (variant == Variant.NormOutputAlsoAGraphOutput) b.Output(norm, F, Batch, Length, Heads, Dim);
        return b.Build();
    }
}

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

    /// <summary>
    /// How a test model departs from the builder's pattern. The last three are chains ORT runs by broadcasting or by its
    /// mixed types, which the fused node (x, scale and gate in one type and one shape) cannot take: a float16 x whose float
    /// gate is not cast, a gate [B, 1, H·d] broadcast over the tokens, and an x [B, T, H, d] the chain flattens.
    /// </summary>
    public enum Variant { AsTheBuilderWrites, NoCastOfZ, NormOutputAlsoAGraphOutput, TanhGate, HalfXFloatGateNotCast, GateBroadcastOverTokens, XOfRankFour }

    [TestCase(Variant.AsTheBuilderWrites, true)]
    [TestCase(Variant.NoCastOfZ, true)]
    [TestCase(Variant.NormOutputAlsoAGraphOutput, false)]
    [TestCase(Variant.TanhGate, false)]
    [TestCase(Variant.HalfXFloatGateNotCast, false)]
    [TestCase(Variant.GateBroadcastOverTokens, false)]
    [TestCase(Variant.XOfRankFour, false)]
    public void FoldsWhereThePatternAllowsAndAgreesWithOrtAlone(Variant variant, bool folded)
    {
        var model = Model(variant);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Any(n => n.OpType == "SimplifiedLayerNormalization"), Is.EqualTo(folded), "folded into GatedRMSNorm");
        Assert.That(engine.Handover.Model.NodeOpTypes.Contains("SimplifiedLayerNormalization"), Is.EqualTo(!folded));

        var random = new Random(9);
        long[] xShape = variant == Variant.XOfRankFour ? [Batch, Length, Heads, Dim] : [Batch, Length, Width];
        long[] zShape = variant == Variant.GateBroadcastOverTokens ? [Batch, 1, Width] : [Batch, Length, Width];
        var xValues = SampleModels.Weights(random, 1, Batch * Length * Width);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = variant == Variant.HalfXFloatGateNotCast ? TensorData.Create(xValues.Select(v => (Half)v).ToArray(), xShape) : TensorData.Create(xValues, xShape),
            ["z"] = TensorData.Create(SampleModels.Weights(random, 1, (int)zShape.Aggregate(1L, (a, d) => a * d)), zShape),
        };
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, $"{variant}");
    }

    private static OnnxModel Model(Variant variant)
    {
        var b = new ModelBuilder();
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
        var xType = variant == Variant.HalfXFloatGateNotCast ? TensorProto.Types.DataType.Float16 : F;
        string x = variant == Variant.XOfRankFour ? b.Input("x", F, Batch, Length, Heads, Dim) : b.Input("x", xType, Batch, Length, Width);
        string z = b.Input("z", F, Batch, variant == Variant.GateBroadcastOverTokens ? 1 : Length, Width);
        const int dim = Dim;
        var scale = Enumerable.Range(0, dim).Select(i => 0.9f + 0.01f * i).ToArray();
        string weight = b.Initializer("norm_weight", scale, (TensorElementType)xType, dim);
        string heads = b.Op("Reshape", x, b.Int64s("heads_shape", 0, 0, Width / dim, dim));
        var norm = b.Node("SimplifiedLayerNormalization", [heads, weight], attributes: [("epsilon", 1e-6f), ("axis", -1L), ("stash_type", 1L)])[0];
        string packed = b.Op("Reshape", norm, b.Int64s("packed_shape", 0, 0, Width));
        string Cast(string value) => b.Node("Cast", [value], attributes: [("to", (long)TensorElementType.Float)])[0];
        string zFloat = variant is Variant.NoCastOfZ or Variant.HalfXFloatGateNotCast ? z : Cast(z);
        string silu = b.Op("Mul", zFloat, b.Op(variant == Variant.TanhGate ? "Tanh" : "Sigmoid", zFloat));
        string product = b.Op("Mul", Cast(packed), silu);
        b.Node("Cast", [product], outputNames: ["y"], attributes: [("to", (long)xType)]);
        b.Output("y", xType, Batch, Length, Width);
        if (variant == Variant.NormOutputAlsoAGraphOutput) b.Output(norm, F, Batch, Length, Heads, Dim);
        return b.Build();
    }
}

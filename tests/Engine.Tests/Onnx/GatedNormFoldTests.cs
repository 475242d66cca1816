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
    /// How a test model departs from the builder's pattern. From HalfXFloatGateNotCast on they are chains ORT runs by
    /// broadcasting, by its mixed types or per head, which the fused node (x, scale and gate in one type and one shape, each
    /// group of the scale's length normalized) cannot take: a float16 x whose float gate is not cast, a gate [B, 1, H·d]
    /// broadcast over the tokens, an x [B, T, H, d] the chain flattens (declared, or a Reshape's output of no declared shape),
    /// a weight [H, d] (one per head), and a float16 z negated (no declared type) and then cast to float. NegativeEpsilon is a
    /// chain ORT runs with an epsilon the engine's kernel refuses. NoFinalCast: a float32 chain without its last Cast (the no-op an
    /// optimizer removes); HalfNoFinalCast: a float16 one that ends in float32, which the fused node (y in x's type) cannot write.
    /// QuickGelu*: the float32 chain as ONNX Runtime saves it optimized at EXTENDED, its no-op Casts removed and z · Sigmoid(z) fused
    /// into com.microsoft QuickGelu, z · sigmoid(alpha · z): SiLU with alpha 1, another function with 1.702 (also its default).
    /// </summary>
    public enum Variant
    {
        AsTheBuilderWrites, NoCastOfZ, WeightOneByD, NoFinalCast, NormOutputAlsoAGraphOutput, HalfNoFinalCast, TanhGate, HalfXFloatGateNotCast, GateBroadcastOverTokens, XOfRankFour,
        XOfRankFourUndeclared, WeightPerHead, HalfGateOfUndeclaredType, NegativeEpsilon, QuickGeluAlphaOne, QuickGeluAlpha1702, QuickGeluWithoutAlpha,
    }

    [TestCase(Variant.AsTheBuilderWrites, true)]
    [TestCase(Variant.NoCastOfZ, true)]
    [TestCase(Variant.WeightOneByD, true)]
    [TestCase(Variant.NoFinalCast, true)]
    [TestCase(Variant.QuickGeluAlphaOne, true)]
    [TestCase(Variant.QuickGeluAlpha1702, false)]
    [TestCase(Variant.QuickGeluWithoutAlpha, false)]
    [TestCase(Variant.NormOutputAlsoAGraphOutput, false)]
    [TestCase(Variant.HalfNoFinalCast, false)]
    [TestCase(Variant.TanhGate, false)]
    [TestCase(Variant.HalfXFloatGateNotCast, false)]
    [TestCase(Variant.GateBroadcastOverTokens, false)]
    [TestCase(Variant.XOfRankFour, false)]
    [TestCase(Variant.XOfRankFourUndeclared, false)]
    [TestCase(Variant.WeightPerHead, false)]
    [TestCase(Variant.HalfGateOfUndeclaredType, false)]
    [TestCase(Variant.NegativeEpsilon, false)]
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
            ["x"] = variant is Variant.HalfXFloatGateNotCast or Variant.HalfNoFinalCast ? TensorData.Create(xValues.Select(v => (Half)v).ToArray(), xShape) : TensorData.Create(xValues, xShape),
            ["z"] = TensorData.Create(SampleModels.Weights(random, 1, (int)zShape.Aggregate(1L, (a, d) => a * d)), zShape),
        };
        if (variant is Variant.HalfGateOfUndeclaredType or Variant.HalfNoFinalCast) inputs["z"] = TensorData.Create(inputs["z"].As<float>().Select(v => (Half)v).ToArray(), zShape);
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, $"{variant}");
    }

    [TestCase(Variant.WeightPerHead, "its weight 'norm_weight' is [3, 16], the fold needs [16]")]
    [TestCase(Variant.XOfRankFourUndeclared, "is of unknown shape, the fold needs [B, T, 48]")]
    [TestCase(Variant.HalfGateOfUndeclaredType, "is of unknown type, its weight float32")]
    [TestCase(Variant.NegativeEpsilon, "its epsilon is -1E-06, the engine takes a finite epsilon >= 0")]
    [TestCase(Variant.HalfNoFinalCast, "its output is float32, its weight float16")]
    public void ARefusedChainIsNotedWithItsReason(Variant variant, string reason)
    {
        var plan = HandoverRewriter.Rewrite(Model(variant));
        Assert.That(plan.Notes, Has.One.Contains("gated norm at 'SimplifiedLayerNormalization_").And.Contains("kept with ORT: ").And.Contains(reason));
    }

    /// <summary>
    /// A Sigmoid of another domain than ai.onnx is not SiLU's: the chain stays with ORT, which refuses the op it does not know
    /// with the hand-over as it does alone.
    /// </summary>
    [Test]
    public void ASigmoidOfAnotherDomainIsNotTakenForSilu()
    {
        var model = Model(Variant.AsTheBuilderWrites);
        model.Proto.Graph.Node.Single(n => n.OpType == "Sigmoid").Domain = "com.microsoft";
        model.Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        Assert.That(HandoverRewriter.Rewrite(model).Model.NodeOpTypes, Does.Contain("SimplifiedLayerNormalization"), "the chain is left to ORT");
        foreach (var backend in new[] { HandoverBackend.None, HandoverBackend.Cpu })
        {
            var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, backend).Dispose(), $"{backend}");
            Assert.That(e!.Message, Does.Contain("com.microsoft:Sigmoid(-1) is not a registered function/op"), $"{backend}");
        }
    }

    /// <summary>
    /// Reshapes with allowzero = 1 take the shapes' zeros as sizes: ORT refuses such a chain as it loads the model (its shapes
    /// do not meet), and did so alone while the hand-over folded the chain (reading the zeros as "keep") and ran it. Now the
    /// chain stays with ORT, which refuses it either way.
    /// </summary>
    [Test]
    public void ReshapesThatTakeZeroAsASizeAreNotFolded()
    {
        var model = Model(Variant.AsTheBuilderWrites);
        foreach (var reshape in model.Proto.Graph.Node.Where(n => n.OpType == "Reshape"))
            reshape.Attribute.Add(new AttributeProto { Name = "allowzero", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        Assert.That(HandoverRewriter.Rewrite(model).Model.NodeOpTypes, Does.Contain("SimplifiedLayerNormalization"), "the chain is left to ORT");
        foreach (var backend in new[] { HandoverBackend.None, HandoverBackend.Cpu })
        {
            var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, backend).Dispose(), $"{backend}");
            Assert.That(e!.Message, Does.Contain("ShapeInferenceError"), $"{backend}");
        }
    }

    internal static OnnxModel Model(Variant variant)
    {
        var b = new ModelBuilder();
        bool quickGelu = variant is Variant.QuickGeluAlphaOne or Variant.QuickGeluAlpha1702 or Variant.QuickGeluWithoutAlpha;
        if (quickGelu) b.Import("com.microsoft", 1);
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
        var xType = variant is Variant.HalfXFloatGateNotCast or Variant.HalfNoFinalCast ? TensorProto.Types.DataType.Float16 : F;
        string x = variant == Variant.XOfRankFour ? b.Input("x", F, Batch, Length, Heads, Dim) : b.Input("x", xType, Batch, Length, Width);
        string z = b.Input("z", variant is Variant.HalfGateOfUndeclaredType or Variant.HalfNoFinalCast ? TensorProto.Types.DataType.Float16 : F,
            Batch, variant == Variant.GateBroadcastOverTokens ? 1 : Length, Width);
        const int dim = Dim;
        long[] weightDims = variant switch { Variant.WeightOneByD => [1, dim], Variant.WeightPerHead => [Heads, dim], _ => [dim] };
        var scale = Enumerable.Range(0, (int)weightDims.Aggregate(1L, (a, d) => a * d)).Select(i => 0.9f + 0.01f * i).ToArray();
        string weight = b.Initializer("norm_weight", scale, (TensorElementType)xType, weightDims);
        if (variant == Variant.XOfRankFourUndeclared) x = b.Op("Reshape", x, b.Int64s("split_heads", 0, 0, Heads, Dim));
        string heads = b.Op("Reshape", x, b.Int64s("heads_shape", 0, 0, Width / dim, dim));
        var norm = b.Node("SimplifiedLayerNormalization", [heads, weight], attributes: [("epsilon", variant == Variant.NegativeEpsilon ? -1e-6f : 1e-6f), ("axis", -1L), ("stash_type", 1L)])[0];
        string packed = b.Op("Reshape", norm, b.Int64s("packed_shape", 0, 0, Width));
        string Cast(string value) => b.Node("Cast", [value], attributes: [("to", (long)TensorElementType.Float)])[0];
        string zFloat = variant switch
        {
            Variant.NoCastOfZ or Variant.HalfXFloatGateNotCast or Variant.QuickGeluAlphaOne or Variant.QuickGeluAlpha1702 or Variant.QuickGeluWithoutAlpha => z,
            Variant.HalfGateOfUndeclaredType => Cast(b.Op("Neg", z)),
            _ => Cast(z),
        };
        if (quickGelu)
        {
            string gate = variant == Variant.QuickGeluWithoutAlpha ? b.Node("QuickGelu", [zFloat], domain: "com.microsoft")[0]
                : b.Node("QuickGelu", [zFloat], domain: "com.microsoft", attributes: [("alpha", variant == Variant.QuickGeluAlphaOne ? 1f : 1.702f)])[0];
            b.Node("Mul", [packed, gate], outputNames: ["y"]);
            b.Output("y", F, Batch, Length, Width);
            return b.Build();
        }
        string silu = b.Op("Mul", zFloat, b.Op(variant == Variant.TanhGate ? "Tanh" : "Sigmoid", zFloat));
        if (variant is Variant.NoFinalCast or Variant.HalfNoFinalCast)
        {
            b.Node("Mul", [Cast(packed), silu], outputNames: ["y"]);
            b.Output("y", F, Batch, Length, Width);
        }
        else
        {
            b.Node("Cast", [b.Op("Mul", Cast(packed), silu)], outputNames: ["y"], attributes: [("to", (long)xType)]);
            b.Output("y", xType, Batch, Length, Width);
        }
        if (variant == Variant.NormOutputAlsoAGraphOutput) b.Output(norm, F, Batch, Length, Heads, Dim);
        return b.Build();
    }
}

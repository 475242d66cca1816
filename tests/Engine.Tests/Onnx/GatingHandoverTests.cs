using Engine.Kernels.Gating;
using Engine.Onnx;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// LinearAttentionGate and GatedRMSNorm (com.microsoft) on the engine against the float64 reference (fp32 1e-5, fp16 5e-3
/// relative RMS) and against ONNX Runtime 1.32's own CPU kernels on the same model.
/// </summary>
[TestFixture]
public sealed class GatingHandoverTests
{
    /// <param name="heads">the declared head count; null leaves the shapes to the tensors given.</param>
    private static OnnxModel GateModel(bool half, bool withBeta, int? heads)
    {
        var type = half ? F.Float16 : F.Float;
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        object[]? Dims(params object[] dims) => heads is null ? null : dims;
        List<string> inputs = [b.Input("a", type, Dims("B", "T", heads!)), b.Input("dt_bias", F.Float, Dims(heads!)), b.Input("decay_scale", F.Float, Dims(heads!))];
        if (withBeta) inputs.Add(b.Input("b", type, Dims("B", "T", heads!)));
        b.Node("LinearAttentionGate", inputs, domain: HandoverRewriter.MicrosoftDomain, name: "gate", outputNames: withBeta ? ["decay", "beta"] : ["decay"]);
        b.Output("decay", type, Dims("B", "T", heads!));
        if (withBeta) b.Output("beta", type, Dims("B", "T", heads!));
        return b.Build();
    }

    [TestCase(false, true, TestName = "LinearAttentionGate float32, decay and beta")]
    [TestCase(false, false, TestName = "LinearAttentionGate float32, decay only")]
    [TestCase(true, true, TestName = "LinearAttentionGate float16")]
    public void GateMatchesOrtAndReference(bool half, bool withBeta)
    {
        const int batch = 2, length = 300, heads = 32;
        var data = new TestData(AttentionCase.StableSeed(TestContext.CurrentContext.Test.Name));
        // Projections wide enough to reach both softplus branches and its far tails.
        var a = data.Normal(batch * length * heads, 6);
        var bProjection = data.Normal(batch * length * heads, 6);
        var dtBias = data.Normal(heads, 1);
        var decayScale = data.Uniform(heads, 0.01, 16).Select(v => -v).ToArray();
        TensorData Tensor(float[] v) => half ? TensorData.Create(TestData.ToHalf(v), batch, length, heads) : TensorData.Create(v, batch, length, heads);
        var inputs = new Dictionary<string, TensorData> { ["a"] = Tensor(a), ["dt_bias"] = TensorData.Create(dtBias, heads), ["decay_scale"] = TensorData.Create(decayScale, heads) };
        if (withBeta) inputs["b"] = Tensor(bProjection);
        var decay = new double[a.Length];
        var beta = new double[a.Length];
        DecayGateReference.Forward(OnnxAssert.Floats(inputs["a"]), dtBias, decayScale, withBeta ? OnnxAssert.Floats(inputs["b"]) : [], decay, beta);

        using var engine = OnnxTestHost.Open(GateModel(half, withBeta, heads), HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Single().NodeName, Is.EqualTo("gate"));
        var byEngine = engine.Run(inputs);
        double tolerance = half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
        OnnxAssert.Close(byEngine["decay"], decay, "engine decay vs reference", tolerance);
        if (withBeta) OnnxAssert.Close(byEngine["beta"], beta, "engine beta vs reference", tolerance);
        using var ort = OnnxTestHost.Open(GateModel(half, withBeta, heads), HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        OnnxAssert.Close(byEngine["decay"], byOrt["decay"], "engine vs ORT decay", tolerance);
        if (withBeta) OnnxAssert.Close(byEngine["beta"], byOrt["beta"], "engine vs ORT beta", tolerance);
    }

    [Test]
    public void GateRefusesADtBiasOfTheWrongLength()
    {
        using var engine = OnnxTestHost.Open(GateModel(false, true, null), HandoverBackend.Cpu);
        var inputs = new Dictionary<string, TensorData>
        {
            ["a"] = TensorData.Create(new float[8], 1, 2, 4), ["b"] = TensorData.Create(new float[8], 1, 2, 4),
            ["dt_bias"] = TensorData.Create(new float[3], 3), ["decay_scale"] = TensorData.Create(new float[4], 4),
        };
        var e = Assert.Throws<ModelRunException>(() => engine.Run(inputs));
        Assert.That(e!.Message, Does.Contain("LinearAttentionGate node 'gate': dt_bias: expected 4 values"));
    }

    [Test]
    public void GateRefusesAFloat16DecayItCannotHoldNamingTheNode()
    {
        // decay = −16 · softplus(60000) ≈ −960000, beyond float16's range.
        using var engine = OnnxTestHost.Open(GateModel(true, true, 4), HandoverBackend.Cpu);
        var a = TensorData.Create(Enumerable.Repeat((Half)60000, 8).ToArray(), 1, 2, 4);
        var inputs = new Dictionary<string, TensorData>
        {
            ["a"] = a, ["b"] = a, ["dt_bias"] = TensorData.Create(new float[4], 4), ["decay_scale"] = TensorData.Create(new[] { -16f, -16f, -16f, -16f }, 4),
        };
        var e = Assert.Throws<ModelRunException>(() => engine.Run(inputs));
        Assert.That(e!.Message, Does.Contain("LinearAttentionGate node 'gate': decay: value").And.Contain("outside float16's range"));
    }

    private static OnnxModel NormModel(bool half, string? activation, float? epsilon, int width, int groupSize)
    {
        var type = half ? F.Float16 : F.Float;
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        var attributes = new List<(string, object)>();
        if (activation is not null) attributes.Add(("activation", activation));
        if (epsilon is float e) attributes.Add(("epsilon", e));
        b.Node("GatedRMSNorm", [b.Input("x", type, "B", "T", width), b.Input("scale", type, groupSize), b.Input("z", type, "B", "T", width)],
            domain: HandoverRewriter.MicrosoftDomain, name: "norm", outputNames: ["y"], attributes: attributes.ToArray());
        b.Output("y", type, "B", "T", width);
        return b.Build();
    }

    [TestCase(false, null, null, 32 * 128, 128, TestName = "GatedRMSNorm float32 silu by default, 32 heads of 128")]
    [TestCase(false, "sigmoid", 1e-3f, 60, 20, TestName = "GatedRMSNorm float32 sigmoid, epsilon 1e-3, groups of 20")]
    [TestCase(false, "swish", null, 50, 50, TestName = "GatedRMSNorm float32 swish, one group of 50")]
    [TestCase(true, "silu", null, 4 * 64, 64, TestName = "GatedRMSNorm float16")]
    public void NormMatchesOrtAndReference(bool half, string? activation, float? epsilon, int width, int groupSize)
    {
        const int batch = 2, length = 33;
        var data = new TestData(AttentionCase.StableSeed(TestContext.CurrentContext.Test.Name));
        TensorData Tensor(float[] v, params long[] shape) => half ? TensorData.Create(TestData.ToHalf(v), shape) : TensorData.Create(v, shape);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = Tensor(data.Normal(batch * length * width), batch, length, width),
            ["scale"] = Tensor(data.Normal(groupSize, 0.5), groupSize),
            ["z"] = Tensor(data.Normal(batch * length * width, 3), batch, length, width),
        };
        var expected = new double[batch * length * width];
        GatedRmsNormReference.Forward(OnnxAssert.Floats(inputs["x"]), OnnxAssert.Floats(inputs["z"]), OnnxAssert.Floats(inputs["scale"]), epsilon ?? 1e-5,
            activation == "sigmoid" ? GateActivation.Sigmoid : GateActivation.Silu, expected);

        double tolerance = half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
        using var engine = OnnxTestHost.Open(NormModel(half, activation, epsilon, width, groupSize), HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Single().NodeName, Is.EqualTo("norm"));
        var byEngine = engine.Run(inputs);
        OnnxAssert.Close(byEngine["y"], expected, "engine vs reference", tolerance);
        using var ort = OnnxTestHost.Open(NormModel(half, activation, epsilon, width, groupSize), HandoverBackend.None);
        OnnxAssert.Close(byEngine["y"], ort.Run(inputs)["y"], "engine vs ORT", tolerance);
    }

    [Test]
    public void NormRefusesAScaleThatDoesNotDivideTheRow()
    {
        using var engine = OnnxTestHost.Open(NormModel(false, null, null, 12, 5), HandoverBackend.Cpu);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(new float[12], 1, 1, 12), ["scale"] = TensorData.Create(new float[5], 5), ["z"] = TensorData.Create(new float[12], 1, 1, 12),
        };
        var e = Assert.Throws<ModelRunException>(() => engine.Run(inputs));
        Assert.That(e!.Message, Does.Contain("GatedRMSNorm node 'norm': scale: its length must divide X's last axis (12)"));
    }

    [Test]
    public void NormRefusesAFloat16OutputItCannotHoldNamingTheNode()
    {
        using var engine = OnnxTestHost.Open(NormModel(true, null, null, 8, 8), HandoverBackend.Cpu);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(Enumerable.Range(0, 8).Select(i => (Half)(i + 1)).ToArray(), 1, 1, 8),
            ["scale"] = TensorData.Create(Enumerable.Repeat((Half)60000, 8).ToArray(), 8), ["z"] = TensorData.Create(Enumerable.Repeat((Half)10, 8).ToArray(), 1, 1, 8),
        };
        var e = Assert.Throws<ModelRunException>(() => engine.Run(inputs));
        Assert.That(e!.Message, Does.Contain("GatedRMSNorm node 'norm': Y: value").And.Contain("outside float16's range"));
    }

    [Test]
    public void NormWithAnUnknownActivationIsRefusedNamingTheNode()
    {
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(NormModel(false, "relu", null, 8, 8)));
        Assert.That(e!.Message, Does.Contain("GatedRMSNorm node 'norm': activation must be silu, swish or sigmoid, got 'relu'"));
    }

    [Test]
    public void NormWithANegativeEpsilonIsLeftToOrt()
    {
        const float epsilon = -1e-5f;
        const int width = 24, groupSize = 8;
        var model = NormModel(false, null, epsilon, width, groupSize);
        var node = HandoverRewriter.Rewrite(model).Nodes.Single();
        Assert.That(node.ToEngine, Is.False);
        Assert.That(node.Detail, Is.EqualTo($"epsilon {epsilon} (the engine takes a finite epsilon >= 0): left to ORT"));

        var data = new TestData(AttentionCase.StableSeed(TestContext.CurrentContext.Test.Name));
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(data.Normal(2 * 3 * width), 2, 3, width), ["scale"] = TensorData.Create(data.Normal(groupSize, 0.5), groupSize),
            ["z"] = TensorData.Create(data.Normal(2 * 3 * width, 3), 2, 3, width),
        };
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        OnnxAssert.Close(engine.Run(inputs)["y"], ort.Run(inputs)["y"], "hand-over vs ORT alone");
    }

    [Test]
    public void BFloat16IsLeftToOrt()
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        b.Node("GatedRMSNorm", [b.Input("x", F.Bfloat16, 1, 1, 8), b.Input("scale", F.Bfloat16, 8), b.Input("z", F.Bfloat16, 1, 1, 8)],
            domain: HandoverRewriter.MicrosoftDomain, name: "norm", outputNames: ["y"]);
        b.Output("y", F.Bfloat16, 1, 1, 8);
        var node = HandoverRewriter.Rewrite(b.Build()).Nodes.Single();
        Assert.That(node.ToEngine, Is.False);
        Assert.That(node.Detail, Is.EqualTo("bfloat16 tensors: left to ORT"));
    }

    [Test]
    public void BFloat16MadeByACastIsLeftToOrt()
    {
        // The model declares only the float32 projections; a Cast makes the bfloat16 tensors the gate reads.
        const int heads = 6;
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        string ToBFloat16(string value) => b.Node("Cast", [value], attributes: [("to", (long)F.Bfloat16)])[0];
        b.Node("LinearAttentionGate", [ToBFloat16(b.Input("a", F.Float, 2, 3, heads)), b.Input("dt_bias", F.Float, heads), b.Input("decay_scale", F.Float, heads),
            ToBFloat16(b.Input("b", F.Float, 2, 3, heads))], domain: HandoverRewriter.MicrosoftDomain, name: "gate", outputNames: ["decay", "beta"]);
        b.Output("decay", F.Bfloat16, 2, 3, heads);
        b.Output("beta", F.Bfloat16, 2, 3, heads);
        var model = b.Build();
        var node = HandoverRewriter.Rewrite(model).Nodes.Single();
        Assert.That(node.ToEngine, Is.False);
        Assert.That(node.Detail, Is.EqualTo("bfloat16 tensors: left to ORT"));

        var data = new TestData(AttentionCase.StableSeed(TestContext.CurrentContext.Test.Name));
        var inputs = new Dictionary<string, TensorData>
        {
            ["a"] = TensorData.Create(data.Normal(2 * 3 * heads, 3), 2, 3, heads), ["b"] = TensorData.Create(data.Normal(2 * 3 * heads, 3), 2, 3, heads),
            ["dt_bias"] = TensorData.Create(data.Normal(heads, 1), heads), ["decay_scale"] = TensorData.Create(data.Uniform(heads, 0.01, 4).Select(v => -v).ToArray(), heads),
        };
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, "bfloat16 gate");
    }
}

using Engine.Kernels.Common;
using Engine.Kernels.Conv;
using Engine.Onnx;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>One CausalConvWithState node: its model, inputs and float64 reference.</summary>
public sealed record ConvNodeCase
{
    public int B { get; init; } = 2;
    public int T { get; init; } = 40;
    public int C { get; init; } = 24;
    public int K { get; init; } = 4;
    public int Dilation { get; init; } = 1;
    public string? Activation { get; init; } = "silu";
    public bool ChannelsLast { get; init; }
    public bool Past { get; init; } = true;
    public bool Bias { get; init; } = true;
    public bool Half { get; init; }
    /// <summary>ai.onnx CausalConvWithState-27 instead of com.microsoft.</summary>
    public bool Onnx27 { get; init; }

    public int S => (K - 1) * Dilation;
    public double Tolerance => Half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
    private F Type => Half ? F.Float16 : F.Float;
    private long[] XShape => ChannelsLast ? [B, T, C] : [B, C, T];
    private long[] StateShape => ChannelsLast ? [B, S, C] : [B, C, S];

    public OnnxModel Model()
    {
        var b = new ModelBuilder(Onnx27 ? 27 : 21);
        if (!Onnx27) b.Import(HandoverRewriter.MicrosoftDomain, 1);
        var inputs = new List<string> { b.Input("x", Type, XShape.Cast<object>().ToArray()), b.Input("weight", Type, C, 1, K) };
        inputs.Add(Bias ? b.Input("bias", Type, C) : "");
        if (Past) inputs.Add(b.Input("past_state", Type, StateShape.Cast<object>().ToArray()));
        var attributes = new List<(string, object)>();
        if (Activation is string a) attributes.Add(("activation", a));
        if (Dilation != 1) attributes.Add(("dilation", (long)Dilation));
        if (ChannelsLast) attributes.Add(("channels_last", 1L));
        b.Node("CausalConvWithState", inputs, domain: Onnx27 ? "" : HandoverRewriter.MicrosoftDomain, name: "conv", outputNames: ["y", "present_state"], attributes: attributes.ToArray());
        b.Output("y", Type, XShape.Cast<object>().ToArray());
        b.Output("present_state", Type, StateShape.Cast<object>().ToArray());
        return b.Build();
    }

    public Dictionary<string, TensorData> Inputs(string seed)
    {
        var data = new TestData(AttentionCase.StableSeed(seed));
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = Tensor(data.Normal((long)B * T * C), XShape),
            ["weight"] = Tensor(data.Normal(C * K, 0.5), C, 1, K),
        };
        if (Bias) inputs["bias"] = Tensor(data.Normal(C, 0.5), C);
        if (Past) inputs["past_state"] = Tensor(data.Normal((long)B * C * S), StateShape);
        return inputs;
    }

    private TensorData Tensor(float[] values, params long[] shape) =>
        Half ? TensorData.Create(TestData.ToHalf(values), shape) : TensorData.Create(values, shape);

    public (double[] Output, double[] State) Reference(Dictionary<string, TensorData> inputs)
    {
        var layout = ChannelsLast ? ConvLayout.ChannelsLast : ConvLayout.ChannelsFirst;
        var config = new CausalConvConfig(C, K, Dilation, Activation is "silu" or "swish" ? ConvActivation.Silu : ConvActivation.None, layout, layout);
        var output = new double[B * T * C];
        var state = new double[B * C * S];
        CausalConvReference.Forward(config, SequenceLayout.Dense(B, T), OnnxAssert.Floats(inputs["x"]), OnnxAssert.Floats(inputs["weight"]),
            Bias ? OnnxAssert.Floats(inputs["bias"]) : [], Past ? OnnxAssert.Floats(inputs["past_state"]) : [], output, state);
        return (output, state);
    }
}

/// <summary>
/// CausalConvWithState, VarlenCausalConvWithState and the Transposes the builder writes around a channels-first convolution,
/// on the engine against the float64 reference (fp32 1e-5, fp16 5e-3 relative RMS) and against ONNX Runtime 1.32's own
/// kernels (the same model run with HandoverBackend.None).
/// </summary>
[TestFixture]
public sealed class CausalConvHandoverTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        ConvNodeCase[] cases =
        [
            new(),
            new() { ChannelsLast = true },
            new() { Activation = null, Bias = false, Dilation = 2 },
            new() { Activation = "swish", ChannelsLast = true, Dilation = 3, C = 19 },
            new() { T = 1 },
            new() { T = 1, ChannelsLast = true },
            new() { T = 2, Past = false },
            new() { T = 2, ChannelsLast = true },
            new() { K = 1, T = 9 },
            new() { B = 1, T = 300, C = 64 },
            new() { Onnx27 = true },
            new() { Onnx27 = true, T = 1, Activation = null },
        ];
        return cases.Select(c => new TestCaseData(c).SetName($"CausalConvWithState {(c.Onnx27 ? "ai.onnx-27" : "com.microsoft")} {c.Activation ?? "no activation"} " +
            $"B={c.B} T={c.T} C={c.C} K={c.K} dilation {c.Dilation}{(c.ChannelsLast ? " channels_last" : "")}{(c.Past ? "" : " no past")}{(c.Bias ? "" : " no bias")}"));
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesOrtAndReference(ConvNodeCase c)
    {
        var inputs = c.Inputs(TestContext.CurrentContext.Test.Name);
        var (output, state) = c.Reference(inputs);
        using var engine = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        var node = engine.Handover.EngineNodes.Single();
        Assert.That(node.NodeName, Is.EqualTo("conv"));
        if (c.Onnx27) Assert.That(engine.Handover.Notes, Has.Some.Contains("lowered from 27 to 26"));
        var byEngine = engine.Run(inputs);
        OnnxAssert.Close(byEngine["y"], output, "engine output vs reference");
        OnnxAssert.Close(byEngine["present_state"], state, "engine present_state vs reference");

        using var ort = OnnxTestHost.Open(c.Model(), HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        OnnxAssert.Close(byEngine["y"], byOrt["y"], "engine vs ORT output");
        OnnxAssert.Close(byEngine["present_state"], byOrt["present_state"], "engine vs ORT present_state");
    }

    [Test]
    public void Float16OnTheEngine()
    {
        // ORT 1.32 has no float16 CPU kernel for CausalConvWithState: the engine against the reference only.
        var c = new ConvNodeCase { Half = true, ChannelsLast = true };
        var inputs = c.Inputs("causal conv float16");
        var (output, state) = c.Reference(inputs);
        using var engine = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        var result = engine.Run(inputs);
        OnnxAssert.Close(result["y"], output, "fp16 output vs reference", c.Tolerance);
        OnnxAssert.Close(result["present_state"], state, "fp16 present_state vs reference", c.Tolerance);
    }

    [Test]
    public void Float16OutputItCannotHoldIsRefusedNamingTheNode()
    {
        var c = new ConvNodeCase { Half = true, Activation = null, Bias = false, Past = false, B = 1, T = 3, C = 4 };
        var inputs = c.Inputs("causal conv float16 overflow");
        inputs["x"] = TensorData.Create(Enumerable.Repeat((Half)60000, c.B * c.T * c.C).ToArray(), c.B, c.C, c.T);
        inputs["weight"] = TensorData.Create(Enumerable.Repeat((Half)1, c.C * c.K).ToArray(), c.C, 1, c.K);
        using var engine = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        var e = Assert.Throws<ModelRunException>(() => engine.Run(inputs));
        Assert.That(e!.Message, Does.Contain("CausalConvWithState node 'conv': output: value").And.Contain("outside float16's range"));
    }

    [Test]
    public void DecodeStepsCarryTheState()
    {
        // A prompt of 30 tokens then 3 single-token steps, present_state fed back, equals one call over 33 tokens.
        var whole = new ConvNodeCase { B = 1, T = 33, Past = false };
        var inputs = whole.Inputs("causal conv decode");
        var (expected, _) = whole.Reference(inputs);
        var x = inputs["x"].As<float>();
        float[] Positions(int t0, int t1) => Enumerable.Range(0, whole.C).SelectMany(ch => x.AsSpan(ch * whole.T + t0, t1 - t0).ToArray()).ToArray();
        using var prompt = OnnxTestHost.Open(new ConvNodeCase { B = 1, T = 30, Past = false }.Model(), HandoverBackend.Cpu);
        using var step = OnnxTestHost.Open(new ConvNodeCase { B = 1, T = 1 }.Model(), HandoverBackend.Cpu);
        var first = prompt.Run(new Dictionary<string, TensorData> { ["x"] = TensorData.Create(Positions(0, 30), 1, whole.C, 30), ["weight"] = inputs["weight"], ["bias"] = inputs["bias"] });
        var state = first["present_state"];
        var y = first["y"].As<float>();
        var outputs = Enumerable.Range(0, whole.C).Select(ch => y.AsSpan(ch * 30, 30).ToArray().ToList()).ToArray();
        for (int t = 30; t < 33; t++)
        {
            var r = step.Run(new Dictionary<string, TensorData> { ["x"] = TensorData.Create(Positions(t, t + 1), 1, whole.C, 1), ["weight"] = inputs["weight"], ["bias"] = inputs["bias"], ["past_state"] = state });
            state = r["present_state"];
            for (int ch = 0; ch < whole.C; ch++) outputs[ch].Add(r["y"].As<float>()[ch]);
        }
        OnnxAssert.Close(TensorData.Create(outputs.SelectMany(o => (IEnumerable<float>)o).ToArray(), 1, whole.C, 33), expected, "prompt then decode steps vs one call");
    }

    private static OnnxModel VarlenModel(int channels, int k, bool bias, string? extraAttribute = null)
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        var attributes = new List<(string, object)> { ("activation", "silu") };
        if (extraAttribute is not null) attributes.Add((extraAttribute, 2L));
        b.Node("VarlenCausalConvWithState",
            [b.Input("x", F.Float, "N", channels), b.Input("weight", F.Float, channels, 1, k), b.Input("cu_seqlens", F.Int32, "B1"),
             bias ? b.Input("bias", F.Float, channels) : "", b.Input("initial_state", F.Float, "B", channels, k - 1)],
            domain: HandoverRewriter.MicrosoftDomain, name: "varlen_conv", outputNames: ["y", "final_state"], attributes: attributes.ToArray());
        b.Output("y", F.Float, "N", channels);
        b.Output("final_state", F.Float, "B", channels, k - 1);
        return b.Build();
    }

    [TestCase(new[] { 0, 7, 8, 40, 42 }, true, TestName = "VarlenCausalConvWithState ragged, one-token and shorter-than-K-1 sequences")]
    [TestCase(new[] { 0, 300 }, false, TestName = "VarlenCausalConvWithState one long sequence, no bias")]
    public void VarlenMatchesOrtAndReference(int[] offsets, bool bias)
    {
        const int channels = 20, k = 4;
        int batch = offsets.Length - 1, total = offsets[^1];
        var data = new TestData(AttentionCase.StableSeed(TestContext.CurrentContext.Test.Name));
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(data.Normal(total * channels), total, channels),
            ["weight"] = TensorData.Create(data.Normal(channels * k, 0.5), channels, 1, k),
            ["cu_seqlens"] = TensorData.Create(offsets, offsets.Length),
            ["initial_state"] = TensorData.Create(data.Normal(batch * channels * (k - 1)), batch, channels, k - 1),
        };
        if (bias) inputs["bias"] = TensorData.Create(data.Normal(channels, 0.5), channels);
        var config = new CausalConvConfig(channels, k, 1, ConvActivation.Silu, ConvLayout.ChannelsLast, ConvLayout.ChannelsFirst);
        var output = new double[total * channels];
        var state = new double[batch * channels * (k - 1)];
        CausalConvReference.Forward(config, SequenceLayout.Packed(offsets, total), inputs["x"].As<float>(), inputs["weight"].As<float>(),
            bias ? inputs["bias"].As<float>() : [], inputs["initial_state"].As<float>(), output, state);

        using var engine = OnnxTestHost.Open(VarlenModel(channels, k, bias), HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Single().Detail, Does.Contain("packed sequences"));
        var byEngine = engine.Run(inputs);
        OnnxAssert.Close(byEngine["y"], output, "engine output vs reference");
        OnnxAssert.Close(byEngine["final_state"], state, "engine final_state vs reference");
        using var ort = OnnxTestHost.Open(VarlenModel(channels, k, bias), HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        OnnxAssert.Close(byEngine["y"], byOrt["y"], "engine vs ORT output");
        OnnxAssert.Close(byEngine["final_state"], byOrt["final_state"], "engine vs ORT final_state");
    }

    [Test]
    public void VarlenRefusesOffsetsThatDoNotCoverTheTokens()
    {
        using var engine = OnnxTestHost.Open(VarlenModel(4, 3, false), HandoverBackend.Cpu);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(new float[10 * 4], 10, 4),
            ["weight"] = TensorData.Create(new float[4 * 3], 4, 1, 3),
            ["cu_seqlens"] = TensorData.Create(new[] { 0, 6, 9 }, 3),
            ["initial_state"] = TensorData.Create(new float[2 * 4 * 2], 2, 4, 2),
        };
        var e = Assert.Throws<ModelRunException>(() => engine.Run(inputs));
        Assert.That(e!.Message, Does.Contain("VarlenCausalConvWithState node 'varlen_conv'").And.Contain("cumulative_sequence_length").And.Contain("10"));
    }

    [Test]
    public void VarlenCaptureIsLeftToOrt()
    {
        var plan = HandoverRewriter.Rewrite(VarlenModel(4, 3, false, "state_update_capacity"));
        var node = plan.Nodes.Single();
        Assert.That(node.ToEngine, Is.False);
        Assert.That(node.Detail, Does.Contain("state_update_capacity 2").And.Contain("left to ORT"));
    }

    [TestCase("state_window", 2L, "state_window 2 (CUDA only)")]
    [TestCase("ndim", 2L, "ndim 2")]
    [TestCase("state_length", 5L, "state_length 5 (CUDA only)")]
    public void CudaOnlyFormsAreLeftToOrt(string attribute, long value, string reason)
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        b.Node("CausalConvWithState", [b.Input("x", F.Float, 1, 4, 8), b.Input("w", F.Float, 4, 1, 3)], domain: HandoverRewriter.MicrosoftDomain,
            name: "conv", outputNames: ["y"], attributes: [(attribute, value)]);
        b.Output("y", F.Float, 1, 4, 8);
        var node = HandoverRewriter.Rewrite(b.Build()).Nodes.Single();
        Assert.That(node.ToEngine, Is.False);
        Assert.That(node.ToDomain, Is.EqualTo(HandoverRewriter.MicrosoftDomain));
        Assert.That(node.Detail, Does.Contain(reason).And.EndWith("left to ORT"));
    }

    /// <summary>
    /// A kernel longer than the engine's short convolution takes stays with ORT, the plan saying why (the engine's kernel
    /// would overflow a worker's stack); where the model leaves K symbolic, the run refuses it naming the weight.
    /// </summary>
    [Test]
    public void AKernelLongerThanTheEngineTakesIsLeftToOrt()
    {
        const int k = CausalConvConfig.MaxKernelSize + 1;
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        b.Node("CausalConvWithState", [b.Input("x", F.Float, 1, 4, 8), b.Input("w", F.Float, 4, 1, k)], domain: HandoverRewriter.MicrosoftDomain,
            name: "conv", outputNames: ["y"]);
        b.Output("y", F.Float, 1, 4, 8);
        var node = HandoverRewriter.Rewrite(b.Build()).Nodes.Single();
        Assert.That(node.ToEngine, Is.False);
        Assert.That(node.Detail, Does.Contain($"kernel size {k} (the engine's short convolution takes up to 4096)").And.EndWith("left to ORT"));

        var symbolic = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        symbolic.Node("CausalConvWithState", [symbolic.Input("x", F.Float, 1, 4, 8), symbolic.Input("w", F.Float, 4, 1, "K")], domain: HandoverRewriter.MicrosoftDomain,
            name: "conv", outputNames: ["y"]);
        symbolic.Output("y", F.Float, 1, 4, 8);
        using var session = OnnxTestHost.Open(symbolic.Build(), HandoverBackend.Cpu);
        var e = Assert.Throws<ModelRunException>(() => session.Run(new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(new float[32], 1, 4, 8), ["w"] = TensorData.Create(new float[4 * k], 4, 1, k),
        }))!;
        Assert.That(e.Message, Does.Contain("CausalConvWithState node 'conv': weight: expected shape (channels, 1, K) with K in [1, 4096]"));
    }

    [Test]
    public void UnknownActivationIsRefusedNamingTheNode()
    {
        var c = new ConvNodeCase { Activation = "gelu" };
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(c.Model()));
        Assert.That(e!.Message, Does.Contain("CausalConvWithState node 'conv'").And.Contain("activation must be none, silu or swish, got 'gelu'"));
    }

    [TestCase("weight", new long[] { 24, 4 }, "weight: expected shape (channels, 1, K)", TestName = "CausalConvWithState refuses a weight of rank 2 naming node and input")]
    [TestCase("past_state", new long[] { 2, 24, 2 }, "past_state: expected shape [2, 24, 3]", TestName = "CausalConvWithState refuses a past_state of the wrong length naming node and input")]
    [TestCase("bias", new long[] { 23 }, "bias: expected shape (24)", TestName = "CausalConvWithState refuses a bias of the wrong length naming node and input")]
    public void BadInputNamesNodeAndInput(string input, long[] shape, string message)
    {
        var c = new ConvNodeCase();
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        b.Node("CausalConvWithState", [b.Input("x", F.Float, "B", 24, "T"), b.Input("weight", F.Float, null), b.Input("bias", F.Float, null), b.Input("past_state", F.Float, null)],
            domain: HandoverRewriter.MicrosoftDomain, name: "conv", outputNames: ["y", "present_state"], attributes: [("activation", "silu")]);
        b.Output("y", F.Float, null);
        b.Output("present_state", F.Float, null);
        var inputs = c.Inputs("bad conv input");
        long n = shape.Aggregate(1L, (a, d) => a * d);
        inputs[input] = TensorData.Create(new float[n], shape);
        using var engine = OnnxTestHost.Open(b.Build(), HandoverBackend.Cpu);
        var e = Assert.Throws<ModelRunException>(() => engine.Run(inputs));
        Assert.That(e!.Message, Does.Contain($"CausalConvWithState node 'conv': {message}"));
    }

    /// <summary>
    /// A batch of no sequences whose length passes int (every tensor empty) runs, as ORT 1.32 runs it channels-first (in 25 s
    /// here; channels-last it ends the process). Before, the kernel counted the batch's positions in int and failed with an
    /// OverflowException naming neither node nor input.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void AnEmptyBatchLongerThanIntRuns(bool channelsLast)
    {
        const long length = 1L << 32;
        var c = new ConvNodeCase { B = 0, C = 3, K = 4, ChannelsLast = channelsLast };
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        b.Node("CausalConvWithState", [b.Input("x", F.Float, channelsLast ? ["B", "T", c.C] : ["B", c.C, "T"]), b.Input("weight", F.Float, c.C, 1, c.K), "",
            b.Input("past_state", F.Float, channelsLast ? ["B", c.S, c.C] : ["B", c.C, c.S])],
            domain: HandoverRewriter.MicrosoftDomain, name: "conv", outputNames: ["y", "present_state"],
            attributes: channelsLast ? [("channels_last", 1L)] : []);
        b.Output("y", F.Float, null);
        b.Output("present_state", F.Float, null);
        long[] xShape = channelsLast ? [0, length, c.C] : [0, c.C, length], stateShape = channelsLast ? [0, c.S, c.C] : [0, c.C, c.S];
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(Array.Empty<float>(), xShape),
            ["weight"] = c.Inputs("empty batch")["weight"],
            ["past_state"] = TensorData.Create(Array.Empty<float>(), stateShape),
        };
        using var engine = OnnxTestHost.Open(b.Build(), HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Count(), Is.EqualTo(1));
        var outputs = engine.Run(inputs);
        OnnxAssert.Shape(outputs["y"], xShape);
        OnnxAssert.Shape(outputs["present_state"], stateShape);
    }

    /// <summary>
    /// x (B, T, C) → Transpose → CausalConvWithState → Transpose → y, as the builder writes it; optionally a second reader of the
    /// transposed input, or the layout attributes written out at their defaults (channels_last = 0, state_channels_last = -1).
    /// </summary>
    private static OnnxModel TransposedModel(int channels, int k, bool secondReader, bool layoutDefaultsGiven)
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        b.Input("x", F.Float, "B", "T", channels);
        b.Input("past_state", F.Float, "B", channels, k - 1);
        var perm = ("perm", (object)new long[] { 0, 2, 1 });
        var channelsFirst = b.Node("Transpose", ["x"], name: "to_channels_first", attributes: [perm])[0];
        var conv = b.Node("CausalConvWithState", [channelsFirst, b.Input("weight", F.Float, channels, 1, k), "", "past_state"], 2,
            HandoverRewriter.MicrosoftDomain, "conv", ["conv_out", "present_state"],
            layoutDefaultsGiven ? [("activation", "silu"), ("channels_last", 0L), ("state_channels_last", -1L)] : [("activation", "silu")]);
        b.Node("Transpose", [conv[0]], name: "to_channels_last", outputNames: ["y"], attributes: [perm]);
        b.Output("y", F.Float, "B", "T", channels);
        b.Output("present_state", F.Float, "B", channels, k - 1);
        if (secondReader)
        {
            b.Node("Relu", [channelsFirst], outputNames: ["side"]);
            b.Output("side", F.Float, "B", channels, "T");
        }
        return b.Build();
    }

    [TestCase(false, false, TestName = "Transpose, CausalConvWithState, Transpose fold into one channels-last engine node")]
    [TestCase(false, true, TestName = "Transposes fold into a convolution that gives its layout attributes at their defaults")]
    [TestCase(true, false, TestName = "Transposes kept when the transposed input has another reader")]
    public void TransposesAroundTheConvolution(bool secondReader, bool layoutDefaultsGiven)
    {
        const int batch = 2, length = 50, channels = 48, k = 4;
        var model = TransposedModel(channels, k, secondReader, layoutDefaultsGiven);
        var data = new TestData(AttentionCase.StableSeed(TestContext.CurrentContext.Test.Name));
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(data.Normal(batch * length * channels), batch, length, channels),
            ["past_state"] = TensorData.Create(data.Normal(batch * channels * (k - 1)), batch, channels, k - 1),
            ["weight"] = TensorData.Create(data.Normal(channels * k, 0.5), channels, 1, k),
        };
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var node = engine.Handover.EngineNodes.Single();
        var transposes = engine.Handover.Model.NodeOpTypes.Count(t => t == "Transpose");
        if (secondReader)
        {
            Assert.That(node.Detail, Does.Contain("Transposes kept: 'to_channels_first_out0' has another reader"));
            Assert.That(transposes, Is.EqualTo(2));
        }
        else
        {
            Assert.That(node.Detail, Does.Contain("channels-last: Transposes 'to_channels_first' and 'to_channels_last' folded in"));
            Assert.That(transposes, Is.EqualTo(0));
        }
        var byEngine = engine.Run(inputs);

        var config = new CausalConvConfig(channels, k, 1, ConvActivation.Silu, ConvLayout.ChannelsLast, ConvLayout.ChannelsFirst);
        var output = new double[batch * length * channels];
        var state = new double[batch * channels * (k - 1)];
        CausalConvReference.Forward(config, SequenceLayout.Dense(batch, length), inputs["x"].As<float>(), inputs["weight"].As<float>(), [],
            inputs["past_state"].As<float>(), output, state);
        OnnxAssert.Close(byEngine["y"], output, "y vs reference");
        OnnxAssert.Close(byEngine["present_state"], state, "present_state vs reference");
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        OnnxAssert.Close(byEngine["y"], byOrt["y"], "engine vs ORT y");
        OnnxAssert.Close(byEngine["present_state"], byOrt["present_state"], "engine vs ORT present_state");
    }
}

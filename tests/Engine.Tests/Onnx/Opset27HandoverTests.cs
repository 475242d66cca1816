using Engine.Onnx;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// ai.onnx LinearAttention-27 and CausalConvWithState-27 nodes the hand-over meets at their edges, each against ONNX Runtime 1.32
/// alone (which runs them as their ONNX function bodies): the hand-over runs what ORT runs, with the same results (fp32 1e-5
/// relative RMS; the engine's outputs pre-filled with NaN), and refuses what ORT refuses.
/// </summary>
[TestFixture]
public sealed class Opset27HandoverTests
{
    /// <summary>An ai.onnx LinearAttention-27 node over graph inputs, every tensor of <paramref name="type"/> but past_state (<paramref name="stateType"/>).</summary>
    private static OnnxModel Node(string rule, int hq, int hkv, int dk, int dv, bool decayPerKey = false, F type = F.Float, F? stateType = null,
        long opset = 27, params (string, object)[] extra)
    {
        var state = stateType ?? type;
        var b = new ModelBuilder(opset, "opset27");
        bool decay = rule is "gated" or "gated_delta", beta = rule is "delta" or "gated_delta";
        var inputs = new List<string>
        {
            b.Input("query", type, "B", "T", hq * dk), b.Input("key", type, "B", "T", hkv * dk), b.Input("value", type, "B", "T", hkv * dv),
            b.Input("past_state", state, "B", hkv, dk, dv),
        };
        if (decay || beta) inputs.Add(decay ? b.Input("decay", type, "B", "T", decayPerKey ? hkv * dk : hkv) : "");
        if (beta) inputs.Add(b.Input("beta", type, "B", "T", hkv));
        b.Node("LinearAttention", inputs, name: "attention", outputNames: ["output", "present_state"],
            attributes: [("q_num_heads", (long)hq), ("kv_num_heads", (long)hkv), ("update_rule", rule), .. extra]);
        b.Output("output", type, null);
        b.Output("present_state", state, null);
        return b.Build();
    }

    private static Dictionary<string, TensorData> Inputs(OnnxModel model, int batch, int length, int seed)
    {
        var data = new TestData(seed);
        var inputs = new Dictionary<string, TensorData>();
        foreach (var input in model.Proto.Graph.Input)
        {
            var dims = input.Type.TensorType.Shape.Dim.Select(d => d.DimParam == "B" ? batch : d.DimParam == "T" ? length : d.DimValue).ToArray();
            long count = dims.Aggregate(1L, (a, d) => a * d);
            var values = input.Name switch
            {
                "decay" => data.Uniform(count, -0.6, -0.01),
                "beta" => data.Uniform(count, 0.05, 1.0),
                _ => data.Normal(count, 0.5),
            };
            inputs[input.Name] = (F)input.Type.TensorType.ElemType switch
            {
                F.Float16 => TensorData.Create(TestData.ToHalf(values), dims),
                F.Bfloat16 => TensorData.Create(TestData.ToBFloat16(values), dims),
                _ => TensorData.Create(values, dims),
            };
        }
        return inputs;
    }

    /// <summary>The hand-over's outputs, written into tensors pre-filled with NaN, against ORT alone's (relative RMS).</summary>
    private static void AgreesWithOrtAlone(OnnxModel model, Dictionary<string, TensorData> inputs, double tolerance = Numerics.Fp32Tolerance)
    {
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var expected = ort.Run(inputs);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var outputs = expected.ToDictionary(e => e.Key, e => NaNs(e.Value));
        engine.RunInto(inputs, outputs);
        foreach (var (name, want) in expected)
        {
            Assert.That(OnnxAssert.Floats(want).All(float.IsFinite), Is.True, $"ORT's {name} is finite");
            OnnxAssert.Close(outputs[name], want, $"{name}, hand-over vs ORT alone", tolerance);
        }
    }

    private static TensorData NaNs(TensorData like)
    {
        int count = (int)like.ElementCount;
        return like.ElementType switch
        {
            TensorElementType.Float16 => TensorData.Create(Enumerable.Repeat(Half.NaN, count).ToArray(), like.Shape),
            TensorElementType.BFloat16 => TensorData.Create(TestData.ToBFloat16(Enumerable.Repeat(float.NaN, count).ToArray()), like.Shape),
            _ => TensorData.Create(Enumerable.Repeat(float.NaN, count).ToArray(), like.Shape),
        };
    }

    /// <summary>
    /// Head dim dk = 1: the kernels took such a key as (B, T, heads) and refused it at the run ("key: expected rank 4"),
    /// where ORT runs the node.
    /// </summary>
    [TestCase("linear", 1, 1)]
    [TestCase("gated", 2, 1)]
    [TestCase("delta", 1, 1)]
    [TestCase("gated_delta", 6, 2)]
    public void KeyHeadDimOfOneRuns(string rule, int hq, int hkv)
    {
        var model = Node(rule, hq, hkv, dk: 1, dv: 6);
        AgreesWithOrtAlone(model, Inputs(model, batch: 2, length: 37, seed: 1));
    }

    /// <summary>
    /// bfloat16 tensors: ORT runs the ai.onnx node as its function body; the hand-over moved it to com.microsoft, for which ORT
    /// has no bfloat16 CPU kernel, and the model failed to load ("Could not find an implementation for LinearAttention(1)").
    /// The node stays ai.onnx (opset 27 kept). Compared at bfloat16's precision: both sides run the same function body.
    /// </summary>
    [TestCase("linear")]
    [TestCase("gated_delta")]
    public void BFloat16NodeStaysWithItsFunctionBody(string rule)
    {
        var model = Node(rule, 2, 1, dk: 8, dv: 6, type: F.Bfloat16);
        using (var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu))
        {
            Assert.That(engine.Handover.Nodes.Single().ToDomain, Is.EqualTo(""));
            Assert.That(engine.Handover.Model.OpsetOf(""), Is.EqualTo(27));
        }
        AgreesWithOrtAlone(model, Inputs(model, batch: 2, length: 9, seed: 2));
    }

    /// <summary>
    /// ai.onnx LinearAttention-27 types past_state and present_state (S) apart from query, key and value (T); ORT runs a node whose
    /// state is float32 and activations float16 (or the other way round, or a bfloat16 state). The engine's op takes one type
    /// for all: ORT refused the rewritten model at load ("no kernel def matches node inputs"). Such a node stays with ORT.
    /// </summary>
    [TestCase(TensorElementType.Float16, TensorElementType.Float)]
    [TestCase(TensorElementType.Float, TensorElementType.Float16)]
    [TestCase(TensorElementType.Float, TensorElementType.BFloat16)]
    public void PastStateOfAnotherTypeStaysWithOnnxRuntime(TensorElementType type, TensorElementType stateType)
    {
        var model = Node("gated_delta", 2, 1, dk: 8, dv: 6, type: (F)type, stateType: (F)stateType);
        using (var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu))
        {
            var node = engine.Handover.Nodes.Single();
            Assert.That(node.ToEngine, Is.False);
            Assert.That(node.Detail, Does.Contain("past_state: left to ORT"));
        }
        AgreesWithOrtAlone(model, Inputs(model, batch: 2, length: 9, seed: 3));
    }

    /// <summary>
    /// present_state is a required output of ai.onnx LinearAttention-27 and CausalConvWithState-27 (two outputs, both required):
    /// ORT refuses a node that leaves it out. The hand-over ran such a node on the engine (whose ops make it optional); it
    /// now refuses it too, naming the node.
    /// </summary>
    [TestCase("LinearAttention", false)]
    [TestCase("LinearAttention", true)]
    [TestCase("CausalConvWithState", false)]
    [TestCase("CausalConvWithState", true)]
    public void PresentStateLeftOutIsRefusedAsOnnxRuntimeRefusesIt(string op, bool emptyName)
    {
        var b = new ModelBuilder(27);
        string[] outputs = emptyName ? ["y", ""] : ["y"];
        if (op == "LinearAttention")
            b.Node(op, [b.Input("q", F.Float, "B", "T", 16), b.Input("k", F.Float, "B", "T", 16), b.Input("v", F.Float, "B", "T", 8)],
                name: "no_state", outputNames: outputs, attributes: [("q_num_heads", 2L), ("kv_num_heads", 2L), ("update_rule", "linear")]);
        else
            b.Node(op, [b.Input("x", F.Float, "B", 4, "T"), b.Input("w", F.Float, 4, 1, 3)], name: "no_state", outputNames: outputs,
                attributes: [("activation", "silu")]);
        b.Output("y", F.Float, null);
        var model = b.Build();
        Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, HandoverBackend.None).Dispose(), "ORT alone refuses it");
        var e = Assert.Throws<ModelNodeException>(() => OnnxTestHost.Open(model, HandoverBackend.Cpu).Dispose());
        Assert.That(e!.Message, Does.Contain("no_state").And.Contain("present_state"));
    }

    /// <summary>
    /// A model importing ai.onnx opset 28: ORT 1.32 loads it and runs LinearAttention and CausalConvWithState as their function
    /// bodies. The engine knows those ops as opset 27 defines them, and took them at any later opset; they now stay with ORT, the
    /// plan saying why.
    /// </summary>
    [Test]
    public void NodesUnderALaterOpsetStayWithOnnxRuntime()
    {
        var model = Node("gated_delta", 2, 1, dk: 8, dv: 6, opset: 28);
        using (var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu))
        {
            var node = engine.Handover.Nodes.Single();
            Assert.That(node.ToEngine, Is.False);
            Assert.That(node.Detail, Does.Contain("opset 28"));
            Assert.That(engine.Handover.Notes.Single(), Does.StartWith("ai.onnx opset 28 kept: still needed by "));
        }
        AgreesWithOrtAlone(model, Inputs(model, batch: 2, length: 9, seed: 4));

        var b = new ModelBuilder(28);
        b.Node("CausalConvWithState", [b.Input("x", F.Float, "B", 4, "T"), b.Input("w", F.Float, 4, 1, 3)], name: "conv", outputNames: ["y", "state"],
            attributes: [("activation", "silu")]);
        b.Output("y", F.Float, null);
        b.Output("state", F.Float, null);
        var conv = b.Build();
        Assert.That(HandoverRewriter.Rewrite(conv).EngineNodes, Is.Empty);
        var plain = new ModelBuilder(28);
        plain.Node("Neg", [plain.Input("x", F.Float, 2)], outputNames: ["y"]);
        plain.Output("y", F.Float, 2);
        Assert.That(HandoverRewriter.Rewrite(plain.Build()).Notes.Single(),
            Is.EqualTo("ai.onnx opset 28 kept: the rewrite lowers opset 27 only, whose two new ops it knows, to 26"));
        AgreesWithOrtAlone(conv, Inputs(conv, batch: 2, length: 9, seed: 5));
    }

    /// <summary>
    /// A key with fewer heads than kv_num_heads: ORT refuses it for ai.onnx LinearAttention-27 (shape inference: "Dimension
    /// mismatch"), where com.microsoft's kernel shares such key heads. The hand-over ran it on the engine as com.microsoft's; it
    /// now refuses it, naming the node.
    /// </summary>
    [TestCase(2, 2)]
    [TestCase(4, 2)]
    public void KeyWithFewerHeadsIsRefusedAsOnnxRuntimeRefusesIt(int hq, int hkv)
    {
        var b = new ModelBuilder(27);
        b.Node("LinearAttention", [b.Input("query", F.Float, "B", "T", hq * 8), b.Input("key", F.Float, "B", "T", 8), b.Input("value", F.Float, "B", "T", hkv * 6)],
            name: "shared_key", outputNames: ["output", "present_state"], attributes: [("q_num_heads", (long)hq), ("kv_num_heads", (long)hkv), ("update_rule", "linear")]);
        b.Output("output", F.Float, null);
        b.Output("present_state", F.Float, null);
        var model = b.Build();
        Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, HandoverBackend.None).Dispose(), "ORT alone refuses it");
        var e = Assert.Throws<ModelNodeException>(() => OnnxTestHost.Open(model, HandoverBackend.Cpu).Dispose());
        Assert.That(e!.Message, Does.Contain("shared_key").And.Contain("key of width"));
    }

    /// <summary>
    /// A scale that is not finite: ORT runs the node (its output not finite, its present_state as any other scale's). The engine's
    /// kernel refused it when the session opened ("scale must be finite"); the node now stays with ORT and the model runs.
    /// </summary>
    [TestCase(float.NaN)]
    [TestCase(float.PositiveInfinity)]
    public void ScaleThatIsNotFiniteStaysWithOnnxRuntime(float scale)
    {
        var model = Node("gated_delta", 2, 1, dk: 8, dv: 6, extra: ("scale", scale));
        var inputs = Inputs(model, batch: 2, length: 9, seed: 6);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var expected = ort.Run(inputs);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.Nodes.Single().ToEngine, Is.False);
        var outputs = expected.ToDictionary(e => e.Key, e => NaNs(e.Value));
        engine.RunInto(inputs, outputs);
        OnnxAssert.Close(outputs["present_state"], expected["present_state"], "present_state, hand-over vs ORT alone");
        Assert.That(OnnxAssert.Floats(outputs["output"]).Select(float.IsFinite), Is.EqualTo(OnnxAssert.Floats(expected["output"]).Select(float.IsFinite)));
    }
}

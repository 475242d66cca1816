using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// Models the engine cannot run fail when the session is opened, with a message naming the node; a kernel
/// error during a run becomes an exception and the session keeps working.
/// </summary>
[TestFixture]
public sealed class BadModelTests
{
    /// <summary>One LinearAttention node "attention" over graph inputs of the given widths.</summary>
    private static OnnxModel Node(string[] inputs, (string, object)[] attributes, int queryRank = 3, int keyWidth = 32, int decayWidth = 2)
    {
        var b = new ModelBuilder(21).Import("com.microsoft", 1);
        object[] Dims(int width, int rank) => rank == 3 ? ["B", "T", width] : ["B", "T", 2, width / 2];
        b.Input("query", F.Float, Dims(32, queryRank));
        b.Input("key", F.Float, Dims(keyWidth, 3));
        b.Input("value", F.Float, Dims(24, 3));
        b.Input("decay", F.Float, Dims(decayWidth, 3));
        b.Input("beta", F.Float, Dims(2, 3));
        b.Node("LinearAttention", inputs, domain: "com.microsoft", name: "attention", outputNames: ["output", "present_state"], attributes: attributes);
        b.Output("output", F.Float, null);
        return b.Build();
    }

    private static readonly (string, object)[] Heads = [("q_num_heads", 2L), ("kv_num_heads", 2L)];

    /// <summary>An application without ORT's native package got a type initializer's error; it is told which package to add.</summary>
    [Test]
    public void AMissingNativeLibraryNamesThePackageToAdd()
    {
        var failed = new TypeInitializationException("Microsoft.ML.OnnxRuntime.NativeMethods", new DllNotFoundException("Unable to load shared library 'onnxruntime'"));
        var error = OrtInfo.MissingNativeLibrary(failed);
        Assert.That(error, Is.Not.Null);
        Assert.That(error!.Message, Does.Contain("add the package Microsoft.ML.OnnxRuntime").And.Contain("Unable to load shared library 'onnxruntime'"));
        Assert.That(OrtInfo.MissingNativeLibrary(new InvalidOperationException("other")), Is.Null);
    }

    public static IEnumerable<TestCaseData> Models()
    {
        yield return new TestCaseData(Node(["query", "key", "value", "", "decay"], [.. Heads, ("update_rule", "gated_linear")]), "update_rule must be one of")
            .SetName("Unknown update_rule value");
        yield return new TestCaseData(Node(["query", "key", "value", "", "decay"], [.. Heads, ("update_rule", "gated"), ("window", 4L)]), "unknown attribute 'window'")
            .SetName("Unknown attribute");
        yield return new TestCaseData(Node(["query", "key", "value", "", "decay"], [.. Heads, ("update_rule", "gated")], queryRank: 4), "input query ('query') must have rank 3")
            .SetName("Wrong query rank");
        yield return new TestCaseData(Node(["query", "", "value"], [.. Heads, ("update_rule", "linear")]), "the required input key is missing")
            .SetName("Missing key");
        yield return new TestCaseData(Node(["query", "key", "value"], [.. Heads, ("update_rule", "gated")]), "requires the decay input")
            .SetName("Missing decay for gated");
        yield return new TestCaseData(Node(["query", "key", "value", "", "decay"], [.. Heads, ("update_rule", "linear")]), "takes no decay input")
            .SetName("Decay given to linear");
        yield return new TestCaseData(Node(["query", "key", "value"], [("q_num_heads", 3L), ("kv_num_heads", 2L), ("update_rule", "linear")]), "must be a multiple of kv_num_heads")
            .SetName("Query heads not a multiple of key-value heads");
        yield return new TestCaseData(Node(["query", "key", "value"], [("q_num_heads", 2L), ("update_rule", "linear")]), "kv_num_heads is missing")
            .SetName("Missing kv_num_heads");
        yield return new TestCaseData(Node(["query", "key", "value"], [.. Heads, ("update_rule", "linear")], keyWidth: 48), "key width 48 must be key heads·dk with the key heads dividing min(q_num_heads, kv_num_heads) = 2")
            .SetName("Key width inconsistent with the heads");
        yield return new TestCaseData(Node(["query", "key", "value", "", "decay"], [.. Heads, ("update_rule", "gated")], decayWidth: 5), "decay width 5")
            .SetName("Decay width neither per head nor per key");
    }

    [TestCaseSource(nameof(Models))]
    public void FailsAtLoadNamingTheNode(OnnxModel model, string why)
    {
        var e = Assert.Catch(() => OnnxTestHost.Open(model, HandoverBackend.Cpu).Dispose());
        Assert.That(e, Is.TypeOf<ModelRunException>().Or.TypeOf<ModelNodeException>());
        Assert.That(e!.Message, Does.Contain("LinearAttention node 'attention'").And.Contain(why));
        Assert.That(OnnxTestHost.Host.OpenSessions, Is.Zero, "a failed open leaves no session behind");
    }

    /// <summary>
    /// A key whose width the model leaves symbolic, given at the run as other than key heads·dk (dk from the query): refused
    /// naming the key. One whose width was a multiple of the key heads was read with the query's dk, the rows of other
    /// heads as a head's (q 4, kv 2: ORT's kernel refuses 4 key heads); ONNX Runtime's shared key heads failed in a tensor
    /// view without naming the key (those dividing min(q, kv) now run; q 2, kv 8, 4 key heads, which ORT's own kernel runs,
    /// are refused naming the key).
    /// </summary>
    [TestCase(4, 2, 4)]
    [TestCase(2, 2, 4)]
    [TestCase(2, 8, 4)]
    public void AKeyWidthContradictingTheHeadsAtTheRunIsRefusedNamingTheKey(int qHeads, int kvHeads, int keyHeads)
    {
        const int dk = 16, dv = 8, t = 5;
        var b = new ModelBuilder(21).Import("com.microsoft", 1);
        b.Input("query", F.Float, "B", "T", "WQ");
        b.Input("key", F.Float, "B", "T", "WK");
        b.Input("value", F.Float, "B", "T", "WV");
        b.Node("LinearAttention", ["query", "key", "value"], domain: "com.microsoft", name: "attention", outputNames: ["output", "present_state"],
            attributes: [("q_num_heads", (long)qHeads), ("kv_num_heads", (long)kvHeads), ("update_rule", "linear")]);
        b.Output("output", F.Float, null);
        using var session = OnnxTestHost.Open(b.Build(), HandoverBackend.Cpu);
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(1), "the widths are unknown before the run: the engine takes the node");
        var data = new Harness.TestData(7);
        var inputs = new Dictionary<string, TensorData>
        {
            ["query"] = TensorData.Create(data.Normal(t * qHeads * dk), 1, t, qHeads * dk),
            ["key"] = TensorData.Create(data.Normal(t * keyHeads * dk), 1, t, keyHeads * dk),
            ["value"] = TensorData.Create(data.Normal(t * kvHeads * dv), 1, t, kvHeads * dv),
        };
        int expected = Math.Min(qHeads, kvHeads);
        var e = Assert.Throws<ModelRunException>(() => session.Run(inputs));
        Assert.That(e!.Message, Does.Contain($"LinearAttention node 'attention': key: key width {keyHeads * dk} must be key heads·dk with the key heads dividing min(q_num_heads, kv_num_heads) = {expected}"));
    }

    [Test]
    public void KernelErrorDuringRunLeavesTheSessionUsable()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Gated, PastState = true };
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(1));
        var inputs = c.Inputs();

        // A positive log decay would grow the state without bound: the kernel refuses it.
        var bad = new Dictionary<string, TensorData>(inputs);
        var decay = inputs["decay"].As<float>().ToArray();
        decay[7] = 0.5f;
        bad["decay"] = TensorData.Create(decay, inputs["decay"].Shape);
        var e = Assert.Throws<ModelRunException>(() => session.Run(bad));
        Assert.That(e!.Message, Does.Contain("LinearAttention node 'linear_attention'").And.Contain("decay").And.Contain("0.5"));

        // Shapes that contradict the node's heads, given at run time (the model leaves B and T symbolic).
        var shortValue = new Dictionary<string, TensorData>(inputs) { ["past_state"] = TensorData.Create(new float[2 * 2 * 16 * 11], 2, 2, 16, 11) };
        e = Assert.Throws<ModelRunException>(() => session.Run(shortValue));
        Assert.That(e!.Message, Does.Contain("past_state"));

        // A NaN in past_state (read where it lies, never copied) is named, not carried into the outputs.
        var past = inputs["past_state"].As<float>().ToArray();
        past[123] = float.NaN;
        var nanState = new Dictionary<string, TensorData>(inputs) { ["past_state"] = TensorData.Create(past, inputs["past_state"].Shape) };
        e = Assert.Throws<ModelRunException>(() => session.Run(nanState));
        Assert.That(e!.Message, Does.Contain("past_state").And.Contain("NaN").And.Contain("123"));

        var reference = c.Reference(inputs);
        var good = session.Run(inputs);
        OnnxAssert.Close(good["output"], reference.Output, "output after the failed runs");
        OnnxAssert.Close(good["present_state"], reference.State, "present_state after the failed runs");
    }
}

/// <summary>A float16 node whose outputs or state float16 cannot hold is refused, naming the tensor, never written as infinity.</summary>
[TestFixture]
public sealed class HalfRangeNodeTests
{
    [TestCase("query")]
    [TestCase("past_state")]
    public void ValuesBeyondFloat16sRangeAreRefused(string large)
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Linear, Half = true, PastState = true, B = 1, T = 4, Scale = 1f };
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        var inputs = c.Inputs();
        static TensorData Filled(TensorData like, double value) =>
            TensorData.Create(Enumerable.Repeat((Half)value, (int)like.ElementCount).ToArray(), like.Shape);
        // q = k = v = 200: o = Sᵀ q reaches 200³ · dk, far past 65504. past_state = 65500, q = 0, k = v = 10: the
        // outputs are 0 but every token adds 100 to S, which then overflows float16.
        bool output = large == "query";
        inputs["query"] = Filled(inputs["query"], output ? 200 : 0);
        inputs["key"] = Filled(inputs["key"], output ? 200 : 10);
        inputs["value"] = Filled(inputs["value"], output ? 200 : 10);
        if (!output) inputs["past_state"] = Filled(inputs["past_state"], 65500);
        var e = Assert.Throws<ModelRunException>(() => session.Run(inputs));
        Assert.That(e!.Message, Does.Contain(output ? "output: value" : "present_state: value").And.Contain("outside float16's range"));
    }
}

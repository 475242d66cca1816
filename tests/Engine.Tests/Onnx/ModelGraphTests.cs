using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Onnx.Proto;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// Whole models: ORT nodes before and after the engine node, several engine nodes in one model, and
/// opset-27 models, which ONNX Runtime alone runs only as the op's Scan function body.
/// </summary>
[TestFixture]
public sealed class ModelGraphTests
{
    private const int Batch = 2, Length = 30;

    private static LinearAttentionBlockSpec Small(UpdateRule rule, DecayForm decay = DecayForm.PerKey, string domain = HandoverRewriter.MicrosoftDomain, int layers = 1,
        int qHeads = 4, int kvHeads = 2) => new()
    {
        Hidden = 24, QHeads = qHeads, KvHeads = kvHeads, KeyDim = 16, ValueDim = 16, Rule = rule, Decay = decay, Domain = domain, Layers = layers,
    };

    public static IEnumerable<TestCaseData> Blocks()
    {
        yield return new TestCaseData(Small(UpdateRule.Linear)).SetName("Block linear");
        yield return new TestCaseData(Small(UpdateRule.Gated)).SetName("Block gated per-key decay");
        yield return new TestCaseData(Small(UpdateRule.Gated, DecayForm.PerHead)).SetName("Block gated per-head decay");
        yield return new TestCaseData(Small(UpdateRule.Delta)).SetName("Block delta");
        yield return new TestCaseData(Small(UpdateRule.GatedDelta, DecayForm.PerHead)).SetName("Block gated_delta per-head decay");
        yield return new TestCaseData(Small(UpdateRule.GatedDelta, DecayForm.PerKey)).SetName("Block gated_delta per-key decay");
        yield return new TestCaseData(Small(UpdateRule.Gated, layers: 3)).SetName("Block gated, three layers (three engine nodes)");
        yield return new TestCaseData(Small(UpdateRule.Gated, domain: "")).SetName("Block gated, ai.onnx opset 27");
        yield return new TestCaseData(Small(UpdateRule.GatedDelta, DecayForm.PerHead, domain: "")).SetName("Block gated_delta, ai.onnx opset 27");
        yield return new TestCaseData(Small(UpdateRule.GatedDelta, DecayForm.PerHead, qHeads: 2, kvHeads: 4))
            .SetName("Block gated_delta per-head decay, grouped value heads (2 query/key heads, 4 value heads)");
    }

    [TestCaseSource(nameof(Blocks))]
    public void BlockMatchesReference(LinearAttentionBlockSpec spec)
    {
        var model = SampleModels.LinearAttentionBlock(spec);
        var (inputs, x, pasts) = BlockInputs(spec);
        var expected = BlockReference.Run(spec, model, x, Batch, Length, pasts);
        string output = spec.Layers == 1 ? "y" : $"y_{spec.Layers - 1}";

        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var byEngine = engine.Run(inputs);
        bool engineTakesIt = OnnxTestHost.Host.Capabilities.Takes(spec.Rule);
        Assert.That(engine.Handover.EngineNodes.Count(), Is.EqualTo(engineTakesIt ? spec.Layers : 0), "engine nodes");
        OnnxAssert.Close(byEngine[output], expected.Y, "engine-backed y vs reference");
        foreach (var (name, state) in expected.States) OnnxAssert.Close(byEngine[name], state, $"engine-backed {name} vs reference");

        // ONNX Runtime 1.32 runs ai.onnx LinearAttention-27 by itself, as its Scan function body (the slow path the
        // rewrite replaces): the engine's node must agree with it.
        if (spec.Domain.Length == 0) Assert.That(engine.Handover.Model.OpsetOf(""), Is.EqualTo(26), "opset handed to ORT");
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        OnnxAssert.Close(byOrt[output], expected.Y, "ORT-only y vs reference");
        OnnxAssert.Close(byEngine[output], byOrt[output], "engine-backed y vs ORT-only y");
    }

    [Test]
    public void TheRewriteRefusesAnUnknownUpdateRuleNamingTheNode()
    {
        var b = new ModelBuilder(21).Import("com.microsoft", 1);
        b.Input("x", F.Float, 1, 4, 8);
        b.Node("LinearAttention", ["x", "x", "x"], domain: "com.microsoft", name: "mixer", outputNames: ["y", "s"],
            attributes: [("q_num_heads", 1L), ("kv_num_heads", 1L), ("update_rule", "gated_linear")]);
        b.Output("y", F.Float, null);
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(b.Build()));
        Assert.That(e!.Message, Does.Contain("LinearAttention node 'mixer'").And.Contain("update_rule must be one of"));
    }

    [Test]
    public void Opset27KeptWhileAnotherNodeNeedsIt()
    {
        // A bfloat16 convolution stays with ORT (the engine takes float32 and float16), so ai.onnx opset 27 is still needed.
        var b = new ModelBuilder(27);
        b.Input("x", F.Bfloat16, 1, 4, 3);
        b.Input("w", F.Bfloat16, 3, 1, 2);
        var conv = b.Node("CausalConvWithState", ["x", "w"], outputs: 2, name: "conv")[0];
        b.Node("LinearAttention", [conv, conv, conv], name: "linear_attention", outputNames: ["y", "s"],
            attributes: [("q_num_heads", 1L), ("kv_num_heads", 1L), ("update_rule", "linear")]);
        b.Output("y", F.Float, null);
        var plan = HandoverRewriter.Rewrite(b.Build());
        Assert.That(plan.Model.OpsetOf(""), Is.EqualTo(27));
        Assert.That(plan.Notes.Single(), Does.Contain("still needed by conv"));
        Assert.That(plan.EngineNodes.Single().NodeName, Is.EqualTo("linear_attention"));
        Assert.That(plan.Nodes.Single(n => n.NodeName == "conv").Detail, Is.EqualTo("bfloat16 tensors: left to ORT"));
    }

    /// <summary>The model's one ai.onnx LinearAttention-27 lies in a model-local function, which ORT inlines under the model's import: 27 is kept.</summary>
    [Test]
    public void Opset27KeptWhileALocalFunctionHoldsLinearAttention()
    {
        const int heads = 2, dk = 8, dv = 4;
        var b = new ModelBuilder(27).Import("local", 1);
        b.Input("q", F.Float, Batch, Length, heads * dk);
        b.Input("k", F.Float, Batch, Length, heads * dk);
        b.Input("v", F.Float, Batch, Length, heads * dv);
        b.Input("decay", F.Float, Batch, Length, heads);
        b.Input("beta", F.Float, Batch, Length, heads);
        b.Node("MyAttention", ["q", "k", "v", "decay", "beta"], domain: "local", outputNames: ["output"]);
        b.Output("output", F.Float, Batch, Length, heads * dv);
        var model = b.Build();
        var function = new FunctionProto { Name = "MyAttention", Domain = "local", Input = { "Q", "K", "V", "G", "Be" }, Output = { "Y" } };
        function.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 27 });
        var attention = new NodeProto { OpType = "LinearAttention", Input = { "Q", "K", "V", "", "G", "Be" }, Output = { "Y", "S" } };
        attention.Attribute.Add(new AttributeProto { Name = "q_num_heads", Type = AttributeProto.Types.AttributeType.Int, I = heads });
        attention.Attribute.Add(new AttributeProto { Name = "kv_num_heads", Type = AttributeProto.Types.AttributeType.Int, I = heads });
        function.Node.Add(attention);
        model.Proto.Functions.Add(function);

        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.Model.OpsetOf(""), Is.EqualTo(27));
        Assert.That(engine.Handover.Notes.Single(), Does.Contain("still needed by LinearAttention(Y, S)"));
        var data = new TestData(11);
        var inputs = new Dictionary<string, TensorData>
        {
            ["q"] = TensorData.Create(data.Normal(Batch * Length * heads * dk), Batch, Length, heads * dk),
            ["k"] = TensorData.Create(data.Normal(Batch * Length * heads * dk), Batch, Length, heads * dk),
            ["v"] = TensorData.Create(data.Normal(Batch * Length * heads * dv), Batch, Length, heads * dv),
            ["decay"] = TensorData.Create(Enumerable.Range(0, Batch * Length * heads).Select(i => -0.05f * (1 + i % 7)).ToArray(), Batch, Length, heads),
            ["beta"] = TensorData.Create(Enumerable.Range(0, Batch * Length * heads).Select(i => 0.2f + 0.1f * (i % 6)).ToArray(), Batch, Length, heads),
        };
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, "LinearAttention-27 inside a local function");
    }

    [Test]
    public void OnnxLinearAttentionBelowOpset27IsRefusedByName()
    {
        var b = new ModelBuilder(26);
        b.Input("x", F.Float, 1, 4, 8);
        b.Node("LinearAttention", ["x", "x", "x"], name: "too_early", outputNames: ["y", "s"],
            attributes: [("q_num_heads", 1L), ("kv_num_heads", 1L)]);
        b.Output("y", F.Float, null);
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(b.Build()));
        Assert.That(e!.Message, Does.Contain("too_early").And.Contain("opset 27"));
    }

    public static (Dictionary<string, TensorData> Inputs, float[] X, Dictionary<string, float[]> Pasts) BlockInputs(LinearAttentionBlockSpec spec)
    {
        var data = new TestData(AttentionCase.StableSeed($"block {spec}"));
        var x = data.Normal((long)Batch * Length * spec.Hidden);
        var inputs = new Dictionary<string, TensorData> { ["x"] = TensorData.Create(x, Batch, Length, spec.Hidden) };
        var pasts = new Dictionary<string, float[]>();
        for (int layer = 0; layer < spec.Layers; layer++)
        {
            string name = SampleModels.PastStateName(spec.Layers == 1 ? "" : $"_{layer}");
            var past = data.Normal((long)Batch * spec.KvHeads * spec.KeyDim * spec.ValueDim, 0.3);
            pasts[name] = past;
            inputs[name] = TensorData.Create(past, Batch, spec.KvHeads, spec.KeyDim, spec.ValueDim);
        }
        return (inputs, x, pasts);
    }
}

/// <summary>The rewrite's choices where the model's declared types and shapes decide them.</summary>
[TestFixture]
public sealed class RewriteTests
{
    [TestCase(TensorElementType.Float16, true)]
    [TestCase(TensorElementType.BFloat16, false)]
    public void Float16NodesGoToTheEngineOtherTypesStayWithOnnxRuntime(TensorElementType elementType, bool toEngine)
    {
        var type = (F)elementType;
        var b = new ModelBuilder(27);
        b.Input("q", type, 1, 4, 8);
        b.Node("LinearAttention", ["q", "q", "q"], name: "half", outputNames: ["y", "s"], attributes: [("q_num_heads", 1L), ("kv_num_heads", 1L), ("update_rule", "linear")]);
        b.Output("y", type, null);
        var plan = HandoverRewriter.Rewrite(b.Build());
        Assert.That(plan.EngineNodes.Select(n => n.NodeName), toEngine ? Is.EqualTo(new[] { "half" }) : Is.Empty);
        // A bfloat16 ai.onnx node stays ai.onnx: ORT runs its function body, and has no bfloat16 kernel for com.microsoft's.
        Assert.That(plan.Nodes.Single().ToDomain, Is.EqualTo(toEngine ? HandoverRewriter.EngineDomain : ""));
        if (!toEngine) Assert.That(plan.Nodes.Single().Detail, Does.Contain("bfloat16"));
    }

    /// <summary>A LinearAttention node over graph inputs query (B, T, 16), key (B, T, keyWidth), value (B, T, 4·kvHeads).</summary>
    private static OnnxModel HeadsNode(long qHeads, long kvHeads, object keyWidth, string domain = HandoverRewriter.MicrosoftDomain)
    {
        var b = new ModelBuilder(domain.Length == 0 ? 27 : 21);
        if (domain.Length > 0) b.Import(domain, 1);
        b.Input("query", F.Float, "B", "T", 16);
        b.Input("key", F.Float, "B", "T", keyWidth);
        b.Input("value", F.Float, "B", "T", (int)(4 * kvHeads));
        b.Node("LinearAttention", ["query", "key", "value"], domain: domain, name: "heads", outputNames: ["y", "s"],
            attributes: [("q_num_heads", qHeads), ("kv_num_heads", kvHeads), ("update_rule", "linear")]);
        b.Output("y", F.Float, null);
        return b.Build();
    }

    /// <summary>
    /// A LinearAttention whose query a Cast makes bfloat16, its type declared nowhere: left to ORT, as a declared one is.
    /// The engine took it, and ORT refused the model at load (the engine's op takes float32 and float16).
    /// </summary>
    [Test]
    public void BFloat16MadeByACastLeavesLinearAttentionToOnnxRuntime()
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        string ToBFloat16(string value) => b.Node("Cast", [value], attributes: [("to", (long)F.Bfloat16)])[0];
        b.Node("LinearAttention", [ToBFloat16(b.Input("query", F.Float, "B", "T", 16)), ToBFloat16(b.Input("key", F.Float, "B", "T", 16)),
            ToBFloat16(b.Input("value", F.Float, "B", "T", 8))], domain: HandoverRewriter.MicrosoftDomain, name: "heads", outputNames: ["y", "s"],
            attributes: [("q_num_heads", 2L), ("kv_num_heads", 2L), ("update_rule", "linear")]);
        b.Output("y", F.Bfloat16, null);
        var node = HandoverRewriter.Rewrite(b.Build()).Nodes.Single();
        Assert.That(node.ToEngine, Is.False);
        Assert.That(node.Detail, Does.EndWith("bfloat16 tensors: left to ORT"));
    }

    [TestCase(0L, true)]
    [TestCase(2L, false)]
    public void AStateWindowLeavesTheNodeToOnnxRuntime(long window, bool toEngine)
    {
        // com.microsoft's state_window (states after each of the last W tokens, ORT's CUDA kernel only); 0 is no window.
        var model = HeadsNode(2, 2, keyWidth: 16);
        model.Proto.Graph.Node[0].Attribute.Add(new AttributeProto { Name = "state_window", Type = AttributeProto.Types.AttributeType.Int, I = window });
        var plan = HandoverRewriter.Rewrite(model);
        Assert.That(plan.EngineNodes.Select(n => n.NodeName), toEngine ? Is.EqualTo(new[] { "heads" }) : Is.Empty);
        if (toEngine)
        {
            Assert.That(plan.Model.Proto.Graph.Node[0].Attribute.Select(a => a.Name), Does.Not.Contain("state_window"), "dropped for the engine's node");
            using var session = OnnxTestHost.Open(model, HandoverBackend.Cpu);
            Assert.That(session.Handover.EngineNodes, Has.Exactly(1).Items, "the session opens with the engine's node");
        }
        else Assert.That(plan.Nodes.Single().Detail, Does.EndWith("state_window 2: the engine keeps the final state only, left to ORT"));
    }

    public static IEnumerable<TestCaseData> HeadDimCases()
    {
        (string Op, UpdateRule Rule, int Dk, int Dv, string? Why)[] cases =
        [
            ("LinearAttention", UpdateRule.GatedDelta, 300, 8, "key head dim 300"),
            ("LinearAttention", UpdateRule.Delta, 8, 300, "value head dim 300"),
            ("LinearAttention", UpdateRule.Gated, 300, 8, null),
            ("GatedDeltaNet", UpdateRule.GatedDelta, 300, 8, "key head dim 300"),
            ("GatedDeltaNet", UpdateRule.GatedDelta, 8, 300, "value head dim 300"),
            ("GatedDeltaNet", UpdateRule.GatedDelta, 256, 256, null),
        ];
        foreach (bool insideIf in new[] { false, true })
            foreach (var c in cases)
                yield return new TestCaseData(c.Op, c.Rule, c.Dk, c.Dv, c.Why, insideIf)
                    .SetName($"Delta-rule head dims: {c.Op} {c.Rule} dk {c.Dk} dv {c.Dv}{(insideIf ? ", inside an If" : "")}");
    }

    /// <summary>
    /// The delta rule's kernels take head dims up to 256 (GLA's any): a node whose declared dims are larger stays with ORT,
    /// says why, and the model runs as ORT alone runs it — in an If's branches too, where the dims are declared in the
    /// enclosing graph (a branch reads its inputs from there).
    /// </summary>
    [TestCaseSource(nameof(HeadDimCases))]
    public void DeltaRuleHeadDimsOverTheKernelsLimitStayWithOnnxRuntime(string op, UpdateRule rule, int dk, int dv, string? why, bool insideIf)
    {
        var model = op == "LinearAttention"
            ? SampleModels.LinearAttentionNode(new LinearAttentionBlockSpec { QHeads = 1, KvHeads = 1, KeyDim = dk, ValueDim = dv, Rule = rule, Decay = DecayForm.PerHead })
            : SampleModels.GatedDeltaNetNode(new GatedDeltaNetNodeSpec { QHeads = 1, ValueHeads = 1, KeyDim = dk, ValueDim = dv });
        if (insideIf) model = InBothBranchesOfAnIf(model);
        var plan = HandoverRewriter.Rewrite(model);
        int branches = insideIf ? 2 : 1;
        if (why is null)
        {
            Assert.That(plan.EngineNodes, Has.Exactly(branches).Items);
            return;
        }
        Assert.That(plan.EngineNodes, Is.Empty);
        Assert.That(plan.Nodes, Has.Exactly(branches).Items.And.All.Property(nameof(HandoverNode.Detail)).Contain(why).And.All.Property(nameof(HandoverNode.Detail)).EndWith("left to ORT"));
        var inputs = ModelInputs.Random(model, new Dictionary<string, long> { ["B"] = 1, ["T"] = 3, ["N"] = 3, ["S"] = 3 }, except: ["cond"]);
        if (insideIf) inputs["cond"] = TensorData.Create(new[] { true });
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var expected = ort.Run(inputs);
        foreach (var (name, actual) in engine.Run(inputs))
            Assert.That(actual.As<float>(), Is.EqualTo(expected[name].As<float>()), name);
    }

    /// <summary>
    /// A delta-rule node whose query and key come through a Transpose of declared [B, dk, T] tensors: the plan reads dk
    /// through it, so dk 320 stays with ORT and the model runs; where the width is symbolic the node goes to the engine
    /// and the plan says its head dims are checked only when it runs.
    /// </summary>
    [TestCase(320, "key head dim 320 (the delta rule's kernels take up to 256), left to ORT")]
    [TestCase(16, null)]
    [TestCase(-1, "update_rule delta (head dims unknown before a run: a run with dk over 256 or dv over 256 is refused)")]
    public void DeltaRuleHeadDimsAreReadThroughATranspose(int dk, string? detail)
    {
        var b = new ModelBuilder(21);
        b.Import(HandoverRewriter.MicrosoftDomain, 1);
        object width = dk > 0 ? dk : "W";
        string query = b.Node("Transpose", [b.Input("query_t", F.Float, "B", width, "T")], attributes: ("perm", new long[] { 0, 2, 1 }))[0];
        string key = b.Node("Transpose", [b.Input("key_t", F.Float, "B", width, "T")], attributes: ("perm", new long[] { 0, 2, 1 }))[0];
        b.Input("value", F.Float, "B", "T", 16);
        b.Input("beta", F.Float, "B", "T", 1);
        b.Node("LinearAttention", [query, key, "value", "", "", "beta"], domain: HandoverRewriter.MicrosoftDomain, name: "la", outputNames: ["y", "s"],
            attributes: [("q_num_heads", 1L), ("kv_num_heads", 1L), ("update_rule", "delta")]);
        b.Output("y", F.Float, null);
        var model = b.Build();

        var node = HandoverRewriter.Rewrite(model).Nodes.Single();
        if (detail is null) Assert.That(node.ToDomain, Is.EqualTo(HandoverRewriter.EngineDomain), node.Detail);
        else Assert.That(node.Detail, Does.EndWith(detail));
        if (dk < 0) return;
        var inputs = ModelInputs.Random(model, new Dictionary<string, long> { ["B"] = 1, ["T"] = 5 });
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        OnnxAssert.Close(engine.Run(inputs)["y"], ort.Run(inputs)["y"], "y");
    }

    /// <summary>The model's nodes in both branches of an If on a new bool input "cond", each branch's values renamed apart.</summary>
    private static OnnxModel InBothBranchesOfAnIf(OnnxModel model)
    {
        var copy = model.Clone();
        var graph = copy.Proto.Graph;
        var produced = graph.Node.SelectMany(n => n.Output).ToHashSet();
        GraphProto Branch(string prefix)
        {
            var body = new GraphProto { Name = prefix };
            foreach (var node in graph.Node)
            {
                var n = node.Clone();
                n.Name = prefix + n.Name;
                for (int i = 0; i < n.Input.Count; i++) if (produced.Contains(n.Input[i])) n.Input[i] = prefix + n.Input[i];
                for (int i = 0; i < n.Output.Count; i++) n.Output[i] = prefix + n.Output[i];
                body.Node.Add(n);
            }
            foreach (var output in graph.Output) body.Output.Add(new ValueInfoProto { Name = prefix + output.Name, Type = output.Type });
            return body;
        }
        var branchIf = new NodeProto { OpType = "If", Name = "branch", Input = { "cond" } };
        branchIf.Output.AddRange(graph.Output.Select(o => o.Name));
        branchIf.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("then/") });
        branchIf.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("else/") });
        graph.Node.Clear();
        graph.Node.Add(branchIf);
        graph.Input.Add(new ValueInfoProto { Name = "cond", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)F.Bool, Shape = new TensorShapeProto() } } });
        return copy;
    }

    /// <summary>chunk_size is a hint ORT accepts at any value: one the kernels do not run falls back to the default.</summary>
    [TestCase(0L)]
    [TestCase(-5L)]
    [TestCase(48L)]
    public void AnyChunkSizeHintRunsAsOrtAloneRunsIt(long chunk)
    {
        var model = SampleModels.LinearAttentionNode(new LinearAttentionBlockSpec { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead });
        model.Proto.Graph.Node.Single(n => n.OpType == "LinearAttention").Attribute.Add(
            new AttributeProto { Name = "chunk_size", Type = AttributeProto.Types.AttributeType.Int, I = chunk });
        var inputs = ModelInputs.Random(model, new Dictionary<string, long> { ["B"] = 1, ["T"] = 70 });
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        Assert.That(engine.Handover.EngineNodes, Has.Exactly(1).Items);
        var expected = ort.Run(inputs);
        foreach (var (name, actual) in engine.Run(inputs))
            OnnxAssert.Close(actual, expected[name], name);
    }

    /// <summary>An attribute of another type than the schema's is refused naming it, not read as 0 or "".</summary>
    [TestCase("LinearAttention", "q_num_heads", "must be INT, got FLOAT")]
    [TestCase("GatedDeltaNet", "update_rule", "must be STRING, got INT")]
    public void AttributesOfTheWrongTypeAreRefusedByName(string op, string attribute, string message)
    {
        var model = op == "LinearAttention"
            ? SampleModels.LinearAttentionNode(new LinearAttentionBlockSpec())
            : SampleModels.GatedDeltaNetNode(new GatedDeltaNetNodeSpec());
        var node = model.Proto.Graph.Node.Single(n => n.OpType == op);
        node.Attribute.Remove(node.Attribute.SingleOrDefault(a => a.Name == attribute));
        node.Attribute.Add(message.EndsWith("FLOAT")
            ? new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Float, F = 2f }
            : new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(model))!;
        Assert.That(e.Message, Does.StartWith($"{op} node").And.Contain($"attribute '{attribute}' {message}"));
    }

    [Test]
    public void GroupedValueHeadsGoToTheEngine()
    {
        // q_num_heads 2 (dk 8), kv_num_heads 4: the key has the 2 query heads, the value 4 heads.
        var plan = HandoverRewriter.Rewrite(HeadsNode(2, 4, keyWidth: 16));
        Assert.That(plan.EngineNodes.Select(n => n.NodeName), Is.EqualTo(new[] { "heads" }));
    }

    [TestCase(3, 2)]
    [TestCase(2, 3)]
    public void HeadsGroupedNeitherWayAreRefusedBeforeTheEngineClaimsTheNode(long qHeads, long kvHeads)
    {
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(HeadsNode(qHeads, kvHeads, keyWidth: 16)));
        Assert.That(e!.Message, Does.Contain("LinearAttention node 'heads'").And.Contain($"q_num_heads ({qHeads}) must be a multiple of kv_num_heads ({kvHeads})"));
    }

    [Test]
    public void OnnxLinearAttentionWithGroupedValueHeadsIsRefusedByName()
    {
        // ai.onnx LinearAttention-27 defines grouped query heads only (q_num_heads a multiple of kv_num_heads).
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(HeadsNode(2, 4, keyWidth: 16, domain: "")));
        Assert.That(e!.Message, Does.Contain("LinearAttention node 'heads'").And.Contain("com.microsoft.LinearAttention's"));
    }

    /// <summary>
    /// A key with fewer heads than min(q_num_heads, kv_num_heads), each shared by value heads as ONNX Runtime shares them
    /// (value head h reads key head h / (kv_num_heads / key heads)): the engine repeats them and runs the node, as ORT alone
    /// does. It left them to ORT where the widths were declared, and refused them at run where they were symbolic.
    /// </summary>
    [TestCase(2L, 2L, 1, true)]
    [TestCase(4L, 2L, 1, true)]
    [TestCase(2L, 4L, 1, true)]
    [TestCase(4L, 4L, 2, true)]
    [TestCase(2L, 2L, 1, false)]
    [TestCase(2L, 4L, 1, false)]
    public void SharedKeyHeadsThatDivideTheMinimumRunOnTheEngineAsOnnxRuntimeRunsThem(long qHeads, long kvHeads, int keyHeads, bool declared)
    {
        int dk = 16 / (int)qHeads, keyWidth = keyHeads * dk;
        var model = HeadsNode(qHeads, kvHeads, declared ? keyWidth : "KW");
        var plan = HandoverRewriter.Rewrite(model.Clone());
        Assert.That(plan.EngineNodes.Select(n => n.NodeName), Is.EqualTo(new[] { "heads" }));

        var data = new TestData(4);
        const int t = 5;
        var inputs = new Dictionary<string, TensorData>
        {
            ["query"] = TensorData.Create(data.Normal(t * 16), 1, t, 16), ["key"] = TensorData.Create(data.UnitRows(t * keyHeads, dk), 1, t, keyWidth),
            ["value"] = TensorData.Create(data.Normal(t * 4 * (int)kvHeads), 1, t, 4 * kvHeads),
        };
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, $"{keyHeads} key heads for q_num_heads {qHeads}, kv_num_heads {kvHeads}");
    }

    [Test]
    public void KeyHeadsSharedAnotherWayStayWithOnnxRuntime()
    {
        // q_num_heads 2 (dk 8), kv_num_heads 4, a key of 4 heads: value head h reads query head h / 2 but key head h, which no
        // repeat of the key to 2 heads gives. ONNX Runtime's own kernel runs it; the plan leaves it to ORT, saying why.
        var plan = HandoverRewriter.Rewrite(HeadsNode(2, 4, keyWidth: 32));
        Assert.That(plan.EngineNodes, Is.Empty);
        Assert.That(plan.Nodes.Single().ToDomain, Is.EqualTo(HandoverRewriter.MicrosoftDomain));
        Assert.That(plan.Nodes.Single().Detail, Does.Contain("4 key heads shared by the value heads: the engine's kernels take key heads dividing min(q_num_heads, kv_num_heads)"));
    }

    [Test]
    public void DecayWidthIsReadThroughTheOpsInFrontOfTheNode()
    {
        // decay = Mul(Sigmoid(Reshape(MatMul(x, w))), 0.5): per key dim after the Reshape to (0, 0, 8).
        var b = new ModelBuilder(21).Import("com.microsoft", 1);
        b.Input("x", F.Float, "B", "T", 4);
        var projected = b.Op("MatMul", "x", b.Initializer("w", new float[4 * 8], 4, 8));
        var reshaped = b.Op("Reshape", projected, b.Initializer("shape", TensorData.Create(new long[] { 0, 0, 8 }, 3)));
        var decay = b.Op("Mul", b.Op("Neg", b.Op("Sigmoid", reshaped)), b.Initializer("half", [0.5f]));
        b.Node("LinearAttention", ["x", "x", "x", "", decay, "x"], domain: "com.microsoft", name: "gdn", outputNames: ["y", "s"],
            attributes: [("q_num_heads", 2L), ("kv_num_heads", 2L), ("update_rule", "gated_delta")]);
        b.Output("y", F.Float, null);
        var plan = HandoverRewriter.Rewrite(b.Build());
        Assert.That(plan.EngineNodes.Single().NodeName, Is.EqualTo("gdn"));
        Assert.That(plan.Nodes.Single().Detail, Does.Contain("per-key decay"));
    }
}

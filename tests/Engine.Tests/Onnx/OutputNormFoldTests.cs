using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// LinearAttention → gated RMS norm (the builder's unfused chain, or com.microsoft GatedRMSNorm): the norm folds into the engine's
/// attention node (norm_scale, norm_gate, of rank 1 and 3) only where it normalizes each head of dv and lies in the attention's
/// graph. A weight [1, dv] folds as a [dv] copy; a weight [Hv, dv] (one per head) stays with ORT. Every variant runs as ONNX
/// Runtime alone runs it, within the float32 tolerance (relative RMS 1e-5).
/// </summary>
[TestFixture]
public sealed class OutputNormFoldTests
{
    private const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
    private const int Batch = 2, Length = 7, QkHeads = 2, ValueHeads = 4, Dk = 8, Dv = 4;
    private const int KeyWidth = QkHeads * Dk, ValueWidth = ValueHeads * Dv;

    [TestCase(false, new long[] { Dv }, true)]
    [TestCase(false, new long[] { 1, Dv }, true)]
    [TestCase(true, new long[] { 1, Dv }, true)]
    [TestCase(false, new long[] { ValueHeads, Dv }, false)]
    public void FoldsAWeightOfOneHeadAndAgreesWithOrtAlone(bool fusedNorm, long[] weightDims, bool folded)
    {
        var model = Model(fusedNorm, weightDims);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var attention = engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention");
        Assert.That(attention.Detail.Contains("normalizes and gates its output heads"), Is.EqualTo(folded), attention.Detail);
        if (!folded) Assert.That(engine.Handover.Notes, Has.One.Contains("its weight 'norm_weight' is [4, 4], the fold needs [4]"));
        OnnxAssert.AgreesWithOrtAlone(engine, ort, Inputs(new Random(3)), $"{(fusedNorm ? "GatedRMSNorm" : "unfused chain")}, weight [{string.Join(", ", weightDims)}]");
    }

    [Test]
    public void AWeightGivenAsAGraphInputOfShapeOneByDvIsKeptWithItsReason()
    {
        var model = Model(fusedNorm: true, [1, Dv]);
        var weight = model.Proto.Graph.Initializer.Single(t => t.Name == "norm_weight");
        model.Proto.Graph.Initializer.Remove(weight);
        model.Proto.Graph.Input.Add(new ValueInfoProto
        {
            Name = weight.Name,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor
                {
                    ElemType = (int)F, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 1 }, new TensorShapeProto.Types.Dimension { DimValue = Dv } } },
                },
            },
        });
        var plan = HandoverRewriter.Rewrite(model);
        Assert.That(plan.EngineNodes.Single(n => n.OpType == "LinearAttention").Detail,
            Does.Contain("output norm 'norm' kept: its scale 'norm_weight' is [1, 4] and no constant to give as [4]"));
    }

    /// <summary>A GatedRMSNorm with epsilon 0 folds (it stayed with ORT while the engine's norm gave 0/0 on a zero row) and agrees with ORT alone.</summary>
    [Test]
    public void ANormWithEpsilonZeroFoldsAndAgreesWithOrtAlone()
    {
        var model = Model(fusedNorm: true, [Dv]);
        model.Proto.Graph.Node.Single(n => n.Name == "norm").Attribute.Single(a => a.Name == "epsilon").F = 0f;
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention").Detail, Does.Contain("normalizes and gates its output heads"));
        OnnxAssert.AgreesWithOrtAlone(engine, ort, Inputs(new Random(5)), "GatedRMSNorm with epsilon 0");
    }

    /// <summary>
    /// The gate made by a node after the attention, as ONNX Runtime orders the projections in a model it saves optimized: the
    /// attention moves after it and takes the norm; where a node in between reads the attention's state, the norm stays with ORT.
    /// </summary>
    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void AGateComputedAfterTheAttentionFoldsUnlessTheStateIsReadBeforeTheNorm(bool fusedNorm, bool stateReadBetween)
    {
        var model = Model(fusedNorm, [Dv]);
        var graph = model.Proto.Graph;
        var zReaders = graph.Node.Where(n => n.Input.Contains("z")).ToArray();
        foreach (var reader in zReaders)
            for (int i = 0; i < reader.Input.Count; i++)
                if (reader.Input[i] == "z") reader.Input[i] = "z_late";
        int at = graph.Node.IndexOf(graph.Node.Single(n => n.Name == "attention"));
        graph.Node.Insert(at + 1, new NodeProto { OpType = "Neg", Name = "z_late", Input = { "z" }, Output = { "z_late" } });
        graph.ValueInfo.Add(graph.Input.Single(i => i.Name == "z").Clone());
        graph.ValueInfo[^1].Name = "z_late";
        if (stateReadBetween)
        {
            graph.Node.Insert(at + 1, new NodeProto { OpType = "Identity", Name = "state_copy", Input = { "present_state" }, Output = { "state_copy" } });
            graph.Output.Add(graph.Output.Single(o => o.Name == "present_state").Clone());
            graph.Output[^1].Name = "state_copy";
        }
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var attention = engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention");
        if (stateReadBetween)
        {
            Assert.That(attention.Detail, Does.Contain("output norm 'norm' kept: the gate 'z_late' is computed after the attention, whose outputs are read before the norm"));
        }
        else
        {
            Assert.That(attention.Detail, Does.Contain("normalizes and gates its output heads"));
            var nodes = engine.Handover.Model.Proto.Graph.Node.Select(n => n.Name).ToList();
            Assert.That(nodes.IndexOf("attention"), Is.GreaterThan(nodes.IndexOf("z_late")), "the nodes stay in topological order");
        }
        OnnxAssert.AgreesWithOrtAlone(engine, ort, Inputs(new Random(6)), $"{(fusedNorm ? "GatedRMSNorm" : "unfused chain")}, gate computed after the attention");
    }

    /// <summary>The attention in the main graph, the gated norm chain inside an If's then-branch: the norm folds there, not into the attention.</summary>
    [Test]
    public void ANormInsideAnIfBranchStaysOutOfTheAttentionOutside()
    {
        var then = new ModelBuilder(21, "then");
        string weight = then.Initializer("norm_weight", Enumerable.Range(0, Dv).Select(i => 0.5f + 0.05f * i).ToArray(), Dv);
        string packed = UnfusedNorm(then, "att_out", weight, "z");
        then.Node("Cast", [packed], outputNames: ["y_then"], attributes: [("to", (long)TensorElementType.Float)]);
        then.Output("y_then", F, Batch, Length, ValueWidth);
        var otherwise = new ModelBuilder(21, "else");
        otherwise.Node("Identity", ["z"], outputNames: ["y_else"]);
        otherwise.Output("y_else", F, Batch, Length, ValueWidth);

        var b = new ModelBuilder().Import("com.microsoft", 1);
        b.Input("q", F, Batch, Length, KeyWidth);
        b.Input("k", F, Batch, Length, KeyWidth);
        b.Input("v", F, Batch, Length, ValueWidth);
        AttentionStateInputs(b);
        b.Input("z", F, Batch, Length, ValueWidth);
        b.Input("cond", TensorProto.Types.DataType.Bool);
        b.Node("LinearAttention", ["q", "k", "v", "past_state", "decay", "beta"], domain: "com.microsoft", name: "attention", outputNames: ["att_out", "present_state"],
            attributes: [("q_num_heads", (long)QkHeads), ("kv_num_heads", (long)ValueHeads), ("update_rule", "gated_delta")]);
        b.Node("If", ["cond"], outputNames: ["output"], attributes: [("then_branch", then.Build()), ("else_branch", otherwise.Build())]);
        b.Output("output", F, Batch, Length, ValueWidth);
        b.Output("present_state", F, Batch, ValueHeads, Dk, Dv);
        var model = b.Build();

        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention").Detail, Does.Not.Contain("normalizes and gates"));
        Assert.That(engine.Handover.EngineNodes.Any(n => n.OpType == "SimplifiedLayerNormalization"), Is.True, "the chain in the branch folded into GatedRMSNorm");
        var random = new Random(4);
        var inputs = Inputs(random);
        inputs["q"] = Random(random, Batch, Length, KeyWidth);
        inputs["k"] = Random(random, Batch, Length, KeyWidth);
        inputs["v"] = Random(random, Batch, Length, ValueWidth);
        inputs["cond"] = TensorData.Create(new[] { true });
        inputs.Remove("x");
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, "gated norm in an If branch");
    }

    /// <summary>
    /// Split → q/k normalization → LinearAttention (gated_delta, Hv = 4 value heads over 2 key heads) → gated RMS norm with a
    /// weight of <paramref name="weightDims"/>, unfused as the builder writes it or com.microsoft GatedRMSNorm.
    /// </summary>
    private static OnnxModel Model(bool fusedNorm, long[] weightDims)
    {
        var b = new ModelBuilder().Import("com.microsoft", 1);
        string x = b.Input("x", F, Batch, Length, 2 * KeyWidth + ValueWidth);
        AttentionStateInputs(b);
        string z = b.Input("z", F, Batch, Length, ValueWidth);
        var split = b.Node("Split", [x, b.Int64s("sizes", KeyWidth, KeyWidth, ValueWidth)], outputs: 3, attributes: [("axis", -1L)]);
        string PerHead(string part, string input)
        {
            string heads = b.Op("Reshape", input, b.Int64s(part + "_heads", 0, 0, QkHeads, Dk));
            string unit = b.Node("LpNormalization", [heads], attributes: [("axis", -1L), ("p", 2L)])[0];
            return b.Op("Reshape", unit, b.Int64s(part + "_packed", 0, 0, KeyWidth));
        }
        string q = b.Op("Mul", PerHead("q", split[0]), b.Initializer("q_scale", [1f / MathF.Sqrt(Dk)], 1));
        var attention = b.Node("LinearAttention", [q, PerHead("k", split[1]), split[2], "past_state", "decay", "beta"], domain: "com.microsoft", name: "attention",
            outputNames: ["att_out", "present_state"],
            attributes: [("q_num_heads", (long)QkHeads), ("kv_num_heads", (long)ValueHeads), ("update_rule", "gated_delta"), ("scale", 1f)]);
        int count = (int)weightDims.Aggregate(1L, (a, d) => a * d);
        string weight = b.Initializer("norm_weight", Enumerable.Range(0, count).Select(i => 0.5f + 0.05f * i).ToArray(), weightDims);
        if (fusedNorm)
            b.Node("GatedRMSNorm", [attention[0], weight, z], domain: "com.microsoft", name: "norm", outputNames: ["output"], attributes: [("epsilon", 1e-6f)]);
        else
            b.Node("Cast", [UnfusedNorm(b, attention[0], weight, z)], outputNames: ["output"], attributes: [("to", (long)TensorElementType.Float)]);
        b.Output("output", F, Batch, Length, ValueWidth);
        b.Output("present_state", F, Batch, ValueHeads, Dk, Dv);
        return b.Build();
    }

    /// <summary>Reshape to heads → SimplifiedLayerNormalization → Reshape back → Cast → times SiLU(Cast(z)): the product, before the Cast back.</summary>
    private static string UnfusedNorm(ModelBuilder b, string input, string weight, string z)
    {
        string heads = b.Op("Reshape", input, b.Int64s("heads_shape", 0, 0, ValueHeads, Dv));
        var norm = b.Node("SimplifiedLayerNormalization", [heads, weight], attributes: [("epsilon", 1e-6f), ("axis", -1L), ("stash_type", 1L)])[0];
        string packed = b.Op("Reshape", norm, b.Int64s("packed_shape", 0, 0, ValueWidth));
        string Cast(string value) => b.Node("Cast", [value], attributes: [("to", (long)TensorElementType.Float)])[0];
        string zFloat = Cast(z);
        return b.Op("Mul", Cast(packed), b.Op("Mul", zFloat, b.Op("Sigmoid", zFloat)));
    }

    private static void AttentionStateInputs(ModelBuilder b)
    {
        b.Input("past_state", F, Batch, ValueHeads, Dk, Dv);
        b.Input("decay", F, Batch, Length, ValueHeads);
        b.Input("beta", F, Batch, Length, ValueHeads);
    }

    private static Dictionary<string, TensorData> Inputs(Random random) => new()
    {
        ["x"] = Random(random, Batch, Length, 2 * KeyWidth + ValueWidth),
        ["past_state"] = Random(random, Batch, ValueHeads, Dk, Dv),
        ["decay"] = TensorData.Create(Enumerable.Range(0, Batch * Length * ValueHeads).Select(i => -0.05f * (1 + i % 7)).ToArray(), Batch, Length, ValueHeads),
        ["beta"] = TensorData.Create(Enumerable.Range(0, Batch * Length * ValueHeads).Select(i => 0.2f + 0.1f * (i % 6)).ToArray(), Batch, Length, ValueHeads),
        ["z"] = Random(random, Batch, Length, ValueWidth),
    };

    private static TensorData Random(Random random, params long[] shape) =>
        TensorData.Create(SampleModels.Weights(random, 1, (int)shape.Aggregate(1L, (a, d) => a * d)), shape);
}

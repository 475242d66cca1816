using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// The Gated DeltaNet layer as ONNX Runtime GenAI's builder writes it for Qwen3.5 (and its fused-gate and int4 exports,
/// every inner value declared as the builder declares it, or none): it runs in
/// ONNX Runtime alone, and with the hand-over it agrees with ONNX Runtime alone over a prompt and 16 one-token steps,
/// each step fed every present state of the one before.
/// </summary>
[TestFixture]
public sealed class GatedDeltaNetLayerTests
{
    private const int PromptLength = 24, DecodeSteps = 16;

    /// <summary>
    /// Relative RMS difference allowed between the two paths, the project's tolerances: float16 rounds every tensor
    /// between the nodes on both paths (measured: about 2e-7 in float32, 6e-4 in float16). With int4 weights, out_proj's
    /// MatMulNBits (accuracy_level 4) rounds its input to int8 per block of 32, which turns the paths' differences into whole
    /// int8 steps where a value lies near a rounding boundary: the output's differences grow about fourfold (measured: 1.4e-6
    /// in float32, 5.7e-3 in float16), the states' do not; the output is allowed twice the tolerance.
    /// </summary>
    private static double Tolerance(TensorElementType type, bool int4Weights, string output) =>
        (type == TensorElementType.Float ? Harness.Numerics.Fp32Tolerance : Harness.Numerics.Fp16Tolerance)
        * (int4Weights && output == GatedDeltaNetLayer.Output ? 2 : 1);

    [TestCase(TensorElementType.Float, false, false)]
    [TestCase(TensorElementType.Float, true, false)]
    [TestCase(TensorElementType.Float16, false, false)]
    [TestCase(TensorElementType.Float16, true, false)]
    [TestCase(TensorElementType.Float, false, true)]
    [TestCase(TensorElementType.Float, true, true)]
    [TestCase(TensorElementType.Float16, false, true)]
    [TestCase(TensorElementType.Float, false, false, false)]
    [TestCase(TensorElementType.Float, false, true, false)]
    [TestCase(TensorElementType.Float16, true, true, false)]
    public void HandoverAgreesWithOrtAloneOverPrefillAndDecode(TensorElementType type, bool fusedGates, bool int4Weights, bool declareValues = true)
    {
        var spec = new GatedDeltaNetSpec { ElementType = type, FusedGates = fusedGates, Int4Weights = int4Weights, DeclareValues = declareValues };
        var model = GatedDeltaNetLayer.Model(spec);
        Assert.That(model.NodeOpTypes.Count(t => t == (int4Weights ? "MatMulNBits" : "MatMul")), Is.EqualTo(5), "the five projections");
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        string[] taken = fusedGates
            ? ["CausalConvWithState", "LinearAttentionGate", "LinearAttention", "GatedRMSNorm"]
            : ["CausalConvWithState", "LinearAttention", "SimplifiedLayerNormalization"];
        Assert.That(engine.Handover.EngineNodes.Select(n => n.OpType), Is.EqualTo(taken), "nodes the engine takes over");
        Assert.That(engine.Handover.EngineNodes.First().Detail, Does.Contain("Transposes").And.Contain("folded in"));
        Assert.That(engine.Handover.Model.NodeOpTypes, Has.None.EqualTo("Transpose"));
        Assert.That(engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention").Detail, Does.Contain("reads the packed rows"));
        Assert.That(engine.Handover.Model.NodeOpTypes, Has.None.AnyOf("Split", "LpNormalization"), "Split and the q/k normalizations folded into the attention");
        Assert.That(engine.Handover.Model.NodeOpTypes.Count(t => t is "Sigmoid" or "Cast"), Is.EqualTo(fusedGates ? 0 : 3),
            "the gated norm chain folded into one GatedRMSNorm: only beta's Sigmoid and the decay's two Casts stay");

        var ortStates = ZeroStates(model);
        var engineStates = ZeroStates(model);
        var random = new Random(7);
        int call = 0;
        foreach (int length in new[] { PromptLength }.Concat(Enumerable.Repeat(1, DecodeSteps)))
        {
            string step = call++ == 0 ? "prefill" : $"decode step {call - 1}";
            var hidden = Hidden(random, type, length, spec.Hidden);
            var byOrt = ort.Run(Inputs(hidden, ortStates));
            var byEngine = engine.Run(Inputs(hidden, engineStates));
            OnnxAssert.Shape(byEngine[GatedDeltaNetLayer.Output], 1, length, spec.Hidden);
            OnnxAssert.Shape(byEngine[GatedDeltaNetLayer.PresentConvState], 1, spec.ConvChannels, spec.ConvKernel - 1);
            OnnxAssert.Shape(byEngine[GatedDeltaNetLayer.PresentRecurrentState], 1, spec.ValueHeads, spec.KeyDim, spec.ValueDim);
            foreach (var name in engine.OutputNames)
            {
                var values = OnnxAssert.Floats(byOrt[name]);
                Assert.That(values.All(float.IsFinite) && values.Any(v => v != 0), Is.True, $"{step}: ORT's {name} is finite and not all zeros");
                OnnxAssert.Close(byEngine[name], byOrt[name], $"{step}: {name}, hand-over vs ORT alone", Tolerance(type, int4Weights, name));
            }
            ortStates = Presents(byOrt);
            engineStates = Presents(byEngine);
        }
    }

    [Test]
    public void FixedBatchAndLengthRunAlikeOnBothPaths()
    {
        var spec = new GatedDeltaNetSpec { Batch = 2, Length = 8 };
        var model = GatedDeltaNetLayer.Model(spec);
        Assert.That(model.Inputs.Single(i => i.Name == GatedDeltaNetLayer.Input).Dims, Is.EqualTo(new[] { "2", "8", "64" }));
        var inputs = Inputs(Hidden(new Random(5), TensorElementType.Float, 8, spec.Hidden, batch: 2), ZeroStates(model));
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var byOrt = ort.Run(inputs);
        var byEngine = engine.Run(inputs);
        foreach (var name in engine.OutputNames)
            OnnxAssert.Close(byEngine[name], byOrt[name], $"{name}, hand-over vs ORT alone");
    }

    /// <summary>
    /// The plan names every node its engine nodes replace, the folded ones too, and no projection; ORT alone's profile, read by
    /// those names, times them in every run (what `bench-model` compares the engine's nodes with).
    /// </summary>
    [Test]
    public void ThePlanNamesEveryNodeTheEngineReplacesAndTheProfileTimesThem()
    {
        var model = GatedDeltaNetLayer.Model(new GatedDeltaNetSpec());
        var plan = HandoverRewriter.Rewrite(model);
        var original = OnnxModel.AllGraphs(model.Graph).SelectMany(g => g.Node).ToArray();
        var keptByOrt = plan.Model.Graph.Node.Where(n => n.Domain != HandoverRewriter.EngineDomain).Select(n => n.Name).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(plan.ReplacedNodeNames.Concat(keptByOrt), Is.EquivalentTo(original.Select(n => n.Name)), "each node replaced or kept, once");
            Assert.That(plan.ReplacedNodeNames, Is.SupersetOf(original
                .Where(n => n.OpType is "CausalConvWithState" or "Transpose" or "Split" or "LpNormalization" or "LinearAttention" or "SimplifiedLayerNormalization")
                .Select(n => n.Name)));
            Assert.That(plan.ReplacedNodeNames, Has.None.AnyOf(original.Where(n => n.OpType == "MatMul").Select(n => n.Name).ToArray()), "the projections stay with ORT");
            Assert.That(plan.EngineKernelNodeNames, Is.EquivalentTo(original.Where(n => n.OpType == "LinearAttention").Select(n => n.Name)));
        });

        const int runs = 3;
        string file;
        using (var ort = ModelSession.Open(model, OnnxTestHost.Options(HandoverBackend.None) with { ProfilePrefix = Path.Combine(Path.GetTempPath(), $"engine-test-profile-{Environment.ProcessId}") }))
        {
            var inputs = Inputs(Hidden(new Random(3), TensorElementType.Float, 16, new GatedDeltaNetSpec().Hidden), ZeroStates(model));
            for (int i = 0; i < runs; i++) ort.Run(inputs);
            file = ort.EndProfiling();
        }
        try
        {
            double[] replaced = OrtProfile.MillisecondsPerRun(file, n => plan.ReplacedNodeNames.Contains(n.Name));
            double[] all = OrtProfile.MillisecondsPerRun(file, null);
            Assert.That(replaced, Has.Length.EqualTo(runs).And.All.GreaterThan(0.0));
            Assert.That(replaced.Zip(all, (r, a) => r < a), Is.All.True, "the projections' time is not among the replaced nodes'");
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>An empty request (no tokens, or no batch) gives an empty output, the states passed on, as ORT alone gives them.</summary>
    [TestCase(false, 1, 0)]
    [TestCase(true, 1, 0)]
    [TestCase(false, 0, 5)]
    public void AnEmptyRequestRunsAsOrtAloneRunsIt(bool fusedGates, int batch, int length)
    {
        var spec = new GatedDeltaNetSpec { FusedGates = fusedGates };
        var model = GatedDeltaNetLayer.Model(spec);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var states = ModelInputs.Random(model, new Dictionary<string, long> { ["batch_size"] = batch, ["sequence_length"] = 1 }, seed: 3)
            .Where(p => p.Key != GatedDeltaNetLayer.Input).ToDictionary();
        var inputs = Inputs(Hidden(new Random(5), TensorElementType.Float, length, spec.Hidden, batch), states);
        var byOrt = ort.Run(inputs);
        var byEngine = engine.Run(inputs);
        foreach (var name in engine.OutputNames)
        {
            Assert.That(byEngine[name].Shape, Is.EqualTo(byOrt[name].Shape), name);
            Assert.That(OnnxAssert.Floats(byEngine[name]), Is.EqualTo(OnnxAssert.Floats(byOrt[name])), name);
        }
    }

    [TestCase(false, new[] { "CausalConvWithState", "LinearAttention", "LpNormalization", "SimplifiedLayerNormalization", "Softplus" })]
    [TestCase(true, new[] { "CausalConvWithState", "LinearAttention", "LpNormalization", "LinearAttentionGate", "GatedRMSNorm" })]
    public void TheLayerHasTheNodesOfTheBuildersExport(bool fusedGates, string[] opTypes)
    {
        var model = GatedDeltaNetLayer.Model(new GatedDeltaNetSpec { FusedGates = fusedGates });
        Assert.That(model.NodeOpTypes, Is.SupersetOf(opTypes));
        Assert.That(model.NodeOpTypes.Count(t => t == "MatMul"), Is.EqualTo(5), "in_proj_qkv, in_proj_z, in_proj_b, in_proj_a, out_proj");
        Assert.That(model.NodeOpTypes.Count(t => t == "LpNormalization"), Is.EqualTo(2), "q and k");
        string[] unfused = ["SimplifiedLayerNormalization", "Softplus"], fused = ["LinearAttentionGate", "GatedRMSNorm"];
        Assert.That(model.NodeOpTypes, Has.None.AnyOf(fusedGates ? unfused : fused));
    }

    [Test]
    public void ValueHeadsNotAMultipleOfQueryHeadsAreRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => GatedDeltaNetLayer.Model(new GatedDeltaNetSpec { QkHeads = 3, ValueHeads = 4 }));
        Assert.That(e!.Message, Does.StartWith("value heads (4) must be a multiple of query/key heads (3)"));
    }

    /// <summary>
    /// A node a fold would remove that carries an attribute its op does not have at the model's opset (the layer imports
    /// ai.onnx 21): ORT alone refuses the model naming it, and the hand-over leaves the node where ORT refuses it the same,
    /// never runs the model with the attribute unread.
    /// </summary>
    [TestCase("q_l2norm/LpNormalization", "epsilon")]
    [TestCase("split_qkv/Split", "split")]
    [TestCase("q_scaled/Mul", "broadcast")]
    [TestCase("qkv_transpose/Transpose", "axis")]
    [TestCase("gated_norm/z_sigmoid/Sigmoid", "alpha")]
    public void ANodeWithAnAttributeItsOpLacksIsNotFoldedAway(string node, string attribute)
    {
        var spec = new GatedDeltaNetSpec();
        var model = GatedDeltaNetLayer.Model(spec);
        var target = model.Proto.Graph.Node.Single(n => n.Name == "/model/layers.0/linear_attn/" + node);
        int keyWidth = spec.QkHeads * spec.KeyDim;
        target.Attribute.Add(attribute == "split"
            ? new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Ints, Ints = { keyWidth, keyWidth, spec.ValueHeads * spec.ValueDim } }
            : new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        var plan = HandoverRewriter.Rewrite(model);
        Assert.That(plan.Model.Graph.Node.Any(n => n.Name == target.Name), Is.True, "the node is left to ORT");
        Assert.That(plan.Nodes.Select(n => n.Detail).Concat(plan.Notes),
            Has.Some.Contains($"'{target.Name}' has attribute '{attribute}', which the fold does not take at ai.onnx opset 21"));
        foreach (var backend in new[] { HandoverBackend.None, HandoverBackend.Cpu })
        {
            var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, backend).Dispose(), $"{backend}");
            Assert.That(e!.Message, Does.Contain($"Unrecognized attribute: {attribute} for operator {target.OpType}"), $"{backend}");
        }
    }

    /// <summary>
    /// A node a fold would remove with fewer inputs or outputs than its op has: the rewrite leaves it to ORT, which refuses the
    /// model naming it with the hand-over as it does alone, never fails on an index past the node's inputs.
    /// </summary>
    [TestCase("gated_norm/input_flat/Reshape", 1)]
    [TestCase("gated_norm/norm_unflat/Reshape", 1)]
    [TestCase("gated_norm/z_sigmoid/Sigmoid", 0)]
    [TestCase("gated_norm/z_cast/Cast", 0)]
    [TestCase("k_l2norm/LpNormalization", 0)]
    [TestCase("conv_out/Transpose", -1)]
    public void ANodeMissingAnInputOrOutputItsOpHasIsLeftToOrt(string node, int inputs)
    {
        var model = GatedDeltaNetLayer.Model(new GatedDeltaNetSpec());
        var target = model.Proto.Graph.Node.Single(n => n.Name == "/model/layers.0/linear_attn/" + node);
        // -1: no output instead.
        if (inputs < 0) target.Output.Clear();
        while (inputs >= 0 && target.Input.Count > inputs) target.Input.RemoveAt(target.Input.Count - 1);
        var plan = HandoverRewriter.Rewrite(model);
        Assert.That(plan.Model.Graph.Node.Any(n => n.Name == target.Name), Is.True, "the node is left to ORT");
        foreach (var backend in new[] { HandoverBackend.None, HandoverBackend.Cpu })
        {
            var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, backend).Dispose(), $"{backend}");
            Assert.That(e!.Message, Does.Contain("ONNX Runtime could not load the model"), $"{backend}");
        }
    }

    /// <summary>
    /// The norm's weight given as a Constant node, as exporters that inline small constants write it, instead of an
    /// initializer: the gated norm still folds into the attention, and the layer agrees with ONNX Runtime alone.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void ANormWeightGivenAsAConstantNodeFoldsAsAnInitializerDoes(bool fusedGates)
    {
        var spec = new GatedDeltaNetSpec { FusedGates = fusedGates };
        var model = GatedDeltaNetLayer.Model(spec);
        var weight = model.Graph.Initializer.Single(t => t.Name.EndsWith("/norm.weight", StringComparison.Ordinal));
        model.Graph.Initializer.Remove(weight);
        var constant = new NodeProto { OpType = "Constant", Name = weight.Name + "/Constant", Output = { weight.Name } };
        constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = weight });
        model.Graph.Node.Insert(0, constant);

        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineKernelNodes, Is.EqualTo(fusedGates ? 2 : 1), "the attention, and the fused gate where the model has one");
        Assert.That(engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention").Detail, Does.Contain("normalizes and gates its output heads"));
        Assert.That(engine.Handover.Model.NodeOpTypes, Has.None.AnyOf("SimplifiedLayerNormalization", "GatedRMSNorm"));
        var inputs = Inputs(Hidden(new Random(11), TensorElementType.Float, 9, spec.Hidden, batch: 2),
            ModelInputs.Random(model, new Dictionary<string, long> { ["batch_size"] = 2, ["sequence_length"] = 1 }).Where(p => p.Key != GatedDeltaNetLayer.Input).ToDictionary());
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, "norm weight as a Constant node");
    }

    /// <summary>
    /// Every int64 constant (Reshape shapes, Split sizes) and float32 scalar of the layer given as a Constant node's value_ints,
    /// value_int or value_float, as exporters write small constants: the layer folds as it does with initializers and agrees
    /// with ONNX Runtime alone.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void ConstantsGivenAsConstantNodeNumbersFoldAsInitializersDo(bool fusedGates)
    {
        var spec = new GatedDeltaNetSpec { FusedGates = fusedGates };
        var model = GatedDeltaNetLayer.Model(spec);
        int folded = HandoverRewriter.Rewrite(model).EngineKernelNodes;
        int moved = 0;
        foreach (var t in model.Graph.Initializer.ToArray())
        {
            var attribute = (TensorProto.Types.DataType)t.DataType switch
            {
                TensorProto.Types.DataType.Int64 when t.Dims.Count == 1 => new AttributeProto { Name = "value_ints", Type = AttributeProto.Types.AttributeType.Ints, Ints = { Int64s(t) } },
                TensorProto.Types.DataType.Int64 when t.Dims.Count == 0 => new AttributeProto { Name = "value_int", Type = AttributeProto.Types.AttributeType.Int, I = Int64s(t)[0] },
                TensorProto.Types.DataType.Float when t.Dims.Count == 0 => new AttributeProto { Name = "value_float", Type = AttributeProto.Types.AttributeType.Float, F = Floats(t)[0] },
                _ => null,
            };
            if (attribute is null) continue;
            model.Graph.Initializer.Remove(t);
            model.Graph.Node.Insert(0, new NodeProto { OpType = "Constant", Name = t.Name + "/Constant", Output = { t.Name }, Attribute = { attribute } });
            moved++;
        }
        Assert.That(moved, Is.GreaterThanOrEqualTo(3), "the layer's Reshape shapes, Split sizes and the q scale");

        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineKernelNodes, Is.EqualTo(folded), "as many engine nodes as with initializers");
        Assert.That(engine.Handover.Model.NodeOpTypes, Has.None.AnyOf("Split", "LpNormalization", "SimplifiedLayerNormalization", "GatedRMSNorm"));
        var inputs = Inputs(Hidden(new Random(12), TensorElementType.Float, 9, spec.Hidden, batch: 2),
            ModelInputs.Random(model, new Dictionary<string, long> { ["batch_size"] = 2, ["sequence_length"] = 1 }).Where(p => p.Key != GatedDeltaNetLayer.Input).ToDictionary());
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, "constants as Constant node numbers");
    }

    private static long[] Int64s(TensorProto t) =>
        t.HasRawData ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(t.RawData.Span).ToArray() : t.Int64Data.ToArray();

    private static float[] Floats(TensorProto t) =>
        t.HasRawData ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray() : t.FloatData.ToArray();

    /// <summary>Hidden states N(0, 1), (batch, length, width).</summary>
    private static TensorData Hidden(Random random, TensorElementType type, int length, int width, int batch = 1)
    {
        var values = SampleModels.Weights(random, 1, batch * length * width);
        return type == TensorElementType.Float16
            ? TensorData.Create(Array.ConvertAll(values, v => (Half)v), batch, length, width)
            : TensorData.Create(values, batch, length, width);
    }

    private static Dictionary<string, TensorData> ZeroStates(OnnxModel model) =>
        ModelInputs.Random(model, new Dictionary<string, long> { ["batch_size"] = 1, ["sequence_length"] = 1 })
            .Where(p => p.Key != GatedDeltaNetLayer.Input).ToDictionary();

    private static Dictionary<string, TensorData> Inputs(TensorData hidden, Dictionary<string, TensorData> states) =>
        new(states) { [GatedDeltaNetLayer.Input] = hidden };

    private static Dictionary<string, TensorData> Presents(IReadOnlyDictionary<string, TensorData> outputs) => new()
    {
        [GatedDeltaNetLayer.PastConvState] = outputs[GatedDeltaNetLayer.PresentConvState],
        [GatedDeltaNetLayer.PastRecurrentState] = outputs[GatedDeltaNetLayer.PresentRecurrentState],
    };
}

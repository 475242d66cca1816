using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// Seeded random Gated DeltaNet layers (as ONNX Runtime GenAI's builder writes Qwen3.5's, and the forms its rewrites meet:
/// the fused gate without the fused norm and the other way round, ai.onnx-27 CausalConvWithState and LinearAttention, and
/// edits of the export that the folds must take or refuse) and small hybrid decoders, run by ONNX Runtime 1.32 alone and by
/// the hand-over over a prefill from random nonzero past states and single-token decode steps, each fed every present
/// state of the one before (a layer's session then takes a second request of another size; a decoder also runs through
/// Generator): every output and present state finite and within 1e-5 relative RMS (float16 models 5e-3) of ORT alone's, or
/// as close as ORT alone's to the oracle, ORT alone on the float32 model with exact sigmoids (<see cref="ExactSigmoids"/>). The hand-over writes into outputs filled with NaN first, so an element it leaves
/// unwritten shows. Cases ORT alone refuses are listed, not judged. ENGINE_LAYER_FUZZ_SEED, ENGINE_LAYER_FUZZ_COUNT and
/// ENGINE_DECODER_FUZZ_COUNT widen the sweep; ENGINE_LAYER_FUZZ_ONLY=N runs layer N of it alone (a failure reproduced);
/// ENGINE_LAYER_FUZZ_GPU=1 runs it on the GPU backend.
/// </summary>
[TestFixture]
public sealed class LayerDifferentialTests
{
    private const string Prefix = "/model/layers.0/linear_attn/";

    /// <summary>The hand-over's backend: the CPU kernels, or with ENGINE_LAYER_FUZZ_GPU=1 the GPU kernels (ILGPU's CPU accelerator when no GPU is present; slow).</summary>
    private static HandoverBackend Backend => Environment.GetEnvironmentVariable("ENGINE_LAYER_FUZZ_GPU") == "1" ? HandoverBackend.Gpu : HandoverBackend.Cpu;

    /// <summary>
    /// One drawn layer: the spec (its FusedGates when gate and norm are both fused), the gate and norm forms, whether the
    /// convolution and (for ungrouped heads) the attention are ai.onnx-27 nodes, the run's batch and lengths.
    /// </summary>
    private sealed record LayerCase(string Label, GatedDeltaNetSpec Spec, bool FusedGate, bool FusedNorm, bool Opset27, int Batch, int PrefillLength, int DecodeSteps,
        IReadOnlyList<Edit> Edits, (int Batch, int Length)? Second);

    /// <summary>A change to the builder's export in a form the rewrites claim to handle (or to refuse), named for the label.</summary>
    private sealed record Edit(string Name, Action<GraphProto, GatedDeltaNetSpec> Apply);

    private static readonly Edit[] Edits =
    [
        new("conv activation swish", (g, _) => SetString(Node(g, "CausalConvWithState"), "activation", "swish")),
        new("conv activation none", (g, _) => SetString(Node(g, "CausalConvWithState"), "activation", "none")),
        new("conv activation default", (g, _) => Remove(Node(g, "CausalConvWithState"), "activation")),
        new("no conv bias", (g, _) => Node(g, "CausalConvWithState").Input[2] = ""),
        new("q scale first", (g, _) => Swap(Node(g, "q_scaled/Mul"))),
        new("attention scale default", (g, _) => Remove(Node(g, "LinearAttention"), "scale")),
        new("attention scale 0.5", (g, _) => SetFloat(Node(g, "LinearAttention"), "scale", 0.5f)),
        new("chunk 16", (g, _) => SetInt(Node(g, "LinearAttention"), "chunk_size", 16)),
        new("chunk 64", (g, _) => SetInt(Node(g, "LinearAttention"), "chunk_size", 64)),
        new("LpNormalization axis 3", (g, _) => { SetInt(Node(g, "q_l2norm/LpNormalization"), "axis", 3); SetInt(Node(g, "k_l2norm/LpNormalization"), "axis", 3); }),
        new("packed shape -1", (g, _) =>
        {
            string shape = Int64s(g, Prefix + "packed_minus_one", 0, 0, -1);
            foreach (var part in new[] { "q_l2norm/unflat/Reshape", "k_l2norm/unflat/Reshape" }) Node(g, part).Input[1] = shape;
            if (g.Node.Any(n => n.Name == Prefix + "gated_norm/norm_unflat/Reshape")) Node(g, "gated_norm/norm_unflat/Reshape").Input[1] = shape;
        }),
        new("norm activation swish", (g, _) => { if (Norm(g) is { OpType: "GatedRMSNorm" } n) SetString(n, "activation", "swish"); }),
        new("norm activation sigmoid", (g, _) => { if (Norm(g) is { OpType: "GatedRMSNorm" } n) SetString(n, "activation", "sigmoid"); }),
        new("norm epsilon default", (g, _) => Remove(Norm(g), "epsilon")),
        new("conv output read", (g, s) => Expose(g, Node(g, "conv_out/Transpose").Output[0], s)),
        new("q read", (g, s) => Expose(g, Node(g, "q_scaled/Mul").Output[0], s)),
        new("k read", (g, s) => Expose(g, Node(g, "k_l2norm/unflat/Reshape").Output[0], s)),
        new("attention output read", (g, s) => Expose(g, Node(g, "LinearAttention").Output[0], s)),
        new("channels-first conv read", (g, s) => Expose(g, Node(g, "CausalConvWithState").Output[0], s)),
        new("norm over the whole width", (g, s) =>
        {
            if (Norm(g) is not { OpType: "GatedRMSNorm" } norm) return;
            var weight = g.Initializer.Single(t => t.Name == norm.Input[1]);
            norm.Input[1] = Tiled(g, weight, s.ValueHeads);
        }),
        new("norm scale [1, dv]", (g, s) =>
        {
            var weight = g.Initializer.Single(t => t.Name == Norm(g).Input[1]);
            weight.Dims.Clear();
            weight.Dims.AddRange([1, s.ValueDim]);
        }),
        new("no past states", (g, _) =>
        {
            Node(g, "CausalConvWithState").Input[3] = "";
            Node(g, "LinearAttention").Input[3] = "";
            foreach (var name in new[] { GatedDeltaNetLayer.PastConvState, GatedDeltaNetLayer.PastRecurrentState }) g.Input.Remove(g.Input.Single(i => i.Name == name));
        }),
        new("present conv state unread", (g, _) => g.Output.Remove(g.Output.Single(o => o.Name == GatedDeltaNetLayer.PresentConvState))),
        // Either input of the Mul: "q scale first" may have swapped them.
        new("q scale rank 0", (g, _) => g.Initializer.Single(t => Node(g, "q_scaled/Mul").Input.Contains(t.Name)).Dims.Clear()),
        new("shapes undeclared", (g, _) =>
        {
            foreach (var info in g.Input.Concat(g.Output)) info.Type.TensorType.Shape = null;
        }),
        new("gate without beta", (g, _) =>
        {
            if (g.Node.SingleOrDefault(n => n.Name == Prefix + "gate/LinearAttentionGate") is not { } gate) return;
            var sigmoid = new NodeProto { OpType = "Sigmoid", Name = Prefix + "beta/Sigmoid", Input = { gate.Input[3] }, Output = { gate.Output[1] } };
            gate.Input.RemoveAt(3);
            gate.Output.RemoveAt(1);
            g.Node.Insert(g.Node.IndexOf(gate), sigmoid);
        }),
        new("present recurrent state unread", (g, _) => g.Output.Remove(g.Output.Single(o => o.Name == GatedDeltaNetLayer.PresentRecurrentState))),
    ];

    private static T Pick<T>(Random r, params T[] values) => values[r.Next(values.Length)];

    private static LayerCase DrawLayer(Random r, int index)
    {
        int qkHeads = r.Next(1, 5), valueHeads = qkHeads * Pick(r, 1, 2, 4);
        int[] dims = [8, 16, 24, 32, 48, 64, 100, 128];
        bool fusedGate = r.Next(2) == 0, fusedNorm = r.Next(3) == 0 ? !fusedGate : fusedGate;
        bool half = r.Next(3) == 0, opset27 = r.Next(5) == 0;
        int batch = r.Next(1, 4), length = Pick(r, 0, 1, 2, 31, 32, 33, 63, 64, 65, 130, 257);
        // Fixed dims: the batch only (decode steps follow), or batch and length (the prefill alone).
        int form = r.Next(4);
        var spec = new GatedDeltaNetSpec
        {
            Hidden = Pick(r, 16, 32, 48, 64), QkHeads = qkHeads, ValueHeads = valueHeads, KeyDim = Pick(r, dims), ValueDim = Pick(r, dims),
            ConvKernel = r.Next(2, 6), FusedGates = fusedGate && fusedNorm,
            ElementType = half ? TensorElementType.Float16 : TensorElementType.Float,
            Batch = form >= 2 ? batch : null, Length = form == 3 ? length : null,
            NormEpsilon = Pick(r, 1e-6f, 1e-5f, 1e-3f, 0.1f), Seed = 100 + index,
        };
        int decodeSteps = form == 3 ? 0 : 3;
        string label = $"layer#{index} D{spec.Hidden} H{qkHeads}/{valueHeads} dk{spec.KeyDim} dv{spec.ValueDim} K{spec.ConvKernel} " +
            $"gate {(fusedGate ? "fused" : "chain")} norm {(fusedNorm ? "fused" : "chain")} eps {spec.NormEpsilon} B{batch} T{length}+{decodeSteps}" +
            (form >= 2 ? " fixed batch" : "") + (form == 3 ? " fixed length" : "") + (opset27 ? " opset27" : "") + (half ? " fp16" : "");
        var edits = Enumerable.Range(0, Pick(r, 0, 0, 1, 1, 2)).Select(_ => Pick(r, Edits)).Distinct().ToArray();
        if (edits.Length > 0) label += ", " + string.Join(", ", edits.Select(e => e.Name));
        (int, int)? second = form == 0 && r.Next(2) == 0 ? (r.Next(1, 4), Pick(r, 1, 3, 17, 64, 100)) : null;
        if (second is var (secondBatch, secondLength)) label += $", then B{secondBatch} T{secondLength}";
        return new LayerCase(label, spec, fusedGate, fusedNorm, opset27, batch, length, decodeSteps, edits, second);
    }

    /// <summary>The layer's model in the case's forms, made by editing the builder's export.</summary>
    private static OnnxModel LayerModel(LayerCase c)
    {
        var model = GatedDeltaNetLayer.Model(c.Spec);
        if (c.FusedGate && !c.FusedNorm) FuseGate(model.Graph);
        if (c.FusedNorm && !c.FusedGate) FuseNorm(model.Graph);
        foreach (var edit in c.Edits) edit.Apply(model.Graph, c.Spec);
        if (c.Opset27) ToOpset27(model, c.Spec);
        return model;
    }

    /// <summary>The gated norm: the fused node, or the chain's SimplifiedLayerNormalization.</summary>
    private static NodeProto Norm(GraphProto graph) =>
        graph.Node.Single(n => n.Name == Prefix + "gated_norm/GatedRMSNorm" || n.Name == Prefix + "gated_norm/SimplifiedLayerNormalization");

    private static void Remove(NodeProto node, string attribute)
    {
        if (node.Attribute.SingleOrDefault(a => a.Name == attribute) is AttributeProto given) node.Attribute.Remove(given);
    }

    private static void SetString(NodeProto node, string name, string value)
    {
        Remove(node, name);
        node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(value) });
    }

    private static void SetInt(NodeProto node, string name, long value)
    {
        Remove(node, name);
        node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });
    }

    private static void SetFloat(NodeProto node, string name, float value)
    {
        Remove(node, name);
        node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value });
    }

    /// <summary>A copy of <paramref name="weight"/> repeated <paramref name="times"/> times end to end: its name.</summary>
    private static string Tiled(GraphProto graph, TensorProto weight, int times)
    {
        var tiled = weight.Clone();
        tiled.Name = weight.Name + "/tiled";
        tiled.Dims.Clear();
        tiled.Dims.Add(weight.Dims.Aggregate(1L, (a, n) => a * n) * times);
        tiled.RawData = Google.Protobuf.ByteString.CopyFrom(Enumerable.Repeat(weight.RawData.ToByteArray(), times).SelectMany(bytes => bytes).ToArray());
        graph.Initializer.Add(tiled);
        return tiled.Name;
    }

    private static void Swap(NodeProto node) => (node.Input[0], node.Input[1]) = (node.Input[1], node.Input[0]);

    private static string Int64s(GraphProto graph, string name, params long[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.Add(values.Length);
        tensor.Int64Data.AddRange(values);
        graph.Initializer.Add(tensor);
        return name;
    }

    /// <summary>An intermediate tensor made a graph output too (of the layer's type, shape not declared): a second reader the folds must respect.</summary>
    private static void Expose(GraphProto graph, string value, GatedDeltaNetSpec spec) =>
        graph.Output.Add(new ValueInfoProto
        {
            Name = value,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)spec.ElementType } },
        });

    private static NodeProto Node(GraphProto graph, string part) => graph.Node.Single(n => n.Name == Prefix + part);

    /// <summary>The chains of beta (Sigmoid) and the decay (Cast, Add, Softplus, Mul, Cast) as one com.microsoft LinearAttentionGate.</summary>
    private static void FuseGate(GraphProto graph)
    {
        NodeProto sigmoid = Node(graph, "beta/Sigmoid"), aCast = Node(graph, "decay/a_cast/Cast"), add = Node(graph, "decay/Add"),
            softplus = Node(graph, "decay/Softplus"), mul = Node(graph, "decay/Mul"), back = Node(graph, "decay/g_cast/Cast");
        var gate = new NodeProto
        {
            OpType = "LinearAttentionGate", Domain = HandoverRewriter.MicrosoftDomain, Name = Prefix + "gate/LinearAttentionGate",
            Input = { aCast.Input[0], add.Input[1], mul.Input[0], sigmoid.Input[0] }, Output = { back.Output[0], sigmoid.Output[0] },
        };
        graph.Node.Insert(graph.Node.IndexOf(sigmoid), gate);
        foreach (var node in new[] { sigmoid, aCast, add, softplus, mul, back }) graph.Node.Remove(node);
    }

    /// <summary>The gated norm chain (Reshape, SimplifiedLayerNormalization, Reshape, SiLU(z) in float32, Cast) as one com.microsoft GatedRMSNorm.</summary>
    private static void FuseNorm(GraphProto graph)
    {
        string[] parts = ["input_flat/Reshape", "SimplifiedLayerNormalization", "norm_unflat/Reshape", "z_cast/Cast", "z_sigmoid/Sigmoid",
            "z_silu/Mul", "norm_cast/Cast", "gated_fp32/Mul", "gated/Cast"];
        var chain = parts.Select(p => Node(graph, "gated_norm/" + p)).ToArray();
        var norm = new NodeProto
        {
            OpType = "GatedRMSNorm", Domain = HandoverRewriter.MicrosoftDomain, Name = Prefix + "gated_norm/GatedRMSNorm",
            Input = { chain[0].Input[0], chain[1].Input[1], chain[3].Input[0] }, Output = { chain[^1].Output[0] },
        };
        norm.Attribute.Add(chain[1].Attribute.Single(a => a.Name == "epsilon"));
        graph.Node.Insert(graph.Node.IndexOf(chain[0]), norm);
        foreach (var node in chain) graph.Node.Remove(node);
    }

    /// <summary>
    /// ai.onnx opset 27: the convolution as ai.onnx CausalConvWithState (which has no ndim), the attention as ai.onnx
    /// LinearAttention where its heads allow (ai.onnx wants q_num_heads a multiple of kv_num_heads: ungrouped here).
    /// </summary>
    private static void ToOpset27(OnnxModel model, GatedDeltaNetSpec spec)
    {
        foreach (var opset in model.Proto.OpsetImport.Where(o => o.Domain is "" or "ai.onnx")) opset.Version = 27;
        var conv = Node(model.Graph, "CausalConvWithState");
        conv.Domain = "";
        conv.Attribute.Remove(conv.Attribute.Single(a => a.Name == "ndim"));
        if (spec.QkHeads == spec.ValueHeads) Node(model.Graph, "LinearAttention").Domain = "";
    }

    private static TensorData Typed(bool half, float[] values, params long[] shape) =>
        half ? TensorData.Create(TestData.ToHalf(values), shape) : TensorData.Create(values, shape);

    /// <summary>What differs between ORT alone and the hand-over over the case's calls, or null (also null when ORT alone refuses it: not ours).</summary>
    private static string? CheckLayer(LayerCase c, int index, List<string> ortRefused)
    {
        var spec = c.Spec;
        bool half = spec.ElementType == TensorElementType.Float16;
        var model = LayerModel(c);
        var data = new TestData(3000 + index);
        Dictionary<string, TensorData> States(long b) => new()
        {
            [GatedDeltaNetLayer.PastConvState] = Typed(half, data.Normal(b * spec.ConvChannels * (spec.ConvKernel - 1)), b, spec.ConvChannels, spec.ConvKernel - 1),
            [GatedDeltaNetLayer.PastRecurrentState] = Typed(half, data.Normal(b * spec.ValueHeads * spec.KeyDim * spec.ValueDim, 0.5), b, spec.ValueHeads, spec.KeyDim, spec.ValueDim),
        };
        var magnitudes = new Random(3000 + index);
        Call Hidden(long b, int length, Dictionary<string, TensorData>? states = null)
        {
            // Now and then a token of zeros, a tiny one or a large one: q/k rows of (nearly) zero norm, saturated gates.
            var values = data.Normal(b * length * spec.Hidden);
            for (long row = 0; row < b * length; row++)
            {
                float magnitude = magnitudes.Next(8) == 0 ? Pick(magnitudes, 0f, 1e-3f, 8f) : 1f;
                for (int i = 0; i < spec.Hidden; i++) values[row * spec.Hidden + i] *= magnitude;
            }
            return new(new Dictionary<string, TensorData> { [GatedDeltaNetLayer.Input] = Typed(half, values, b, length, spec.Hidden) }, states);
        }
        var calls = new List<Call> { Hidden(c.Batch, c.PrefillLength, States(c.Batch)) };
        calls.AddRange(Enumerable.Range(0, c.DecodeSteps).Select(_ => Hidden(c.Batch, 1)));
        // The same session on a second request of another size (scratch and kernels made for the first must not leak into it).
        if (c.Second is var (batch, length)) calls.Add(Hidden(batch, length, States(batch)));
        var twin = ExactSigmoids(half ? LayerModel(c with { Spec = spec with { ElementType = TensorElementType.Float } }) : LayerModel(c));
        return Compare(c.Label, model, half, twin, calls, ortRefused, output => output switch
        {
            GatedDeltaNetLayer.PresentConvState => GatedDeltaNetLayer.PastConvState,
            GatedDeltaNetLayer.PresentRecurrentState => GatedDeltaNetLayer.PastRecurrentState,
            _ => null,
        });
    }

    /// <summary>
    /// The float32 model with every sigmoid ORT alone would take from its own kernels (Sigmoid, LinearAttentionGate's beta) made
    /// 1 / (1 + e^−x) from Exp, and LinearAttentionGate as its chain: ORT's CPU sigmoid is exact to about 1e-7 absolute, not
    /// relative (sigmoid(−12.37) = 4.2415e-6 comes out 4.2319e-6), and a beta that small carries the error into the state. The
    /// hand-over's sigmoid is exact to fp32 rounding, so ORT alone on this model is the oracle where the two paths part.
    /// </summary>
    private static OnnxModel ExactSigmoids(OnnxModel model)
    {
        var graph = model.Graph;
        string one = Prefix + "exact_sigmoid/one";
        graph.Initializer.Add(new TensorProto { Name = one, DataType = (int)TensorProto.Types.DataType.Float, FloatData = { 1f } });
        int made = 0;
        string Value(string name) => $"{Prefix}exact_sigmoid/{name}_{made++}";
        IEnumerable<NodeProto> Sigmoid(string x, string y)
        {
            string negative = Value("neg"), power = Value("exp"), sum = Value("sum");
            yield return new NodeProto { OpType = "Neg", Name = negative, Input = { x }, Output = { negative } };
            yield return new NodeProto { OpType = "Exp", Name = power, Input = { negative }, Output = { power } };
            yield return new NodeProto { OpType = "Add", Name = sum, Input = { power, one }, Output = { sum } };
            yield return new NodeProto { OpType = "Reciprocal", Name = Value("reciprocal"), Input = { sum }, Output = { y } };
        }
        foreach (var node in graph.Node.ToList())
        {
            IEnumerable<NodeProto>? replacement = null;
            if (node.OpType == "Sigmoid" && node.Domain is "" or "ai.onnx") replacement = Sigmoid(node.Input[0], node.Output[0]).ToList();
            else if (node.OpType == "LinearAttentionGate")
            {
                // decay = neg_exp_A · softplus(a + dt_bias); beta = sigmoid(b) where the gate gives it.
                string shifted = Value("shifted"), soft = Value("softplus");
                var chain = new List<NodeProto>
                {
                    new() { OpType = "Add", Name = shifted, Input = { node.Input[0], node.Input[1] }, Output = { shifted } },
                    new() { OpType = "Softplus", Name = soft, Input = { shifted }, Output = { soft } },
                    new() { OpType = "Mul", Name = Value("decay"), Input = { soft, node.Input[2] }, Output = { node.Output[0] } },
                };
                if (node.Output.Count > 1 && node.Output[1] != "") chain.AddRange(Sigmoid(node.Input[3], node.Output[1]));
                replacement = chain;
            }
            if (replacement is null) continue;
            int at = graph.Node.IndexOf(node);
            graph.Node.RemoveAt(at);
            foreach (var replacing in replacement.Reverse()) graph.Node.Insert(at, replacing);
        }
        return model;
    }

    /// <summary>The oracle's transform keeps the layer: on inputs whose sigmoids ORT gets right, ORT alone runs both alike.</summary>
    [TestCase(true)]
    [TestCase(false)]
    public void TheExactSigmoidTwinIsTheSameLayer(bool fusedGates)
    {
        var spec = new GatedDeltaNetSpec { Hidden = 32, QkHeads = 2, ValueHeads = 4, KeyDim = 16, ValueDim = 16, FusedGates = fusedGates, Seed = 5 };
        var data = new TestData(11);
        var inputs = new Dictionary<string, TensorData>
        {
            [GatedDeltaNetLayer.Input] = Typed(false, data.Normal(2 * 9 * spec.Hidden), 2, 9, spec.Hidden),
            [GatedDeltaNetLayer.PastConvState] = Typed(false, data.Normal(2 * spec.ConvChannels * (spec.ConvKernel - 1)), 2, spec.ConvChannels, spec.ConvKernel - 1),
            [GatedDeltaNetLayer.PastRecurrentState] = Typed(false, data.Normal(2 * spec.ValueHeads * spec.KeyDim * spec.ValueDim, 0.5), 2, spec.ValueHeads, spec.KeyDim, spec.ValueDim),
        };
        var twin = ExactSigmoids(GatedDeltaNetLayer.Model(spec));
        Assert.That(twin.Graph.Node.Select(n => n.OpType), Has.None.EqualTo("Sigmoid").And.None.EqualTo("LinearAttentionGate"));
        using var ort = OnnxTestHost.Open(GatedDeltaNetLayer.Model(spec), HandoverBackend.None);
        using var exact = OnnxTestHost.Open(twin, HandoverBackend.None);
        var expected = ort.Run(inputs);
        var actual = exact.Run(inputs);
        foreach (var (name, value) in expected)
            Assert.That(Numerics.RelativeRms(OnnxAssert.Floats(actual[name]), OnnxAssert.Floats(value)), Is.LessThanOrEqualTo(1e-6), name);
    }

    /// <summary>One call of a session: its inputs, and the states it starts from, or null to carry on from the call before.</summary>
    private sealed record Call(IReadOnlyDictionary<string, TensorData> Inputs, Dictionary<string, TensorData>? FreshStates);

    /// <summary>
    /// Runs the calls on both paths, each from its fresh states or with the states the same path's previous call gave
    /// (<paramref name="pastOf"/> names the state input an output feeds, or null), and compares every output of every call.
    /// States the model does not take (an edit removed them) are left out. Every model comes with its float32 twin with exact
    /// sigmoids (the same weights), which ORT alone runs alongside on the same inputs: where the two paths sit farther apart
    /// than the tolerance (a float16 head whose q·k nearly cancels, normalized back to full size, turns one rounding into a large
    /// difference; ORT's sigmoid is off by 2e-3 relative at −12), the hand-over must be as close to the twin as ORT alone is.
    /// </summary>
    private static string? Compare(string label, OnnxModel model, bool half, OnnxModel float32Twin, IReadOnlyList<Call> calls, List<string> ortRefused,
        Func<string, string?> pastOf)
    {
        ModelSession ort;
        try { ort = OnnxTestHost.Open(model, HandoverBackend.None); }
        catch (Exception e)
        {
            ortRefused.Add($"{label}: ORT alone does not open it: {e.GetType().Name}: {First(e.Message)}");
            return null;
        }
        using (ort)
        {
            ModelSession engine;
            try { engine = OnnxTestHost.Open(model, Backend); }
            catch (Exception e) { return $"{label}: ORT alone opens it, the hand-over does not: {e.GetType().Name}: {First(e.Message)}"; }
            using var twin = OnnxTestHost.Open(float32Twin, HandoverBackend.None);
            using (engine)
            {
                if (!engine.Handover.EngineNodes.Any(n => n.OpType == "LinearAttention"))
                    return $"{label}: the engine does not take the attention ({string.Join("; ", engine.Handover.Nodes.Select(n => n.ToString()))})";
                var inputNames = model.Inputs.Select(i => i.Name).ToHashSet();
                var ortStates = new Dictionary<string, TensorData>();
                var engineStates = new Dictionary<string, TensorData>();
                var twinStates = new Dictionary<string, TensorData>();
                for (int call = 0; call < calls.Count; call++)
                {
                    string step = call == 0 ? "prefill" : calls[call].FreshStates is null ? $"decode step {call}" : $"call {call}, a new request";
                    if (calls[call].FreshStates is { } fresh)
                    {
                        ortStates = fresh.Where(p => inputNames.Contains(p.Key)).ToDictionary();
                        engineStates = new(ortStates);
                        twinStates = ortStates.ToDictionary(p => p.Key, p => AsFloat32(p.Value));
                    }
                    IReadOnlyDictionary<string, TensorData> byOrt;
                    try { byOrt = ort.Run(new Dictionary<string, TensorData>(calls[call].Inputs.Concat(ortStates))); }
                    catch (Exception e)
                    {
                        ortRefused.Add($"{label}, {step}: ORT alone fails: {e.GetType().Name}: {First(e.Message)}");
                        return null;
                    }
                    var byEngine = byOrt.ToDictionary(p => p.Key, p => NaNs(p.Value));
                    try { engine.RunInto(new Dictionary<string, TensorData>(calls[call].Inputs.Concat(engineStates)), byEngine); }
                    catch (Exception e) { return $"{label}, {step}: ORT alone runs it, the hand-over fails: {e.GetType().Name}: {First(e.Message)}"; }
                    var byTwin = twin.Run(calls[call].Inputs.Concat(twinStates).ToDictionary(p => p.Key, p => AsFloat32(p.Value)));
                    var problems = new List<string>();
                    foreach (var (name, expected) in byOrt)
                    {
                        var e = OnnxAssert.Floats(expected);
                        var a = OnnxAssert.Floats(byEngine[name]);
                        if (!e.All(float.IsFinite))
                        {
                            ortRefused.Add($"{label}, {step}: ORT's {name} is not finite");
                            return null;
                        }
                        if (!a.All(float.IsFinite)) { problems.Add($"{name}: {a.Count(v => !float.IsFinite(v))} of {a.Length} not finite"); continue; }
                        if (e.Length == 0) continue;
                        double err = Numerics.RelativeRms(a, e);
                        double tolerance = half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
                        if (err <= tolerance) continue;
                        var reference = TestData.ToDouble(OnnxAssert.Floats(byTwin[name]));
                        double ortOff = Numerics.RelativeRms(e, reference), engineOff = Numerics.RelativeRms(a, reference);
                        if (!(engineOff <= ortOff + tolerance)) problems.Add($"{name}: relative RMS {err:E2} (vs the exact-sigmoid float32 model: ORT alone {ortOff:E2}, hand-over {engineOff:E2})");
                    }
                    if (problems.Count > 0) return $"{label}, {step}: {string.Join("; ", problems)}";
                    Carry(ortStates, byOrt);
                    Carry(engineStates, byEngine);
                    Carry(twinStates, byTwin);
                }
            }
        }
        return null;

        void Carry(Dictionary<string, TensorData> states, IReadOnlyDictionary<string, TensorData> outputs)
        {
            foreach (var (name, value) in outputs)
                if (pastOf(name) is string past && states.ContainsKey(past)) states[past] = value;
        }
    }

    /// <summary>One drawn hybrid decoder and its run: batch, prompt length, decode steps.</summary>
    private sealed record DecoderCase(string Label, HybridDecoderSpec Spec, int Batch, int PromptLength, int DecodeSteps);

    private static DecoderCase DrawDecoder(Random r, int index)
    {
        int qkHeads = r.Next(1, 3);
        var (heads, kvHeads) = Pick(r, (2, 1), (4, 2), (2, 2));
        var linear = new GatedDeltaNetSpec
        {
            QkHeads = qkHeads, ValueHeads = qkHeads * Pick(r, 1, 2, 4), KeyDim = Pick(r, 8, 16, 24, 32, 48), ValueDim = Pick(r, 8, 16, 24, 32, 48),
            ConvKernel = r.Next(2, 6), FusedGates = r.Next(2) == 0,
        };
        var spec = new HybridDecoderSpec
        {
            VocabSize = Pick(r, 50, 97, 128), Hidden = Pick(r, 32, 48, 64), Layers = r.Next(2, 5), FullAttentionInterval = Pick(r, 2, 3, 4),
            LinearAttention = linear, AttentionHeads = heads, KvHeads = kvHeads, HeadSize = Pick(r, 16, 32), Intermediate = 64, ContextLength = 512,
            NormEpsilon = Pick(r, 1e-6f, 1e-5f), ElementType = r.Next(3) == 0 ? TensorElementType.Float16 : TensorElementType.Float, Seed = 500 + index,
        };
        int batch = r.Next(1, 3), prompt = Pick(r, 1, 5, 32, 33, 65);
        string label = $"decoder#{index} V{spec.VocabSize} D{spec.Hidden} L{spec.Layers}/{spec.FullAttentionInterval} attention {heads}/{kvHeads}x{spec.HeadSize} " +
            $"linear H{linear.QkHeads}/{linear.ValueHeads} dk{linear.KeyDim} dv{linear.ValueDim} K{linear.ConvKernel}{(linear.FusedGates ? " fused gates" : "")} " +
            $"B{batch} T{prompt}+3{(spec.ElementType == TensorElementType.Float16 ? " fp16" : "")}";
        return new DecoderCase(label, spec, batch, prompt, 3);
    }

    /// <summary>
    /// The decoder from random nonzero Gated DeltaNet states and an empty KV cache: a prompt of random tokens, then one token a
    /// step, the mask all ones over every token so far.
    /// </summary>
    private static string? CheckDecoder(DecoderCase c, int index, List<string> ortRefused)
    {
        var spec = c.Spec;
        var linear = spec.LinearLayer;
        bool half = spec.ElementType == TensorElementType.Float16;
        var model = HybridDecoder.Model(spec);
        var data = new TestData(6000 + index);
        var random = new Random(6000 + index);
        long b = c.Batch;
        var states = new Dictionary<string, TensorData>();
        for (int layer = 0; layer < spec.Layers; layer++)
        {
            if (spec.IsFullAttention(layer))
            {
                states[HybridDecoder.PastKey(layer)] = Typed(half, [], b, spec.KvHeads, 0, spec.HeadSize);
                states[HybridDecoder.PastValue(layer)] = Typed(half, [], b, spec.KvHeads, 0, spec.HeadSize);
                continue;
            }
            states[HybridDecoder.PastConv(layer)] = Typed(half, data.Normal(b * linear.ConvChannels * (linear.ConvKernel - 1)), b, linear.ConvChannels, linear.ConvKernel - 1);
            states[HybridDecoder.PastRecurrent(layer)] = Typed(half, data.Normal(b * linear.ValueHeads * linear.KeyDim * linear.ValueDim, 0.5),
                b, linear.ValueHeads, linear.KeyDim, linear.ValueDim);
        }
        var calls = new List<Call>();
        int total = 0;
        foreach (int length in new[] { c.PromptLength }.Concat(Enumerable.Repeat(1, c.DecodeSteps)))
        {
            total += length;
            calls.Add(new Call(new Dictionary<string, TensorData>
            {
                ["input_ids"] = TensorData.Create(Enumerable.Range(0, (int)b * length).Select(_ => (long)random.Next(spec.VocabSize)).ToArray(), b, length),
                ["attention_mask"] = TensorData.Create(Enumerable.Repeat(1L, (int)b * total).ToArray(), b, total),
            }, calls.Count == 0 ? states : null));
        }
        var twin = ExactSigmoids(HybridDecoder.Model(spec with { ElementType = TensorElementType.Float }));
        return Compare(c.Label, model, half, twin, calls, ortRefused,
            output => output.StartsWith("present.", StringComparison.Ordinal) ? "past_key_values." + output["present.".Length..] : null)
            ?? CompareGenerators(c, random);
    }

    /// <summary>
    /// The decoder as a GenAI model folder, through <see cref="Generator"/> on both paths: a prompt, then tokens chosen in
    /// advance (so both paths read the same tokens whatever their logits), each step's logits compared.
    /// </summary>
    private static string? CompareGenerators(DecoderCase c, Random random)
    {
        string folder = Path.Combine(Path.GetTempPath(), $"engine-layer-fuzz-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            HybridDecoder.Write(folder, c.Spec);
            var prompt = Enumerable.Range(0, Math.Max(c.PromptLength, 1)).Select(_ => (long)random.Next(c.Spec.VocabSize)).ToArray();
            var chosen = Enumerable.Range(0, c.DecodeSteps + 1).Select(_ => (long)random.Next(c.Spec.VocabSize)).ToArray();
            List<float[]> Logits(HandoverBackend backend, string? from = null)
            {
                using var generator = Generator.Open(from ?? folder, OnnxTestHost.Options(backend));
                var logits = new List<float[]>();
                generator.Generate(prompt, chosen.Length, new GenerationOptions
                {
                    // The sampler runs before OnToken adds the step's logits: their count is the step.
                    Sampler = _ => chosen[logits.Count],
                    OnToken = (_, row) => logits.Add(row.ToArray()),
                });
                return logits;
            }
            var byOrt = Logits(HandoverBackend.None);
            var byEngine = Logits(Backend);
            double tolerance = c.Spec.ElementType == TensorElementType.Float16 ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
            List<float[]>? reference = null;
            for (int step = 0; step < byOrt.Count; step++)
            {
                double err = Numerics.RelativeRms(byEngine[step], byOrt[step]);
                if (err <= tolerance) continue;
                if (c.Spec.ElementType != TensorElementType.Float16) return $"{c.Label}, generator step {step}: logits, relative RMS {err:E2}";
                // A float16 decoder's logits can sit farther apart than one layer's (rounding through every layer, logits of
                // small norm): then the hand-over must be as close to the float32 model as ORT alone's float16 run is.
                if (reference is null)
                {
                    HybridDecoder.Write(folder + "-float32", c.Spec with { ElementType = TensorElementType.Float });
                    reference = Logits(HandoverBackend.None, folder + "-float32");
                }
                double ortOff = Numerics.RelativeRms(byOrt[step], reference[step]), engineOff = Numerics.RelativeRms(byEngine[step], reference[step]);
                if (!(engineOff <= ortOff + tolerance))
                    return $"{c.Label}, generator step {step}: logits, relative RMS {err:E2} (vs the float32 model: ORT alone {ortOff:E2}, hand-over {engineOff:E2})";
            }
            return null;
        }
        finally
        {
            foreach (var written in new[] { folder, folder + "-float32" })
                if (Directory.Exists(written)) Directory.Delete(written, recursive: true);
        }
    }

    [Test]
    public void RandomHybridDecodersAgreeWithOrtAloneOverPrefillAndDecode()
    {
        int count = Setting("ENGINE_DECODER_FUZZ_COUNT", 12);
        var (failures, ortRefused) = Sweep(count, only: null, "decoders", DrawDecoder, c => c.Label, CheckDecoder);
        Assert.That(failures, Is.Empty, string.Join("\n", failures));
        Assert.That(ortRefused, Is.Empty, "ORT alone runs every drawn decoder");
    }

    private static int Setting(string name, int fallback) => int.TryParse(Environment.GetEnvironmentVariable(name), out var value) ? value : fallback;

    /// <summary>
    /// Draws <paramref name="count"/> cases from ENGINE_LAYER_FUZZ_SEED's generator and checks each (only case
    /// <paramref name="only"/> where given, the ones before it still drawn): the problems found, and the cases ORT alone refused (printed).
    /// </summary>
    private static (List<string> Failures, List<string> OrtRefused) Sweep<T>(int count, int? only, string what, Func<Random, int, T> draw,
        Func<T, string> label, Func<T, int, List<string>, string?> check)
    {
        var r = new Random(Setting("ENGINE_LAYER_FUZZ_SEED", 20261207));
        var failures = new List<string>();
        var ortRefused = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var c = draw(r, i);
            if (only is int single && i != single) continue;
            string? problem;
            try { problem = check(c, i, ortRefused); }
            catch (Exception e) { problem = $"{label(c)}: {e.GetType().Name}: {First(e.Message)}"; }
            if (problem is not null) failures.Add(problem);
        }
        TestContext.Out.WriteLine($"{count} {what}, {ortRefused.Count} refused by ORT alone:");
        foreach (var line in ortRefused) TestContext.Out.WriteLine("  " + line);
        return (failures, ortRefused);
    }

    private static TensorData AsFloat32(TensorData t) => t.ElementType == TensorElementType.Float16 ? TensorData.Create(OnnxAssert.Floats(t), t.Shape) : t;

    /// <summary>A tensor of <paramref name="like"/>'s type and shape, every element NaN.</summary>
    private static TensorData NaNs(TensorData like)
    {
        long count = like.Shape.Aggregate(1L, (a, n) => a * n);
        return like.ElementType == TensorElementType.Float16
            ? TensorData.Create(Enumerable.Repeat(Half.NaN, (int)count).ToArray(), like.Shape)
            : TensorData.Create(Enumerable.Repeat(float.NaN, (int)count).ToArray(), like.Shape);
    }

    private static string First(string message) => message.Split('\n')[0];

    [Test]
    public void RandomLayersAgreeWithOrtAloneOverPrefillAndDecode()
    {
        int count = Setting("ENGINE_LAYER_FUZZ_COUNT", 400);
        int? only = int.TryParse(Environment.GetEnvironmentVariable("ENGINE_LAYER_FUZZ_ONLY"), out var single) ? single : null;
        var (failures, ortRefused) = Sweep(count, only, "layers", DrawLayer, c => c.Label, CheckLayer);
        Assert.That(failures, Is.Empty, string.Join("\n", failures));
        Assert.That(ortRefused, Has.Count.LessThan(count / 5), "most drawn cases are ones ORT alone runs");
    }
}

using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// Seeded random single-node models (LinearAttention in both domains, GatedDeltaNet, CausalConvWithState and its varlen
/// form, LinearAttentionGate, GatedRMSNorm; float32 and float16) run by ONNX Runtime 1.32 alone and by the hand-over: the
/// same outputs, shapes and element types, finite, within 1e-5 relative RMS (float16 tensors 3e-3), and the same again on a
/// second call of the session. Cases ORT alone refuses are listed, not judged. ENGINE_NODE_FUZZ_SEED and
/// ENGINE_NODE_FUZZ_COUNT (cases per op) widen the sweep; ENGINE_NODE_FUZZ_GPU=1 runs it on the GPU backend (ILGPU's CPU
/// accelerator when no GPU is present; slow to start, so not by default).
/// </summary>
[TestFixture]
public sealed class NodeDifferentialTests
{
    private const double HalfTolerance = 3e-3;

    /// <summary>One drawn case: its model, inputs, the backend of the hand-over and a label.</summary>
    private sealed record Drawn(string Label, OnnxModel Model, Dictionary<string, TensorData> Inputs, bool Half, HandoverBackend Backend = HandoverBackend.Cpu, GatedDeltaNetNodeCase? Source = null);

    private static T Pick<T>(Random r, params T[] values) => values[r.Next(values.Length)];

    private static TensorData Typed(bool half, float[] values, params long[] shape) =>
        half ? TensorData.Create(TestData.ToHalf(values), shape) : TensorData.Create(values, shape);

    /// <summary>What differs between ORT alone and the hand-over on the case, or null (also null when ORT alone refuses the case: not ours).</summary>
    private static string? Check(Drawn c, List<string> ortRefused)
    {
        IReadOnlyDictionary<string, TensorData> byOrt;
        try
        {
            using var ort = OnnxTestHost.Open(c.Model, HandoverBackend.None);
            byOrt = ort.Run(c.Inputs);
        }
        catch (Exception e)
        {
            ortRefused.Add($"{c.Label}: {e.GetType().Name}: {First(e.Message)}");
            return null;
        }
        IReadOnlyDictionary<string, TensorData> byEngine;
        try
        {
            using var engine = OnnxTestHost.Open(c.Model, c.Backend);
            if (!engine.Handover.EngineNodes.Any()) return $"{c.Label}: the engine takes no node ({string.Join("; ", engine.Handover.Nodes.Select(n => n.Detail))})";
            byEngine = engine.Run(c.Inputs);
            // A second call on the same session (pooled scratch, kernels made once) gives the same outputs.
            var again = engine.Run(c.Inputs);
            foreach (var (name, first) in byEngine)
                if (!OnnxAssert.Floats(again[name]).AsSpan().SequenceEqual(OnnxAssert.Floats(first))) return $"{c.Label}: {name} differs on a second call";
        }
        catch (Exception e)
        {
            return $"{c.Label}: ORT alone runs it, the hand-over fails: {e.GetType().Name}: {First(e.Message)}";
        }
        var problems = new List<string>();
        if (!byEngine.Keys.Order().SequenceEqual(byOrt.Keys.Order())) problems.Add($"outputs [{string.Join(",", byEngine.Keys)}] vs ORT [{string.Join(",", byOrt.Keys)}]");
        foreach (var (name, expected) in byOrt)
        {
            if (!byEngine.TryGetValue(name, out var actual)) continue;
            if (!actual.Shape.SequenceEqual(expected.Shape)) { problems.Add($"{name}: shape [{string.Join(",", actual.Shape)}] vs ORT [{string.Join(",", expected.Shape)}]"); continue; }
            if (actual.ElementType != expected.ElementType) { problems.Add($"{name}: type {actual.ElementType} vs ORT {expected.ElementType}"); continue; }
            var e = OnnxAssert.Floats(expected);
            var a = OnnxAssert.Floats(actual);
            if (!e.All(float.IsFinite)) { ortRefused.Add($"{c.Label}: ORT's {name} is not finite"); continue; }
            if (!a.All(float.IsFinite)) { problems.Add($"{name}: not finite"); continue; }
            if (e.Length == 0) continue;
            double err = Numerics.RelativeRms(a, e);
            double tolerance = c.Half || expected.ElementType == TensorElementType.Float16 ? HalfTolerance : Numerics.Fp32Tolerance;
            if (!(err <= tolerance)) problems.Add($"{name}: relative RMS {err:E2}");
        }
        return problems.Count == 0 ? null : $"{c.Label}: {string.Join("; ", problems)}";
    }

    private static string First(string message) => message.Split('\n')[0];

    // ---- LinearAttention ----

    private static Drawn LinearAttention(Random r, int index)
    {
        var rule = Pick(r, Enum.GetValues<UpdateRule>());
        bool opset27 = r.Next(5) == 0;
        var heads = opset27 ? Pick(r, (1, 1), (2, 1), (4, 2), (3, 3), (2, 2)) : Pick(r, (1, 1), (2, 1), (4, 2), (3, 3), (1, 2), (2, 4), (1, 4), (2, 6), (3, 1));
        var (hq, hkv) = heads;
        // Now and then larger heads and a call big enough to leave the inline path for ORT's pool.
        bool large = r.Next(5) == 0;
        int dk = large ? Pick(r, 32, 48, 64, 20) : Pick(r, 4, 8, 16, 5, 12), dv = large ? Pick(r, 32, 64, 24) : Pick(r, 4, 8, 12, 7, 16);
        int b = Pick(r, 1, 1, 2, 3), t = Pick(r, 0, 1, 1, 2, 5, 8, 9, 17, 31, 32, 33, 40, 64, 65, 70, 129);
        bool perKey = r.Next(2) == 0, betaPerHead = r.Next(3) != 0, past = r.Next(3) != 0, half = r.Next(4) == 0;
        // present_state: a graph output or a node output nobody reads (ORT refuses it unnamed).
        int present = r.Next(2);
        bool symbolic = r.Next(2) == 0;
        float scale = r.Next(3) == 0 ? Pick(r, 0.5f, 1f, 0.3f, 2f, -0.5f, 1e-3f) : 0f;
        long? chunk = r.Next(3) == 0 ? Pick(r, 16L, 32L, 64L, 0L, -1L, 7L, 128L, 256L, 512L, 1000L) : null;
        bool decay = LinearAttentionSignature.UsesDecay(rule), beta = LinearAttentionSignature.UsesBeta(rule);
        int hk = LinearAttentionSignature.KeyHeads(hq, hkv), ho = Math.Max(hq, hkv);
        int decayWidth = perKey ? hkv * dk : hkv, betaWidth = betaPerHead ? hkv : 1;
        var type = half ? F.Float16 : F.Float;

        var mb = new ModelBuilder(opset27 ? 27 : 21, "linear_attention");
        if (!opset27) mb.Import(HandoverRewriter.MicrosoftDomain, 1);
        object batch = symbolic ? "B" : b, length = symbolic ? "T" : t;
        mb.Input("query", type, batch, length, hq * dk);
        mb.Input("key", type, batch, length, hk * dk);
        mb.Input("value", type, batch, length, hkv * dv);
        if (past) mb.Input("past_state", type, batch, hkv, dk, dv);
        if (decay) mb.Input("decay", type, batch, length, decayWidth);
        if (beta) mb.Input("beta", type, batch, length, betaWidth);
        var attributes = new List<(string, object)> { ("q_num_heads", (long)hq), ("kv_num_heads", (long)hkv), ("update_rule", LinearAttentionSignature.Name(rule)) };
        if (scale != 0) attributes.Add(("scale", scale));
        if (chunk is long c) attributes.Add(("chunk_size", c));
        mb.Node(LinearAttentionSignature.OpType, ["query", "key", "value", past ? "past_state" : "", decay ? "decay" : "", beta ? "beta" : ""],
            domain: opset27 ? "" : HandoverRewriter.MicrosoftDomain, name: "linear_attention",
            outputNames: present == 2 ? ["output", ""] : ["output", "present_state"], attributes: attributes.ToArray());
        mb.Output("output", type, batch, length, ho * dv);
        if (present == 0) mb.Output("present_state", type, batch, hkv, dk, dv);

        var data = new TestData(1000 + index);
        var inputs = new Dictionary<string, TensorData>
        {
            ["query"] = Typed(half, data.Normal((long)b * t * hq * dk), b, t, hq * dk),
            ["key"] = Typed(half, data.UnitRows((long)b * t * hk, dk), b, t, hk * dk),
            ["value"] = Typed(half, data.Normal((long)b * t * hkv * dv), b, t, hkv * dv),
        };
        if (past) inputs["past_state"] = Typed(half, data.Normal((long)b * hkv * dk * dv, 0.5), b, hkv, dk, dv);
        if (decay) inputs["decay"] = Typed(half, data.LogGates((long)b * t * decayWidth, Pick(r, 0.1, 1.0, 5.0, 20.0)), b, t, decayWidth);
        if (beta) inputs["beta"] = Typed(half, data.Uniform((long)b * t * betaWidth, 0.05, 1.0), b, t, betaWidth);
        string label = $"LinearAttention#{index} {LinearAttentionSignature.Name(rule)}{(opset27 ? " opset27" : "")} B{b} T{t} H{hq}/{hkv} dk{dk} dv{dv}" +
            (decay ? (perKey ? " decay per key" : " decay per head") : "") + (beta ? (betaPerHead ? " beta per head" : " beta shared") : "") +
            (past ? " past" : "") + (present switch { 0 => "", 1 => " present unread", _ => " present unnamed" }) + (scale != 0 ? $" scale {scale}" : "") + (chunk is long cs ? $" chunk {cs}" : "") +
            (symbolic ? "" : " fixed dims") + (half ? " fp16" : "");
        return new Drawn(label, mb.Build(), inputs, half);
    }

    // ---- GatedDeltaNet ----

    private static Drawn GatedDeltaNet(Random r, int index)
    {
        string rule = Pick(r, "gated_delta", "gated_delta", "delta", "gated", "linear");
        bool usesDecay = rule is "gated" or "gated_delta";
        var layout = r.Next(2) == 0 ? GatedDeltaNetLayout.Tokens : GatedDeltaNetLayout.Batched;
        bool ragged = layout == GatedDeltaNetLayout.Tokens && r.Next(2) == 0;
        var (hq, hv) = Pick(r, (1, 1), (2, 2), (1, 2), (2, 4), (1, 3), (2, 6), (3, 3));
        bool large = r.Next(5) == 0;
        int dk = large ? Pick(r, 32, 64, 40) : Pick(r, 4, 8, 16, 12), dv = large ? Pick(r, 32, 48) : Pick(r, 4, 8, 16, 6);
        string gate = usesDecay ? Pick(r, "none", "none", "softplus", "sigmoid", "qwen", "kda") : "none";
        bool perKey = usesDecay && r.Next(3) == 0;
        int? dtRank = gate != "none" && perKey ? Pick<int?>(r, null, 1, 2) : null;
        var elementType = Pick(r, TensorElementType.Float, TensorElementType.Float, TensorElementType.Float16);
        var gateType = elementType == TensorElementType.Float16 && r.Next(2) == 0 ? TensorElementType.Float16 : TensorElementType.Float;
        int capacity = r.Next(4) == 0 ? Pick(r, 1, 2, 3, 5, 8) : 0;
        var spec = new GatedDeltaNetNodeSpec
        {
            Layout = layout, PackedQkv = r.Next(3) == 0, Ragged = ragged, QHeads = hq, ValueHeads = hv, KeyDim = dk, ValueDim = dv, UpdateRule = rule,
            DecayPerKey = perKey, DecayGateActivation = gate, DtBiasPerKeyRank = dtRank,
            GateLowerBound = gate is "sigmoid" or "kda" && r.Next(2) == 0 ? Pick(r, -1f, -3f, -8f, 0f) : null,
            BetaSigmoid = r.Next(2) == 0, QkL2Norm = r.Next(2) == 0, Scale = r.Next(3) == 0 ? Pick(r, 0.5f, 1f, 0.25f, -0.5f) : 0f,
            ChunkSize = r.Next(3) == 0 ? Pick(r, 16, 32, 64, 7, 128, 1000) : null, StateUpdateCapacity = capacity,
            ElementType = elementType, GateElementType = gateType, SymbolicShapes = r.Next(4) == 0,
        };
        int b = Pick(r, 1, 2, 3, 4);
        int[] lengths;
        if (ragged) lengths = Enumerable.Range(0, b).Select(_ => Pick(r, 0, 1, 1, 3, 8, 9, 17, 33, 40, 65)).ToArray();
        else { int t = Pick(r, 1, 1, 2, 5, 8, 9, 17, 33, 40, 65); lengths = Enumerable.Repeat(t, b).ToArray(); }
        if (lengths.Sum() == 0) lengths[0] = 3;
        var c = new GatedDeltaNetNodeCase
        {
            Spec = spec, Lengths = lengths, Label = $"#{index}",
            CaptureCount = capacity > 0 ? lengths.Select(_ => r.Next(-1, capacity + 2)).ToArray() : null, CaptureActive = r.Next(4) != 0,
            QkStd = spec.QkL2Norm && r.Next(4) == 0 ? 1e-3 : 1.0,
        };
        var model = c.Model();
        var inputs = c.Inputs();
        string label = "GatedDeltaNet " + c.Name;
        if (r.Next(4) == 0)
        {
            // No initial_state: zeros; the batch from cu_seqlens, or the tokens make one request.
            if ((layout == GatedDeltaNetLayout.Tokens && !ragged && b > 1) || spec.PackedQkv) { }
            else
            {
                var node = model.Graph.Node.Single();
                node.Input[6] = "";
                var input = model.Graph.Input.Single(i => i.Name == "initial_state");
                model.Graph.Input.Remove(input);
                inputs.Remove("initial_state");
                label += " no initial_state";
            }
        }
        if (r.Next(5) == 0)
        {
            // final_state not asked for: the node's output left out (or unnamed before state_update).
            var node = model.Graph.Node.Single();
            if (node.Output.Count == 2) node.Output.RemoveAt(1);
            else node.Output[1] = "";
            model.Graph.Output.Remove(model.Graph.Output.Single(o => o.Name == "final_state"));
            label += " no final_state";
        }
        return new Drawn(label, model, inputs, elementType != TensorElementType.Float, Source: c);
    }

    // ---- CausalConvWithState, VarlenCausalConvWithState ----

    private static Drawn Conv(Random r, int index)
    {
        bool onnx27 = r.Next(4) == 0;
        var c = new ConvNodeCase
        {
            B = Pick(r, 1, 2, 3), T = Pick(r, 1, 2, 3, 5, 17, 40), C = Pick(r, 1, 3, 8, 19, 24), K = Pick(r, 1, 2, 3, 4, 5),
            Dilation = onnx27 ? 1 : Pick(r, 1, 1, 2, 3), Activation = Pick<string?>(r, null, "silu", "swish", "none"), ChannelsLast = !onnx27 && r.Next(2) == 0,
            Past = r.Next(3) != 0, Bias = r.Next(2) == 0, Half = r.Next(4) == 0, Onnx27 = onnx27,
        };
        string label = $"CausalConvWithState#{index} {c}";
        return new Drawn(label, c.Model(), c.Inputs(label), c.Half);
    }

    private static Drawn Varlen(Random r, int index)
    {
        int channels = Pick(r, 1, 4, 9, 16), k = Pick(r, 2, 3, 4, 5), batch = Pick(r, 1, 2, 3, 4);
        bool bias = r.Next(2) == 0, half = r.Next(4) == 0, state = true;
        string? activation = Pick<string?>(r, null, "silu", "swish", "none");
        var type = half ? F.Float16 : F.Float;
        var mb = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        var attributes = new List<(string, object)>();
        if (activation is not null) attributes.Add(("activation", activation));
        mb.Node("VarlenCausalConvWithState",
            [mb.Input("x", type, "N", channels), mb.Input("weight", type, channels, 1, k), mb.Input("cu_seqlens", F.Int32, "B1"),
             bias ? mb.Input("bias", type, channels) : "", state ? mb.Input("initial_state", type, "B", channels, k - 1) : ""],
            domain: HandoverRewriter.MicrosoftDomain, name: "varlen_conv", outputNames: ["y", "final_state"], attributes: attributes.ToArray());
        mb.Output("y", type, "N", channels);
        mb.Output("final_state", type, "B", channels, k - 1);
        var cu = new int[batch + 1];
        for (int i = 0; i < batch; i++) cu[i + 1] = cu[i] + Pick(r, 0, 1, 2, 3, 9, 20);
        if (cu[batch] < batch) cu[batch] = batch; // ORT's kernel wants at least one token per request in all
        int n = cu[batch];
        var data = new TestData(5000 + index);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = Typed(half, data.Normal((long)n * channels), n, channels),
            ["weight"] = Typed(half, data.Normal(channels * k, 0.5), channels, 1, k),
            ["cu_seqlens"] = TensorData.Create(cu, batch + 1),
        };
        if (bias) inputs["bias"] = Typed(half, data.Normal(channels, 0.5), channels);
        if (state) inputs["initial_state"] = Typed(half, data.Normal((long)batch * channels * (k - 1)), batch, channels, k - 1);
        string label = $"VarlenCausalConvWithState#{index} C{channels} K{k} cu [{string.Join(",", cu)}] {activation ?? "default activation"}{(bias ? " bias" : "")}{(state ? " initial_state" : "")}{(half ? " fp16" : "")}";
        return new Drawn(label, mb.Build(), inputs, half);
    }

    // ---- LinearAttentionGate, GatedRMSNorm ----

    private static Drawn Gate(Random r, int index)
    {
        int batch = Pick(r, 1, 2, 3), length = Pick(r, 1, 2, 5, 17), heads = Pick(r, 1, 2, 3, 8, 17);
        bool half = r.Next(3) == 0, withBeta = r.Next(2) == 0, declared = r.Next(2) == 0;
        var type = half ? F.Float16 : F.Float;
        var mb = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        object[]? Dims(params object[] dims) => declared ? dims : null;
        List<string> names = [mb.Input("a", type, Dims("B", "T", heads)), mb.Input("dt_bias", F.Float, Dims(heads)), mb.Input("decay_scale", F.Float, Dims(heads))];
        if (withBeta) names.Add(mb.Input("b", type, Dims("B", "T", heads)));
        mb.Node("LinearAttentionGate", names, domain: HandoverRewriter.MicrosoftDomain, name: "gate", outputNames: withBeta ? ["decay", "beta"] : ["decay"]);
        mb.Output("decay", type, Dims("B", "T", heads));
        if (withBeta) mb.Output("beta", type, Dims("B", "T", heads));
        var data = new TestData(7000 + index);
        long count = (long)batch * length * heads;
        var inputs = new Dictionary<string, TensorData>
        {
            ["a"] = Typed(half, data.Normal(count, 3), batch, length, heads),
            ["dt_bias"] = TensorData.Create(data.Normal(heads), heads),
            ["decay_scale"] = TensorData.Create(data.Uniform(heads, 0.1, 4), heads),
        };
        if (withBeta) inputs["b"] = Typed(half, data.Normal(count, 3), batch, length, heads);
        return new Drawn($"LinearAttentionGate#{index} B{batch} T{length} H{heads}{(withBeta ? " beta" : "")}{(declared ? "" : " undeclared")}{(half ? " fp16" : "")}", mb.Build(), inputs, half);
    }

    private static Drawn Norm(Random r, int index)
    {
        int group = Pick(r, 1, 4, 7, 16, 20, 64), groups = Pick(r, 1, 2, 3, 5, 8), width = group * groups;
        int batch = Pick(r, 1, 2), length = Pick(r, 1, 3, 17);
        bool half = r.Next(3) == 0, rank2 = r.Next(4) == 0;
        string? activation = Pick<string?>(r, null, "silu", "swish", "sigmoid");
        float? epsilon = r.Next(3) == 0 ? Pick(r, 1e-6f, 1e-3f, 0.1f) : null;
        var type = half ? F.Float16 : F.Float;
        var mb = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        var attributes = new List<(string, object)>();
        if (activation is not null) attributes.Add(("activation", activation));
        if (epsilon is float e) attributes.Add(("epsilon", e));
        object[] xDims = rank2 ? ["N", width] : ["B", "T", width];
        mb.Node("GatedRMSNorm", [mb.Input("x", type, xDims), mb.Input("scale", type, group), mb.Input("z", type, xDims)],
            domain: HandoverRewriter.MicrosoftDomain, name: "norm", outputNames: ["y"], attributes: attributes.ToArray());
        mb.Output("y", type, xDims);
        var data = new TestData(9000 + index);
        long[] shape = rank2 ? [(long)batch * length, width] : [batch, length, width];
        long count = (long)batch * length * width;
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = Typed(half, data.Normal(count), shape),
            ["scale"] = Typed(half, data.Normal(group, 0.5), group),
            ["z"] = Typed(half, data.Normal(count, 3), shape),
        };
        return new Drawn($"GatedRMSNorm#{index} [{string.Join(",", shape)}] group {group} {activation ?? "default"}{(epsilon is float ep ? $" eps {ep}" : "")}{(half ? " fp16" : "")}", mb.Build(), inputs, half);
    }

    private static IEnumerable<Drawn> Draw(int seed, int perOp)
    {
        var r = new Random(seed);
        if (Environment.GetEnvironmentVariable("ENGINE_NODE_FUZZ_GPU") == "1")
        {
            for (int i = 0; i < perOp; i++)
            {
                yield return LinearAttention(r, i) with { Backend = HandoverBackend.Gpu };
                yield return GatedDeltaNet(r, i) with { Backend = HandoverBackend.Gpu };
                yield return Conv(r, i) with { Backend = HandoverBackend.Gpu };
                yield return Varlen(r, i) with { Backend = HandoverBackend.Gpu };
                yield return Gate(r, i) with { Backend = HandoverBackend.Gpu };
                yield return Norm(r, i) with { Backend = HandoverBackend.Gpu };
            }
            yield break;
        }
        for (int i = 0; i < perOp; i++)
        {
            yield return LinearAttention(r, i);
            yield return GatedDeltaNet(r, i);
            if (i % 2 == 0) yield return Conv(r, i);
            if (i % 2 == 0) yield return Varlen(r, i);
            if (i % 3 == 0) yield return Gate(r, i);
            if (i % 3 == 0) yield return Norm(r, i);
        }
    }

    [Test]
    public void RandomNodesAgreeWithOrtAlone()
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("ENGINE_NODE_FUZZ_SEED"), out var s) ? s : 20261206;
        int perOp = int.TryParse(Environment.GetEnvironmentVariable("ENGINE_NODE_FUZZ_COUNT"), out var n) ? n : 40;
        var failures = new List<string>();
        var ortRefused = new List<string>();
        int count = 0;
        foreach (var c in Draw(seed, perOp))
        {
            count++;
            string? problem;
            try { problem = Check(c, ortRefused); }
            catch (Exception e) { problem = $"{c.Label}: {e.GetType().Name}: {First(e.Message)}"; }
            if (problem is not null) failures.Add(problem);
            if (problem is not null && c.Source is { } g) failures.Add("   " + AgainstReference(c, g));
        }
        TestContext.Out.WriteLine($"{count} cases, {ortRefused.Count} refused by ORT alone:");
        foreach (var line in ortRefused) TestContext.Out.WriteLine("  " + line);
        Assert.That(failures, Is.Empty, string.Join("\n", failures));
        Assert.That(ortRefused, Has.Count.LessThan(count / 5), "most drawn cases are ones ORT alone runs");
    }

    /// <summary>For a GatedDeltaNet case that differs: which side is off, measured against the float64 reference.</summary>
    private static string AgainstReference(Drawn c, GatedDeltaNetNodeCase g)
    {
        try
        {
            var reference = g.Reference(c.Inputs);
            using var ort = OnnxTestHost.Open(c.Model, HandoverBackend.None);
            using var engine = OnnxTestHost.Open(c.Model, c.Backend);
            var byOrt = ort.Run(c.Inputs);
            var byEngine = engine.Run(c.Inputs);
            return $"{g.Spec} lengths [{string.Join(",", g.Lengths)}] q/k std {g.QkStd}: output vs reference: ORT {Numerics.RelativeRms(OnnxAssert.Floats(byOrt["output"]), reference.Output):E2}, " +
                $"hand-over {Numerics.RelativeRms(OnnxAssert.Floats(byEngine["output"]), reference.Output):E2}";
        }
        catch (Exception e)
        {
            return $"{g.Spec}: no reference comparison ({e.GetType().Name}: {First(e.Message)})";
        }
    }
}

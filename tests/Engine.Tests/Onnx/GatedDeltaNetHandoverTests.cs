using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// com.microsoft GatedDeltaNet: every input layout, gate and beta activation, L2 normalization and element type run by the
/// engine (ai.engine GatedDeltaNet on the delta rule, state value-major), by ONNX Runtime 1.32's own GatedDeltaNet kernel
/// (the same model with HandoverBackend.None) and by the float64 reference (<see cref="GatedDeltaNetNodeCase"/>): fp32
/// within 1e-5 relative RMS, fp16 tensors within 5e-3. Then the state carried across calls, what stays with ORT and why,
/// the GPU backend, and bad input named by node and input.
/// </summary>
[TestFixture]
public sealed class GatedDeltaNetHandoverTests
{
    private const string Node = "GatedDeltaNet node 'gated_delta_net'";

    public static IEnumerable<TestCaseData> Cases()
    {
        GatedDeltaNetNodeCase[] cases =
        [
            // Layouts: the token axis (uniform batch from initial_state), rank 4, packed QKV both ways, ragged cu_seqlens
            // (an empty request included).
            new(),
            new() { Spec = new() { Layout = GatedDeltaNetLayout.Batched } },
            new() { Spec = new() { PackedQkv = true } },
            new() { Spec = new() { PackedQkv = true, Layout = GatedDeltaNetLayout.Batched } },
            new() { Spec = new() { Ragged = true }, Lengths = [5, 17, 0, 1, 9] },
            // Rules and decay forms: DeltaNet, a per-key decay, no grouping of value heads; the rules without a delta on GLA's kernels
            // (with the fused gates, L2 normalization, packed QKV, ragged requests, decode and float16 too).
            new() { Spec = new() { UpdateRule = "delta" } },
            new() { Spec = new() { UpdateRule = "linear" } },
            new() { Spec = new() { UpdateRule = "gated" } },
            new() { Spec = new() { UpdateRule = "gated", DecayPerKey = true, QkL2Norm = true, Layout = GatedDeltaNetLayout.Batched } },
            new() { Spec = new() { UpdateRule = "gated", DecayGateActivation = "softplus", PackedQkv = true, Ragged = true }, Lengths = [40, 0, 1, 70] },
            new() { Spec = new() { UpdateRule = "linear", QkL2Norm = true, ChunkSize = 64 }, Lengths = [1, 1, 1] },
            new() { Spec = new() { UpdateRule = "gated", DecayGateActivation = "kda", DecayPerKey = true, ElementType = TensorElementType.Float16 }, Lengths = [50] },
            new() { Spec = new() { DecayPerKey = true } },
            new() { Spec = new() { QHeads = 3, ValueHeads = 3, Scale = 0.3f } },
            // Fused gates: softplus with dt_bias per head, per key ([Hv, dk]); sigmoid with [Hv·dk] and a lower bound; the aliases.
            new() { Spec = new() { DecayGateActivation = "softplus" } },
            new() { Spec = new() { DecayGateActivation = "qwen", DecayPerKey = true, DtBiasPerKeyRank = 2 } },
            new() { Spec = new() { DecayGateActivation = "sigmoid", DecayPerKey = true, DtBiasPerKeyRank = 1 } },
            new() { Spec = new() { DecayGateActivation = "kda", GateLowerBound = -2f } },
            // beta sigmoid, L2 normalization (and rows so small that ORT's 1e-12 epsilon, not 1e-6, gives its result).
            new() { Spec = new() { BetaSigmoid = true, QkL2Norm = true } },
            new() { Spec = new() { QkL2Norm = true }, QkStd = 1e-4, Label = "tiny rows" },
            // With the sigmoid (kda) gate ORT's kernel normalizes with KDA's epsilon, 1e-6, on both rule families.
            new() { Spec = new() { UpdateRule = "gated", DecayGateActivation = "sigmoid", QkL2Norm = true }, QkStd = 1e-3, Label = "tiny rows" },
            new() { Spec = new() { DecayGateActivation = "kda", DecayPerKey = true, QkL2Norm = true, BetaSigmoid = true }, QkStd = 1e-3, Label = "tiny rows" },
            // Under a rule with no decay ORT's kernel ignores gate_activation, a_log and dt_bias, but not the epsilon it implies.
            new() { Spec = new() { UpdateRule = "delta", DecayGateActivation = "softplus" } },
            new() { Spec = new() { UpdateRule = "delta", DecayGateActivation = "kda", QkL2Norm = true }, QkStd = 1e-3, Label = "tiny rows" },
            new() { Spec = new() { UpdateRule = "linear", DecayGateActivation = "sigmoid", QkL2Norm = true }, QkStd = 1e-3, Label = "tiny rows" },
            // Decode (one token per request), a prompt not a multiple of the chunk (chunk_size hints 16, 64, none), longer heads.
            new() { Lengths = [1, 1, 1] },
            new() { Spec = new() { ChunkSize = 16, Layout = GatedDeltaNetLayout.Batched }, Lengths = [100] },
            new() { Spec = new() { ChunkSize = 64, DecayGateActivation = "softplus", BetaSigmoid = true, QkL2Norm = true }, Lengths = [130, 130] },
            new() { Spec = new() { KeyDim = 32, ValueDim = 48, Ragged = true, DecayPerKey = true }, Lengths = [70, 33] },
            // float16 query, key, value and output, with float32 or float16 decay and beta.
            new() { Spec = new() { ElementType = TensorElementType.Float16 } },
            new() { Spec = new() { ElementType = TensorElementType.Float16, GateElementType = TensorElementType.Float16, DecayGateActivation = "softplus" }, Lengths = [50] },
            new() { Spec = new() { ElementType = TensorElementType.Float16, PackedQkv = true, Ragged = true }, Lengths = [1, 40] },
            // bfloat16 (ORT's CPU kernel runs it too), with float32 or bfloat16 decay and beta, both rule families.
            new() { Spec = new() { ElementType = TensorElementType.BFloat16, QkL2Norm = true } },
            new() { Spec = new() { ElementType = TensorElementType.BFloat16, GateElementType = TensorElementType.BFloat16, DecayGateActivation = "softplus", BetaSigmoid = true }, Lengths = [50] },
            new() { Spec = new() { ElementType = TensorElementType.BFloat16, UpdateRule = "gated", DecayPerKey = true, PackedQkv = true, Ragged = true }, Lengths = [1, 40] },
        ];
        return cases.Select(c => new TestCaseData(c).SetName($"GatedDeltaNet {c.Name}"));
    }

    [TestCaseSource(nameof(Cases))]
    public void EngineMatchesOrtKernelAndReference(GatedDeltaNetNodeCase c)
    {
        var model = c.Model();
        var inputs = c.Inputs();
        var reference = c.Reference(inputs);

        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var byEngine = engine.Run(inputs);

        Assert.That(engine.Handover.EngineNodes.Select(n => n.NodeName), Is.EqualTo(new[] { "gated_delta_net" }), "the engine takes the node");
        Assert.That(byEngine["output"].Shape, Is.EqualTo(byOrt["output"].Shape), "output shape");
        Assert.That(byEngine["output"].ElementType, Is.EqualTo(byOrt["output"].ElementType), "output element type");
        OnnxAssert.Shape(byEngine["final_state"], c.B, c.Spec.ValueHeads, c.Spec.ValueDim, c.Spec.KeyDim);
        OnnxAssert.Close(byOrt["output"], reference.Output, "ORT kernel output vs reference", c.Tolerance);
        OnnxAssert.Close(byOrt["final_state"], reference.FinalState, "ORT kernel final_state vs reference", c.Tolerance);
        OnnxAssert.Close(byEngine["output"], reference.Output, "engine output vs reference", c.Tolerance);
        OnnxAssert.Close(byEngine["final_state"], reference.FinalState, "engine final_state vs reference", c.Tolerance);
        OnnxAssert.Close(byEngine["output"], byOrt["output"], "engine output vs ORT kernel output", c.Tolerance);
        OnnxAssert.Close(byEngine["final_state"], byOrt["final_state"], "engine final_state vs ORT kernel final_state", c.Tolerance);
    }

    [Test]
    public void GpuBackendRunsTheNode()
    {
        // The GPU kernels on ILGPU's CPU accelerator: chunked prefill and a decode call.
        foreach (var c in new GatedDeltaNetNodeCase[]
        {
            new() { Spec = new() { DecayGateActivation = "softplus", QkL2Norm = true, Ragged = true }, Lengths = [20, 13] },
            new() { Spec = new() { PackedQkv = true, DecayPerKey = true }, Lengths = [1, 1] },
            new() { Spec = new() { UpdateRule = "gated", DecayGateActivation = "softplus", QkL2Norm = true, Ragged = true }, Lengths = [20, 13] },
            new() { Spec = new() { UpdateRule = "linear" }, Lengths = [1, 1] },
        })
        {
            var inputs = c.Inputs();
            var reference = c.Reference(inputs);
            using var gpu = OnnxTestHost.Open(c.Model(), HandoverBackend.Gpu);
            Assert.That(gpu.Handover.EngineNodes, Has.Exactly(1).Items, c.Name);
            var result = gpu.Run(inputs);
            OnnxAssert.Close(result["output"], reference.Output, $"{c.Name}: output");
            OnnxAssert.Close(result["final_state"], reference.FinalState, $"{c.Name}: final_state");
        }
    }

    [TestCase(false, TestName = "GatedDeltaNet softplus gate far in its negative tail, decay per head")]
    [TestCase(true, TestName = "GatedDeltaNet softplus gate far in its negative tail, decay per key")]
    public void SoftplusGateKeepsItsFarNegativeTail(bool perKey)
    {
        // g = −exp(a_log)·softplus(x) with x = −a_log + [−8, 2]: softplus(x) ≈ e^x from 1e-4 down to 1e-39 (below fp32's
        // smallest normal), which exp(a_log) brings back to gates of −7 .. −3e-4. log(1 + e^x) in fp32, or an exp that
        // flushed to 0, made them 0: the state never decayed. ORT's kernel keeps them.
        float[] aLog = [3f, 30f, 60f, 80f];
        var c = new GatedDeltaNetNodeCase
        {
            Spec = new() { DecayGateActivation = "softplus", DecayPerKey = perKey, GateParameters = (aLog, new float[4]) },
            Lengths = [37],
        };
        var inputs = c.Inputs();
        var decay = inputs["decay"].As<float>();
        var offsets = new TestData(AttentionCase.StableSeed(c.Name)).Uniform(decay.Length, -8, 2);
        int perHead = perKey ? c.Spec.KeyDim : 1;
        for (int i = 0; i < decay.Length; i++) decay[i] = -aLog[i / perHead % aLog.Length] + offsets[i];
        EveryBackendGivesTheReferenceAsOrtDoes(c, inputs);
    }

    [TestCase("softplus", TestName = "GatedDeltaNet softplus gate past float32 decays the state fully, as ORT's kernel")]
    [TestCase("sigmoid", TestName = "GatedDeltaNet sigmoid gate with exp(a_log) past float32 saturates, as ORT's kernel")]
    public void GatesPastFloat32RunAsOrtsKernel(string activation)
    {
        // Head 0: exp(100) overflows float32; head 1: exp(80)·1e5 does, on every fifth token. ORT's kernel takes the softplus
        // gate of −∞ as a factor of 0 and saturates the sigmoid; the engine refused both calls.
        var c = new GatedDeltaNetNodeCase
        {
            Spec = new() { DecayGateActivation = activation, GateParameters = ([100f, 80f, 0f, -1f], new float[4]) },
            Lengths = [37],
        };
        var inputs = c.Inputs();
        var decay = inputs["decay"].As<float>();
        for (int t = 0; t < c.N; t += 5) decay[t * c.Spec.ValueHeads + 1] = 1e5f;

        EveryBackendGivesOrtsFiniteResult(c, inputs);
    }

    [TestCase(false, TensorElementType.Float, TestName = "GatedDeltaNet decay of minus infinity without a gate activation resets the state, as ORT's kernel")]
    [TestCase(true, TensorElementType.Float16, TestName = "GatedDeltaNet float16 per-key decay of minus infinity resets the state, as ORT's kernel")]
    public void ADecayOfMinusInfinityResetsTheState(bool perKey, TensorElementType gateType)
    {
        var c = new GatedDeltaNetNodeCase { Spec = new() { DecayPerKey = perKey, GateElementType = gateType, ElementType = gateType }, Lengths = [37] };
        var inputs = c.Inputs();
        var values = OnnxAssert.Floats(inputs["decay"]);
        for (int i = 0; i < values.Length; i += 7) values[i] = float.NegativeInfinity;
        inputs["decay"] = gateType == TensorElementType.Float16
            ? TensorData.Create(Harness.TestData.ToHalf(values), inputs["decay"].Shape)
            : TensorData.Create(values, inputs["decay"].Shape);

        EveryBackendGivesOrtsFiniteResult(c, inputs);
    }

    [TestCase("softplus", TestName = "GatedDeltaNet softplus gate and sigmoid beta of infinite projections saturate, as ORT's kernel")]
    [TestCase("sigmoid", TestName = "GatedDeltaNet sigmoid gate and sigmoid beta of infinite projections saturate, as ORT's kernel")]
    public void InfiniteGateProjectionsSaturateTheActivations(string activation)
    {
        // decay and beta of ±∞ before their activations: softplus(−∞) = 0 (no decay) and softplus(∞) a factor of 0, the
        // sigmoid gate its bound or 0, beta 1 or 0; ORT's kernel gives finite outputs, the engine refused the calls.
        var c = new GatedDeltaNetNodeCase { Spec = new() { DecayGateActivation = activation, BetaSigmoid = true }, Lengths = [37] };
        var inputs = c.Inputs();
        var decay = inputs["decay"].As<float>();
        var beta = inputs["beta"].As<float>();
        for (int i = 0; i < decay.Length; i += 5) decay[i] = i % 2 == 0 ? float.PositiveInfinity : float.NegativeInfinity;
        for (int i = 1; i < beta.Length; i += 4) beta[i] = i % 3 == 0 ? float.PositiveInfinity : float.NegativeInfinity;

        EveryBackendGivesOrtsFiniteResult(c, inputs);
    }

    /// <summary>ORT's kernel and the CPU and GPU backends give the float64 reference's output and final state, and the backends ORT's output.</summary>
    private static void EveryBackendGivesTheReferenceAsOrtDoes(GatedDeltaNetNodeCase c, Dictionary<string, TensorData> inputs)
    {
        var reference = c.Reference(inputs);
        using var ort = OnnxTestHost.Open(c.Model(), HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        OnnxAssert.Close(byOrt["output"], reference.Output, "ORT kernel output vs reference", c.Tolerance);
        OnnxAssert.Close(byOrt["final_state"], reference.FinalState, "ORT kernel final_state vs reference", c.Tolerance);
        foreach (var backend in new[] { HandoverBackend.Cpu, HandoverBackend.Gpu })
        {
            using var engine = OnnxTestHost.Open(c.Model(), backend);
            var byEngine = engine.Run(inputs);
            OnnxAssert.Close(byEngine["output"], reference.Output, $"{backend}: output vs reference", c.Tolerance);
            OnnxAssert.Close(byEngine["final_state"], reference.FinalState, $"{backend}: final_state vs reference", c.Tolerance);
            OnnxAssert.Close(byEngine["output"], byOrt["output"], $"{backend}: output vs ORT kernel", c.Tolerance);
        }
    }

    /// <summary>ORT's kernel gives finite outputs for the inputs, and the CPU and GPU backends give them too.</summary>
    private static void EveryBackendGivesOrtsFiniteResult(GatedDeltaNetNodeCase c, Dictionary<string, TensorData> inputs)
    {
        using var ort = OnnxTestHost.Open(c.Model(), HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        Assert.That(OnnxAssert.Floats(byOrt["output"]).Concat(OnnxAssert.Floats(byOrt["final_state"])), Is.All.Matches<float>(float.IsFinite), "ORT's outputs are finite");
        foreach (var backend in new[] { HandoverBackend.Cpu, HandoverBackend.Gpu })
        {
            using var engine = OnnxTestHost.Open(c.Model(), backend);
            var byEngine = engine.Run(inputs);
            OnnxAssert.Close(byEngine["output"], byOrt["output"], $"{backend}: output vs ORT kernel", c.Tolerance);
            OnnxAssert.Close(byEngine["final_state"], byOrt["final_state"], $"{backend}: final_state vs ORT kernel", c.Tolerance);
        }
    }

    [Test]
    public void SigmoidGateKeepsItsFarTailUnderALargeLowerBound()
    {
        // g = gate_lower_bound·sigmoid(y) with y in [−100, −84]: sigmoid(y) ≈ e^y lies below fp32's smallest normal, and a
        // bound of −3e38 brings it back to gates of −1e-5 .. −20. An exp that flushed to 0 made them 0, as ORT's kernel does not.
        var c = new GatedDeltaNetNodeCase
        {
            Spec = new() { DecayGateActivation = "sigmoid", GateLowerBound = -3e38f, GateParameters = (new float[4], new float[4]) },
            Lengths = [37],
        };
        var inputs = c.Inputs();
        var decay = inputs["decay"].As<float>();
        new TestData(AttentionCase.StableSeed(c.Name)).Uniform(decay.Length, -100, -84).CopyTo(decay);
        EveryBackendGivesTheReferenceAsOrtDoes(c, inputs);
    }

    [TestCase(HandoverBackend.Cpu)]
    [TestCase(HandoverBackend.Gpu)]
    [TestCase(HandoverBackend.None)]
    public void PrefillThenStepsCarryTheValueMajorState(HandoverBackend backend)
    {
        // One call over 40 tokens (the reference), against a prompt of 37 then three single-token calls, final_state fed back.
        var spec = new GatedDeltaNetNodeSpec { Layout = GatedDeltaNetLayout.Batched, DecayGateActivation = "softplus", BetaSigmoid = true, QkL2Norm = true };
        var whole = new GatedDeltaNetNodeCase { Spec = spec, Lengths = [40, 40] };
        var inputs = whole.Inputs();
        var reference = whole.Reference(inputs);
        using var session = OnnxTestHost.Open(whole.Model(), backend);
        var state = inputs["initial_state"];
        var outputs = new List<float[]>();
        foreach (var (start, length) in new[] { (0, 37), (37, 1), (38, 1), (39, 1) })
        {
            var step = new Dictionary<string, TensorData>(inputs) { ["initial_state"] = state };
            foreach (var name in new[] { "query", "key", "value", "decay", "beta" }) step[name] = Tokens(inputs[name], start, length);
            var result = session.Run(step);
            outputs.Add(OnnxAssert.Floats(result["output"]));
            state = result["final_state"];
        }
        // Outputs [B, S, Hv, dv] per call, joined back along S.
        int row = spec.ValueHeads * spec.ValueDim;
        var joined = new float[reference.Output.Length];
        int at = 0;
        for (int b = 0; b < 2; b++)
            foreach (var (part, length) in outputs.Zip(new[] { 37, 1, 1, 1 }))
            {
                part.AsSpan(b * length * row, length * row).CopyTo(joined.AsSpan(at));
                at += length * row;
            }
        Assert.That(Numerics.RelativeRms(joined, reference.Output), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "outputs of the four calls");
        OnnxAssert.Close(state, reference.FinalState, "final_state after the steps");
    }

    /// <summary>Tokens [start, start + length) of a [B, S, ..] tensor.</summary>
    private static TensorData Tokens(TensorData x, int start, int length)
    {
        var values = x.As<float>();
        long b = x.Shape[0], s = x.Shape[1], row = x.ElementCount / (b * s);
        var part = new float[b * length * row];
        for (long i = 0; i < b; i++)
            values.AsSpan((int)((i * s + start) * row), (int)(length * row)).CopyTo(part.AsSpan((int)(i * length * row)));
        return TensorData.Create(part, [b, length, .. x.Shape[2..]]);
    }

    /// <summary>No tokens (ORT's kernel refuses them): an empty output, the final state the initial one, packed or not.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void NoTokensLeaveTheStateAsItWas(bool packedQkv)
    {
        var model = SampleModels.GatedDeltaNetNode(new GatedDeltaNetNodeSpec { PackedQkv = packedQkv });
        var inputs = ModelInputs.Random(model, new Dictionary<string, long> { ["N"] = 0, ["B"] = 1 });
        inputs["initial_state"] = TensorData.Create(new TestData(2).Normal(4 * 16 * 16), 1, 4, 16, 16);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes, Has.Exactly(1).Items);
        var outputs = engine.Run(inputs);
        Assert.That(outputs["output"].ElementCount, Is.Zero);
        Assert.That(outputs["final_state"].As<float>(), Is.EqualTo(inputs["initial_state"].As<float>()));
    }

    [Test]
    public void OrtKeepsWhatTheEngineDoesNotTakeAndSaysWhy()
    {
        // A build whose capabilities lack a rule, or the op itself: the node stays with ORT, the plan says why.
        var current = EngineCapabilities.Current;
        (GatedDeltaNetNodeSpec Spec, EngineCapabilities Capabilities, string Why)[] left =
        [
            (new() { UpdateRule = "gated" }, current with { UpdateRules = new HashSet<UpdateRule> { UpdateRule.Delta, UpdateRule.GatedDelta } },
                "update_rule gated: no engine kernel for this rule in this build, left to ORT"),
            (new(), current with { EngineOps = current.EngineOps.Where(op => op != "GatedDeltaNet").ToHashSet() },
                "update_rule gated_delta: no engine kernel in this build, left to ORT"),
        ];
        foreach (var (spec, capabilities, why) in left)
        {
            var plan = HandoverRewriter.Rewrite(SampleModels.GatedDeltaNetNode(spec), capabilities);
            Assert.That(plan.EngineNodes, Is.Empty, why);
            Assert.That(plan.Nodes.Single().Detail, Is.EqualTo(why));
            Assert.That(plan.Nodes.Single().ToDomain, Is.EqualTo(HandoverRewriter.MicrosoftDomain));
        }
    }

    public static IEnumerable<TestCaseData> Captures()
    {
        GatedDeltaNetNodeCase[] cases =
        [
            new() { Spec = new() { StateUpdateCapacity = 3 }, CaptureCount = [2, 5] },
            new() { Spec = new() { StateUpdateCapacity = 3, DecayPerKey = true, QkL2Norm = true }, CaptureCount = [1, 3] },
            new() { Spec = new() { StateUpdateCapacity = 4, UpdateRule = "delta" }, CaptureCount = [4, 0] },
            new() { Spec = new() { StateUpdateCapacity = 4 }, CaptureCount = [4, 2], CaptureActive = false },
            new() { Spec = new() { StateUpdateCapacity = 8, Ragged = true, DecayGateActivation = "softplus", BetaSigmoid = true }, Lengths = [3, 1, 12], CaptureCount = [8, 8, -1] },
            new() { Spec = new() { StateUpdateCapacity = 2, PackedQkv = true, ElementType = TensorElementType.Float16 }, Lengths = [1, 1], CaptureCount = [1, 2] },
            new() { Spec = new() { StateUpdateCapacity = 3, UpdateRule = "gated", DecayPerKey = true, QkL2Norm = true }, CaptureCount = [2, 5] },
            new() { Spec = new() { StateUpdateCapacity = 4, UpdateRule = "linear", PackedQkv = true, Ragged = true }, Lengths = [3, 9], CaptureCount = [4, 1] },
            new() { Spec = new() { StateUpdateCapacity = 2, ElementType = TensorElementType.BFloat16 }, CaptureCount = [2, 1] },
            new() { Spec = new() { StateUpdateCapacity = 3, DecayGateActivation = "sigmoid", QkL2Norm = true }, CaptureCount = [3, 2], QkStd = 1e-3 },
        ];
        return cases.Select(c => new TestCaseData(c).SetName($"GatedDeltaNet state_update {c.Name}{(c.CaptureActive ? "" : " inactive")} counts {string.Join(",", c.CaptureCount!)}"));
    }

    /// <summary>
    /// state_update, the layout established by running ORT's kernel: per request the first min(capture_count, capacity,
    /// length) transitions as [decay factors exp(g) | keys as the recurrence uses them | deltas], zeros after; all zeros
    /// when state_update_active is 0.
    /// </summary>
    [TestCaseSource(nameof(Captures))]
    public void StateUpdateMatchesOrtKernelAndReference(GatedDeltaNetNodeCase c)
    {
        var inputs = c.Inputs();
        var expected = c.Reference(inputs);
        using var ort = OnnxTestHost.Open(c.Model(), HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        using var engine = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes, Has.Exactly(1).Items, "the engine takes the node");
        var byEngine = engine.Run(inputs);
        foreach (var (who, result) in new[] { ("ORT", byOrt), ("engine", byEngine) })
        {
            var actual = OnnxAssert.Floats(result["state_update"]);
            Assert.That(actual, Has.Length.EqualTo(expected.StateUpdate!.Length), $"{who}: state_update length");
            for (int i = 0; i < actual.Length; i++)
                Assert.That(actual[i], Is.EqualTo(expected.StateUpdate[i]).Within(1e-5 + 1e-5 * Math.Abs(expected.StateUpdate[i])), $"{who}: state_update[{i}]");
            OnnxAssert.Close(result["output"], expected.Output, $"{who}: output", c.Tolerance);
            OnnxAssert.Close(result["final_state"], expected.FinalState, $"{who}: final_state", c.Tolerance);
        }
    }

    /// <summary>The case's inputs, changed, refused by the engine's kernel naming the node; the session stays usable.</summary>
    private static void AssertRefused(GatedDeltaNetNodeCase c, Action<Dictionary<string, TensorData>> change, string message)
    {
        var inputs = c.Inputs();
        change(inputs);
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        var e = Assert.Catch<ModelRunException>(() => session.Run(inputs))!;
        Assert.That(e.Message, Does.Contain($"{Node}: {message}"));
        Assert.DoesNotThrow(() => session.Run(c.Inputs()), "the session stays usable");
    }

    [Test]
    public void BadInputIsRefusedNamingTheNodeAndTheInput()
    {
        // Heads and dims symbolic in the model, so only the kernel sees the shapes of a call.
        var c = new GatedDeltaNetNodeCase { Spec = new() { KeyDim = 16, ValueDim = 8, SymbolicShapes = true } };
        AssertRefused(c, i => i["initial_state"] = TensorData.Create(new float[2 * 4 * 16 * 8], 2, 4, 16, 8),
            "initial_state: expected shape [2, 4, 8, 16] [B, Hv, dv, dk] (value-major), got [2, 4, 16, 8]");
        AssertRefused(c, i => i["initial_state"] = TensorData.Create(new float[3 * 4 * 8 * 16], 3, 4, 8, 16),
            "query: 38 tokens do not split evenly into the 3 requests of initial_state");
        AssertRefused(c, i => i["beta"] = TensorData.Create(new float[38 * 2], 38, 2), "beta: expected shape [38, 4] [tokens, Hv], got [38, 2]");
        AssertRefused(c, i => i["decay"] = TensorData.Create(Enumerable.Repeat(0.5f, 38 * 4).ToArray(), 38, 4), "decay: log gates must be finite and <= 0, got 0.5");
        AssertRefused(c, i => i["key"] = TensorData.Create(new float[38 * 2 * 8], 38, 2, 8), "key: expected shape [38, 2, 16] the query's [.., Hq, dk], got [38, 2, 8]");
        AssertRefused(c, i => i["value"] = TensorData.Create(new float[38 * 3 * 8], 38, 3, 8),
            "value: value heads (3) must be a multiple of the query/key heads (2)");

        var fused = new GatedDeltaNetNodeCase { Spec = new() { DecayGateActivation = "softplus", BetaSigmoid = true, SymbolicShapes = true } };
        AssertRefused(fused, i => i["decay"].As<float>()[7] = float.NaN, "decay: values must not be NaN, got NaN at flat index 7");
        AssertRefused(fused, i => i["beta"].As<float>()[3] = float.NaN, "beta: values must not be NaN, got NaN at flat index 3");
        // exp(a_log) past float32 times a softplus of 0: ∞·0, a NaN gate in ORT's kernel too.
        AssertRefused(fused, i =>
        {
            i["a_log"] = TensorData.Create(new[] { 0f, 0f, 100f, 0f }, 4);
            i["decay"].As<float>()[6] = -1e4f;
        }, "a_log: exp(a_log) overflows float32 at head 2 (a_log = 100) where the gate's other factor is 0, at flat index 6");
        var perKeyBias = new GatedDeltaNetNodeCase { Spec = new() { DecayGateActivation = "softplus", DtBiasPerKeyRank = 2 } };
        using (var session = OnnxTestHost.Open(perKeyBias.Model(), HandoverBackend.Cpu))
            Assert.That(Assert.Catch<ModelRunException>(() => session.Run(perKeyBias.Inputs()))!.Message,
                Does.Contain($"{Node}: dt_bias: expected [Hv] = [4] (a per-key dt_bias needs a per-key decay), got [4, 16]"), "ORT refuses it too");

        var ragged = new GatedDeltaNetNodeCase { Spec = new() { Ragged = true }, Lengths = [10, 9] };
        AssertRefused(ragged, i => i["cu_seqlens"] = TensorData.Create(new[] { 0, 12, 9 }, 3), "cu_seqlens must not decrease");
        AssertRefused(ragged, i => i["cu_seqlens"] = TensorData.Create(new[] { 0, 10, 20 }, 3), "cu_seqlens must end at the packed token count 19");
        var batched = new GatedDeltaNetNodeCase { Spec = new() { Layout = GatedDeltaNetLayout.Batched, SymbolicShapes = true } };
        AssertRefused(batched, i => i["initial_state"] = TensorData.Create(new float[4 * 16 * 16], 1, 4, 16, 16),
            "initial_state: expected shape [2, 4, 16, 16] [B, Hv, dv, dk] (value-major), got [1, 4, 16, 16]");
    }

    /// <summary>
    /// Empty [B, S, ..] tensors whose token axes pass int: refused naming the node and the query, as ORT's kernel refuses them
    /// ("total_tokens must be positive and fit in int32"). Before, an OverflowException named neither.
    /// </summary>
    [TestCase(0L, 1L << 32)]
    [TestCase(1L << 32, 0L)]
    public void TokenAxesPastIntAreRefusedNamingTheQuery(long batch, long length)
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.MicrosoftDomain, 1);
        var inputs = new Dictionary<string, TensorData>();
        string Input(string name, params object[] heads)
        {
            inputs[name] = TensorData.Create(Array.Empty<float>(), [batch, length, .. heads.Cast<int>().Select(h => (long)h)]);
            return b.Input(name, F.Float, ["B", "S", .. heads]);
        }
        b.Node("GatedDeltaNet", [Input("query", 1, 4), Input("key", 1, 4), Input("value", 1, 4), "", Input("decay", 1), Input("beta", 1)],
            domain: HandoverRewriter.MicrosoftDomain, name: "gated_delta_net", outputNames: ["output"]);
        b.Output("output", F.Float, null);
        using var session = OnnxTestHost.Open(b.Build(), HandoverBackend.Cpu);
        var e = Assert.Throws<ModelRunException>(() => session.Run(inputs));
        Assert.That(e!.Message, Does.Contain($"{Node}: query: token axes [{batch}, {length}] hold more than {int.MaxValue} tokens"));
    }

    /// <summary>
    /// decay and beta share one type parameter in ORT's schema: a 16-bit node whose decay is float32 and beta its own type (or
    /// the other way round) is refused by ORT alone when the model loads, and by the engine naming the node; it ran before.
    /// </summary>
    [TestCase(TensorElementType.Float16, "decay")]
    [TestCase(TensorElementType.Float16, "beta")]
    [TestCase(TensorElementType.BFloat16, "decay")]
    [TestCase(TensorElementType.BFloat16, "beta")]
    public void DecayAndBetaOfTwoTypesAreRefusedAsOrtRefusesThem(TensorElementType type, string float32Input)
    {
        var c = new GatedDeltaNetNodeCase { Spec = new() { ElementType = type, GateElementType = type }, Lengths = [5, 5] };
        var model = c.Model();
        model.Graph.Input.Single(i => i.Name == float32Input).Type.TensorType.ElemType = (int)TensorElementType.Float;
        var inputs = c.Inputs();
        inputs[float32Input] = TensorData.Create(OnnxAssert.Floats(inputs[float32Input]), inputs[float32Input].Shape);

        Assert.Catch<Exception>(() =>
        {
            using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
            ort.Run(inputs);
        }, "ORT alone refuses the model");
        string types = float32Input == "decay" ? $"float and {type.ToString().ToLowerInvariant()}" : $"{type.ToString().ToLowerInvariant()} and float";
        var e = Assert.Catch<Exception>(() =>
        {
            using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
            engine.Run(inputs);
        }, "the hand-over refuses it too")!;
        Assert.That(e.Message, Does.Contain($"{Node}: decay ('decay') and beta ('beta') must have one element type, the model gives {types}"));
    }

    [Test]
    public void BadNodesAreRefusedWhenTheSessionOpens()
    {
        (GatedDeltaNetNodeSpec Spec, string Fragment)[] nodes =
        [
            // ORT's kernel refuses a bound of 0 (or −0) with any gate_activation, none included.
            (new() { DecayGateActivation = "kda", GateLowerBound = 0f }, "gate_lower_bound must be finite and negative (the gate is a log decay), got 0"),
            (new() { GateLowerBound = -0f }, "gate_lower_bound must be finite and negative (the gate is a log decay), got -0"),
            (new() { DecayGateActivation = "kda", GateLowerBound = 1f }, "gate_lower_bound must be finite and negative (the gate is a log decay), got 1"),
            (new() { DecayGateActivation = "tanh" }, "gate_activation must be one of none, softplus (qwen), sigmoid (kda), got 'tanh'"),
            (new() { QHeads = 4, ValueHeads = 2 }, "value heads (2) must be a multiple of the query/key heads (4); more query heads than value heads is refused"),
            (new() { QHeads = 2, ValueHeads = 3 }, "value heads (3) must be a multiple of the query/key heads (2)"),
        ];
        foreach (var (spec, fragment) in nodes)
        {
            var e = Assert.Catch<Exception>(() => OnnxTestHost.Open(SampleModels.GatedDeltaNetNode(spec), HandoverBackend.Cpu).Dispose())!;
            Assert.That(e.Message, Does.Contain($"{Node}: {fragment}"), spec.ToString());
        }
    }
}

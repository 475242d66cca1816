using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// Every update rule × decay form × beta form × grouped heads (query heads, and value heads as Qwen3-Next/3.5 group them)
/// × past state: the engine-backed session, ONNX Runtime's own com.microsoft.LinearAttention kernel (same model, same
/// data) and the float64 reference.
/// </summary>
[TestFixture]
public sealed class LinearAttentionHandoverTests
{
    public static IEnumerable<TestCaseData> Grid()
    {
        foreach (var rule in Enum.GetValues<UpdateRule>())
        {
            var decays = LinearAttentionSignature.UsesDecay(rule) ? new[] { DecayForm.PerKey, DecayForm.PerHead } : [DecayForm.PerKey];
            var betas = LinearAttentionSignature.UsesBeta(rule) ? new[] { true, false } : [true];
            foreach (var decay in decays)
                foreach (bool betaPerHead in betas)
                    foreach (var (hq, hkv) in new[] { (2, 2), (4, 2), (2, 4) })
                        foreach (bool past in new[] { false, true })
                        {
                            // Grouped value heads (q_num_heads 2, kv_num_heads 4) with a past state only: the state is what they change.
                            if (hq < hkv && !past) continue;
                            var c = new LinearAttentionNodeCase { Rule = rule, Decay = decay, BetaPerHead = betaPerHead, Hq = hq, Hkv = hkv, PastState = past };
                            yield return new TestCaseData(c).SetName($"LinearAttention {c.Name}");
                        }
        }
    }

    public static IEnumerable<TestCaseData> Shapes()
    {
        LinearAttentionNodeCase[] cases =
        [
            // Decode (one token, recurrent path), a short prompt, chunk boundaries, a long prompt.
            new() { Rule = UpdateRule.Gated, T = 1, PastState = true },
            new() { Rule = UpdateRule.Linear, T = 1, Hq = 4, Hkv = 1, PastState = true },
            new() { Rule = UpdateRule.Gated, Decay = DecayForm.PerHead, T = 5, PastState = true },
            new() { Rule = UpdateRule.Gated, T = 64, B = 1 },
            new() { Rule = UpdateRule.Gated, T = 200, B = 1, Hq = 2, Hkv = 1, Dk = 32, Dv = 32, PastState = true },
            new() { Rule = UpdateRule.Gated, Decay = DecayForm.PerHead, T = 130, Dk = 64, Dv = 48, GateStrength = 5 },
            // Explicit scale, multi-query heads, fixed dims in the model, strong gates.
            new() { Rule = UpdateRule.Gated, Scale = 0.5f, PastState = true },
            new() { Rule = UpdateRule.Linear, Hq = 4, Hkv = 1, Scale = 0.125f },
            new() { Rule = UpdateRule.Gated, SymbolicDims = false, PastState = true },
            new() { Rule = UpdateRule.Gated, GateStrength = 20, PastState = true },
            // gated_delta with a per-key decay: decode, several chunks, strong gates.
            new() { Rule = UpdateRule.GatedDelta, T = 1, PastState = true },
            new() { Rule = UpdateRule.GatedDelta, T = 200, B = 1, Hq = 2, Hkv = 1, Dk = 32, Dv = 32, PastState = true },
            new() { Rule = UpdateRule.GatedDelta, GateStrength = 20, PastState = true },
            // float16 tensors: every rule, decode and prefill, both decay forms, shared beta.
            new() { Rule = UpdateRule.Linear, Half = true, PastState = true },
            new() { Rule = UpdateRule.Gated, Half = true, T = 100, PastState = true },
            new() { Rule = UpdateRule.Gated, Decay = DecayForm.PerHead, Half = true, T = 1, PastState = true },
            new() { Rule = UpdateRule.Delta, Half = true, Hq = 4, BetaPerHead = false },
            new() { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, Half = true, T = 70, PastState = true },
            new() { Rule = UpdateRule.GatedDelta, Half = true, T = 1, PastState = true },
            // Grouped value heads (Qwen3.5's layer: gated_delta, per-head decay, scale 1, 2 value heads per query/key head):
            // decode, several chunks, four value heads per query/key head, float16.
            new() { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, T = 1, Hq = 2, Hkv = 4, Scale = 1f, PastState = true },
            new() { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, T = 130, B = 1, Hq = 2, Hkv = 4, Dk = 32, Dv = 32, Scale = 1f, PastState = true },
            new() { Rule = UpdateRule.Gated, T = 100, Hq = 1, Hkv = 4, PastState = true },
            new() { Rule = UpdateRule.GatedDelta, Half = true, T = 40, Hq = 2, Hkv = 4, PastState = true },
        ];
        return cases.Select(c => new TestCaseData(c).SetName($"LinearAttention shape {c.Name}{(c.SymbolicDims ? "" : " fixed dims")}{(c.GateStrength != 1 ? $" gate×{c.GateStrength}" : "")}"));
    }

    [TestCaseSource(nameof(Grid))]
    [TestCaseSource(nameof(Shapes))]
    public void EngineMatchesOrtKernelAndReference(LinearAttentionNodeCase c)
    {
        var model = c.Model();
        var inputs = c.Inputs();
        var reference = c.Reference(inputs);

        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var byEngine = engine.Run(inputs);

        bool engineTakesIt = OnnxTestHost.Host.Capabilities.Takes(c.Rule);
        Assert.That(engine.Handover.EngineNodes.Select(n => n.NodeName), engineTakesIt ? Is.EqualTo(new[] { "linear_attention" }) : Is.Empty,
            "which nodes the engine takes over");
        OnnxAssert.Shape(byEngine["output"], c.B, c.T, c.OutputHeads * c.Dv);
        OnnxAssert.Shape(byEngine["present_state"], c.B, c.Hkv, c.Dk, c.Dv);
        Assert.That(byEngine["output"].ElementType, Is.EqualTo(byOrt["output"].ElementType), "output element type");
        OnnxAssert.Close(byOrt["output"], reference.Output, "ORT kernel output vs reference", c.Tolerance);
        OnnxAssert.Close(byOrt["present_state"], reference.State, "ORT kernel present_state vs reference", c.Tolerance);
        OnnxAssert.Close(byEngine["output"], reference.Output, "engine output vs reference", c.Tolerance);
        OnnxAssert.Close(byEngine["present_state"], reference.State, "engine present_state vs reference", c.Tolerance);
        OnnxAssert.Close(byEngine["output"], byOrt["output"], "engine output vs ORT kernel output", c.Tolerance);
        OnnxAssert.Close(byEngine["present_state"], byOrt["present_state"], "engine present_state vs ORT kernel present_state", c.Tolerance);
    }

    /// <summary>
    /// A decay of −∞ (a gate of factor 0: the state reset) — what an unfused gate chain gives when exp(A_log) passes float32 —
    /// runs as ORT's kernel runs it, every rule and decay form, whole sequences and decode, float32 and float16.
    /// </summary>
    [Test]
    public void ADecayOfMinusInfinityResetsTheStateAsOrtsKernelDoes(
        [Values(UpdateRule.Gated, UpdateRule.GatedDelta)] UpdateRule rule, [Values(DecayForm.PerKey, DecayForm.PerHead)] DecayForm decay,
        [Values(1, 37)] int t, [Values(false, true)] bool half, [Values(HandoverBackend.Cpu, HandoverBackend.Gpu)] HandoverBackend backend)
    {
        var c = new LinearAttentionNodeCase { Rule = rule, Decay = decay, T = t, PastState = true, Half = half };
        var model = c.Model();
        var inputs = c.Inputs();
        var values = OnnxAssert.Floats(inputs["decay"]);
        for (int i = 0; i < values.Length; i += 5) values[i] = float.NegativeInfinity;
        inputs["decay"] = half ? TensorData.Create(TestData.ToHalf(values), inputs["decay"].Shape) : TensorData.Create(values, inputs["decay"].Shape);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        using var engine = OnnxTestHost.Open(model, backend);
        var byEngine = engine.Run(inputs);
        Assert.That(OnnxAssert.Floats(byOrt["output"]), Is.All.Matches<float>(float.IsFinite), "ORT's kernel gives finite outputs");
        OnnxAssert.Close(byEngine["output"], byOrt["output"], "engine output vs ORT kernel output", c.Tolerance);
        OnnxAssert.Close(byEngine["present_state"], byOrt["present_state"], "engine present_state vs ORT kernel present_state", c.Tolerance);
    }

    [Test]
    public void DecodeFeedsPresentStateBackAsPastState()
    {
        // A prompt of 40 tokens run at once equals 30 tokens of prefill followed by 10 one-token steps.
        var full = new LinearAttentionNodeCase { Rule = UpdateRule.Gated, B = 1, T = 40, Hq = 4, Hkv = 2, PastState = true };
        var inputs = full.Inputs();
        var reference = full.Reference(inputs);
        using var session = OnnxTestHost.Open(full.Model(), HandoverBackend.Cpu);
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(1));

        var outputs = new List<float>();
        var state = inputs["past_state"];
        foreach (var (start, length) in PromptThenSteps)
        {
            var result = session.Run(Step(inputs, start, length, state));
            outputs.AddRange(result["output"].As<float>());
            state = result["present_state"];
        }
        OnnxAssert.Close(TensorData.Create(outputs.ToArray(), 1, 40, full.Hq * full.Dv), reference.Output, "output token by token");
        OnnxAssert.Close(state, reference.State, "state after decoding");
    }

    [TestCase(HandoverBackend.Cpu)]
    [TestCase(HandoverBackend.None)]
    public void DecodeIntoCallerTensorsAlternatesTwoStates(HandoverBackend backend)
    {
        // 30 tokens of prefill then 10 one-token steps, each step writing its output and present_state into tensors the
        // caller holds (NaN before the run), the two state tensors swapping roles: equal to the whole prompt at once.
        var full = new LinearAttentionNodeCase { Rule = UpdateRule.GatedDelta, B = 1, T = 40, Hq = 4, Hkv = 2, PastState = true };
        var inputs = full.Inputs();
        var reference = full.Reference(inputs);
        using var session = OnnxTestHost.Open(full.Model(), backend);
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(backend == HandoverBackend.None ? 0 : 1));

        var past = TensorData.Create((float[])inputs["past_state"].As<float>().Clone(), inputs["past_state"].Shape);
        var present = TensorData.Create(new float[past.ElementCount], past.Shape);
        var outputs = new List<float>();
        foreach (var (start, length) in PromptThenSteps)
        {
            var step = Step(inputs, start, length, past);
            var output = TensorData.Create(Harness.Numerics.NaNs(length * full.Hq * full.Dv), 1, length, full.Hq * full.Dv);
            present.As<float>().AsSpan().Fill(float.NaN);
            session.RunInto(step, new Dictionary<string, TensorData> { ["output"] = output, ["present_state"] = present });
            outputs.AddRange(output.As<float>());
            (past, present) = (present, past);
        }
        OnnxAssert.Close(TensorData.Create(outputs.ToArray(), 1, 40, full.Hq * full.Dv), reference.Output, "output token by token");
        OnnxAssert.Close(past, reference.State, "state after decoding");
    }

    [Test]
    public void RunIntoRefusesUnknownSharedNullOrMisshapenOutputsAndTheSessionStaysUsable()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Gated, B = 1, T = 3, Hq = 2, Hkv = 2, PastState = true };
        var inputs = c.Inputs();
        var reference = c.Reference(inputs);
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        var state = inputs["past_state"];
        TensorData Output(long t) => TensorData.Create(Harness.Numerics.NaNs((int)(t * c.Hq * c.Dv)), 1, t, c.Hq * c.Dv);

        var unknown = Assert.Throws<ArgumentException>(() => session.RunInto(inputs, new Dictionary<string, TensorData> { ["out"] = Output(3) }));
        Assert.That(unknown!.Message, Does.StartWith("out: model '").And.Contain("has no such output (outputs: output, present_state)"));
        // Run names the outputs it is asked for as RunInto does, before ORT sees them.
        var unknownRun = Assert.Throws<ArgumentException>(() => session.Run(inputs, ["output", "out"]));
        Assert.That(unknownRun!.Message, Does.StartWith("out: model '").And.Contain("has no such output (outputs: output, present_state)"));
        var none = Assert.Throws<ArgumentException>(() => session.Run(inputs, Array.Empty<string>()));
        Assert.That(none!.Message, Does.StartWith("no output asked for"));
        var shared = Assert.Throws<ArgumentException>(() => session.RunInto(inputs, new Dictionary<string, TensorData> { ["present_state"] = state }));
        Assert.That(shared!.Message, Does.StartWith("present_state: shares its array with the input past_state"));
        var first = Output(3);
        var together = Assert.Throws<ArgumentException>(() => session.RunInto(inputs, new Dictionary<string, TensorData>
        {
            ["output"] = first,
            ["present_state"] = TensorData.Create(first.As<float>(), first.ElementCount),
        }));
        Assert.That(together!.Message, Does.StartWith("present_state: shares its array with the output output"));
        var noOutput = Assert.Throws<ArgumentNullException>(() => session.RunInto(inputs, new Dictionary<string, TensorData> { ["output"] = null! }));
        Assert.That(noOutput!.Message, Does.StartWith("output 'output' is null"));
        var noInput = Assert.Throws<ArgumentNullException>(() => session.Run(new Dictionary<string, TensorData>(inputs) { ["past_state"] = null! }));
        Assert.That(noInput!.Message, Does.Contain("input 'past_state' is null"));
        var misshapen = Assert.Throws<ModelRunException>(() => session.RunInto(inputs, new Dictionary<string, TensorData> { ["output"] = Output(2) }));
        Assert.That(misshapen!.Message, Does.StartWith("running the model failed"));

        var output = Output(3);
        session.RunInto(inputs, new Dictionary<string, TensorData> { ["output"] = output });
        OnnxAssert.Close(output, reference.Output, "output after the refused calls");
    }

    /// <summary>The calls of the decode tests over 40 tokens: a prompt of 30 at once, then 10 one-token steps.</summary>
    private static readonly (int Start, int Length)[] PromptThenSteps =
        [(0, 30), .. Enumerable.Range(30, 10).Select(t => (t, 1))];

    /// <summary>Tokens [start, start + length) of every (1, T, W) input, and the given past_state.</summary>
    private static Dictionary<string, TensorData> Step(Dictionary<string, TensorData> inputs, int start, int length, TensorData pastState)
    {
        var step = inputs.Where(p => p.Key != "past_state").ToDictionary(p => p.Key, p => SliceTokens(p.Value, start, length));
        step["past_state"] = pastState;
        return step;
    }

    /// <summary>Tokens [start, start + length) of a (1, T, W) tensor.</summary>
    private static TensorData SliceTokens(TensorData t, int start, int length)
    {
        int width = (int)t.Shape[2];
        return TensorData.Create(t.As<float>().AsSpan(start * width, length * width).ToArray(), 1, length, width);
    }
}

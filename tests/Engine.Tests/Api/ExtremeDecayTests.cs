using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// Decays at both ends of fp32's reach. Within 2e-5 of 1 (Lightning's last layers, slow GLA heads) over 4,000 tokens:
/// multiplied in as e^g rounded to fp32, the same decay at every token drifted the recurrent forms' state from the float64
/// reference by 2e-5 to 4e-5 (relative RMS; 1.2e-4 at 16,000 tokens), and so did the CPU's per-key chunked form, which
/// multiplied a chunk's rounded factors into the state's decay. Below 3e-8 (a token that all but resets the state and
/// writes almost nothing): added as S + (e^g − 1) S, e^g − 1 rounded to −1 and the decayed state was dropped. In two
/// parts, S + near S + far S (SimdMath.DecayParts), both stay within the fp32 tolerance.
/// </summary>
[TestFixture]
public sealed class ExtremeDecayTests
{
    private const int K = 16, V = 16;

    public enum Rule { GlaPerHead, GlaPerKey, Lightning, DeltaPerHead, DeltaPerKey }

    private static AttentionResult<float> Run(EngineDevice device, Rule rule, AttentionMode mode, int t, StateLayout layout, float gate = -1e-5f)
    {
        var data = new TestData(23);
        var q = Tensor.Create(data.Normal(t * K), [1, t, 1, K]);
        var k = Tensor.Create(data.Normal(t * K, 0.25), [1, t, 1, K]);
        var v = Tensor.Create(data.Normal(t * V), [1, t, 1, V]);
        var headGate = Tensor.Create(Enumerable.Repeat(gate, t).ToArray(), [1, t, 1]);
        var keyGate = Tensor.Create(Enumerable.Range(0, t * K).Select(i => gate * (1 + i % K / (float)K)).ToArray(), [1, t, 1, K]);
        var beta = Tensor.Create(Enumerable.Repeat(1e-4f, t).ToArray(), [1, t, 1]);
        var gla = new GlaOptions { Mode = mode, StateLayout = layout };
        var delta = new DeltaRuleOptions { Mode = mode, StateLayout = layout };
        return rule switch
        {
            Rule.GlaPerHead => Engine.Gla.Forward(device, q, k, v, headGate, gla),
            Rule.GlaPerKey => Engine.Gla.Forward(device, q, k, v, keyGate, gla),
            Rule.Lightning => Engine.Lightning.Forward(device, q, k, v, new LightningOptions { Mode = mode, Slopes = [-gate], StateLayout = layout }),
            Rule.DeltaPerHead => Engine.DeltaRule.Forward(device, q, k, v, beta, headGate, delta),
            _ => Engine.DeltaRule.Forward(device, q, k, v, beta, keyGate, delta),
        };
    }

    /// <summary>
    /// 100 tokens: 50 ordinary ones build a state; token 50 decays it by e^−19 (5.6e-9), the 49 after it by e^−0.001 each,
    /// and from token 50 on they write almost nothing (keys 1e-12 of the others, beta 1e-4), so the decayed state is nearly
    /// all of the final state and of the late outputs. Every chunk size puts token 50 in a chunk whose decay is below 3e-8.
    /// </summary>
    private static AttentionResult<float> RunStrongDecay(EngineDevice device, Rule rule, AttentionMode mode, StateLayout layout)
    {
        const int t = 100, reset = 50;
        var data = new TestData(29);
        var q = Tensor.Create(data.Normal(t * K), [1, t, 1, K]);
        var keys = data.Normal(t * K, 0.25);
        for (int i = reset * K; i < keys.Length; i++) keys[i] *= 1e-12f;
        var k = Tensor.Create(keys, [1, t, 1, K]);
        var v = Tensor.Create(data.Normal(t * V), [1, t, 1, V]);
        float Gate(int token) => token < reset ? -0.05f : token == reset ? -19f : -1e-3f;
        var headGate = Tensor.Create(Enumerable.Range(0, t).Select(Gate).ToArray(), [1, t, 1]);
        var keyGate = Tensor.Create(Enumerable.Range(0, t * K).Select(i => Gate(i / K) * (1 + i % K / (float)K)).ToArray(), [1, t, 1, K]);
        var beta = Tensor.Create(Enumerable.Range(0, t).Select(i => i < reset ? 0.5f : 1e-4f).ToArray(), [1, t, 1]);
        var gla = new GlaOptions { Mode = mode, StateLayout = layout };
        var delta = new DeltaRuleOptions { Mode = mode, StateLayout = layout };
        return rule switch
        {
            Rule.GlaPerHead => Engine.Gla.Forward(device, q, k, v, headGate, gla),
            Rule.GlaPerKey => Engine.Gla.Forward(device, q, k, v, keyGate, gla),
            Rule.DeltaPerHead => Engine.DeltaRule.Forward(device, q, k, v, beta, headGate, delta),
            _ => Engine.DeltaRule.Forward(device, q, k, v, beta, keyGate, delta),
        };
    }

    [TestCaseSource(nameof(StrongDecayCases))]
    public void AStateDecayedBelowFp32sSpacingNearOneIsKept(Rule rule, TestBackend backend, AttentionMode mode, StateLayout layout)
    {
        var expected = RunStrongDecay(TestDevices.Reference, rule, mode, layout);
        var actual = RunStrongDecay(TestDevices.Get(backend), rule, mode, layout);
        // The outputs after the reset: those the decayed state makes.
        float[] lateActual = actual.Output.ToArray()[(51 * V)..], lateExpected = expected.Output.ToArray()[(51 * V)..];
        // The GPU's chunked forms multiply the state by exp of the chunk's gates summed in fp32, which a gate of −19 among
        // weak ones leaves 1.1e-5 from the reference here (README: where fp32 runs out); a dropped state would be ~1 away.
        double tolerance = backend != TestBackend.Cpu && mode == AttentionMode.Chunked ? 1e-4 : Numerics.Fp32Tolerance;
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(lateActual, lateExpected), Is.LessThanOrEqualTo(tolerance), "outputs after the reset");
            Assert.That(Numerics.RelativeRms(actual.FinalState.ToArray(), expected.FinalState.ToArray()), Is.LessThanOrEqualTo(tolerance), "final state");
        });
    }

    private static IEnumerable<TestCaseData> StrongDecayCases() => Cases().Where(c => (Rule)c.Arguments[0]! != Rule.Lightning);

    private static IEnumerable<TestCaseData> Cases() =>
        from rule in Enum.GetValues<Rule>()
        from backend in TestDevices.For(small: true)
        from mode in Enum.GetValues<AttentionMode>()
        from layout in Enum.GetValues<StateLayout>()
        where layout == StateLayout.KeyMajor || (backend == TestBackend.Cpu && mode == AttentionMode.Recurrent)
        select new TestCaseData(rule, backend, mode, layout);

    [TestCaseSource(nameof(Cases))]
    public void TheStateOfADecayNearOneDoesNotDrift(Rule rule, TestBackend backend, AttentionMode mode, StateLayout layout)
    {
        const int t = 4000;
        var expected = Run(TestDevices.Reference, rule, mode, t, layout);
        var actual = Run(TestDevices.Get(backend), rule, mode, t, layout);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(actual.Output.ToArray(), expected.Output.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(actual.FinalState.ToArray(), expected.FinalState.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }

    private static IEnumerable<TestCaseData> RecurrentCases() =>
        from c in Cases()
        where (AttentionMode)c.Arguments[2]! == AttentionMode.Recurrent
        select new TestCaseData(c.Arguments[0], c.Arguments[1], c.Arguments[3]);

    /// <summary>
    /// Decays within half an ulp of 1 (g = −3e-8, about the slope of a MiniMax-01 last layer's slowest heads, 2^−8 · 1e-5):
    /// S + near S rounded on its own gave S back at every token, so the recurrent forms (CPU and GPU) dropped the decay and
    /// drifted from the float64 reference by 3e-5 to 7e-5 over 4,000 tokens. The near part joins the token's write before
    /// the state is added.
    /// </summary>
    [TestCaseSource(nameof(RecurrentCases))]
    public void ADecayWithinHalfAnUlpOfOneIsNotDroppedAtEveryToken(Rule rule, TestBackend backend, StateLayout layout)
    {
        const int t = 4000;
        var expected = Run(TestDevices.Reference, rule, AttentionMode.Recurrent, t, layout, gate: -3e-8f);
        var actual = Run(TestDevices.Get(backend), rule, AttentionMode.Recurrent, t, layout, gate: -3e-8f);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(actual.Output.ToArray(), expected.Output.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(actual.FinalState.ToArray(), expected.FinalState.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }

    /// <summary>
    /// One decode step from a state of 3e38 decayed by 0.75 with a write of −2.8e38: the decayed sum, −5.5e37, fits fp32, but
    /// the recurrent forms (CPU and GPU) formed near S + k vᵀ = −3.55e38 first and refused the call as an fp32 overflow, where
    /// the chunked forms and the reference computed it. A write past half fp32's range now takes its decay as one factor.
    /// </summary>
    [Test]
    public void AWriteThatCancelsAStateNearFp32sRangeIsComputed(
        [Values(Rule.GlaPerHead, Rule.GlaPerKey, Rule.Lightning)] Rule rule, [Values] TestBackend backend, [Values] StateLayout layout)
    {
        float gate = MathF.Log(0.75f);
        var q = Tensor.Create(Enumerable.Repeat(1e-30f, K).ToArray(), [1, 1, 1, K]);
        var k = Tensor.Create(Enumerable.Repeat(-1f, K).ToArray(), [1, 1, 1, K]);
        var v = Tensor.Create(Enumerable.Repeat(2.8e38f, V).ToArray(), [1, 1, 1, V]);
        var initial = Tensor.Create(Enumerable.Repeat(3e38f, K * V).ToArray(), [1, 1, K, V]);
        AttentionResult<float> Step(EngineDevice device) => rule switch
        {
            Rule.GlaPerHead => Engine.Gla.Forward(device, q, k, v, Tensor.Create([gate], [1, 1, 1]),
                new GlaOptions { Mode = AttentionMode.Recurrent, StateLayout = layout }, initial),
            Rule.GlaPerKey => Engine.Gla.Forward(device, q, k, v, Tensor.Create(Enumerable.Repeat(gate, K).ToArray(), [1, 1, 1, K]),
                new GlaOptions { Mode = AttentionMode.Recurrent, StateLayout = layout }, initial),
            _ => Engine.Lightning.Forward(device, q, k, v, new LightningOptions { Mode = AttentionMode.Recurrent, Slopes = [-gate], StateLayout = layout }, initial),
        };
        var expected = Step(TestDevices.Reference);
        var actual = Step(TestDevices.Get(backend));
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(actual.Output.ToArray(), expected.Output.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(actual.FinalState.ToArray(), expected.FinalState.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }
}

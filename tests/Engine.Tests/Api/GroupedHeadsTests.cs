using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// Heads grouped either way: the layouts <see cref="HeadLayout"/> takes and refuses, the facades' checks naming the
/// tensor whose heads do not fit, the convenience form's shapes, and the float64 references with grouped value heads
/// against the same references run on q and k repeated per value head (torch's repeat_interleave), an independent
/// statement of what grouped value heads mean.
/// </summary>
[TestFixture]
public sealed class GroupedHeadsTests
{
    [TestCase(4, 2, 2, 2, 1, 4)]
    [TestCase(2, 2, 4, 1, 2, 4)]
    [TestCase(16, 16, 32, 1, 2, 32)]
    [TestCase(3, 3, 3, 1, 1, 3)]
    public void LayoutsGroupedEitherWay(int q, int k, int v, int group, int valueGroup, int outputHeads)
    {
        var heads = new HeadLayout(q, k, v, 8, 4);
        Assert.Multiple(() =>
        {
            Assert.That(heads.Group, Is.EqualTo(group), "output heads per value head");
            Assert.That(heads.ValueGroup, Is.EqualTo(valueGroup), "value heads per query/key head");
            Assert.That(heads.OutputHeads, Is.EqualTo(outputHeads));
            Assert.That(heads.StatePerSequence, Is.EqualTo((long)v * 8 * 4));
            Assert.That(heads.KeyHeadOf(v - 1), Is.EqualTo(k - 1));
            Assert.That(heads.QueryHeadOf(outputHeads - 1), Is.EqualTo(q - 1));
        });
        Assert.That(new HeadLayout(4, 2, 8, 4), Is.EqualTo(new HeadLayout(4, 2, 2, 8, 4)), "the four-argument form shares k's heads with v");
    }

    [TestCase(3, 2, 2, "qHeads", "query heads (3) must be a multiple of key/value heads (2)")]
    [TestCase(2, 2, 3, "valueHeads", "value heads (3) must equal the key heads (2) or be a multiple of them")]
    [TestCase(4, 4, 2, "valueHeads", "value heads (2) must equal the key heads (4) or be a multiple of them")]
    [TestCase(4, 2, 4, "qHeads", "the query heads must equal the key heads, got 4")]
    [TestCase(0, 1, 1, "qHeads", "query heads must be >= 1")]
    [TestCase(1, 1, 0, "valueHeads", "value heads must be >= 1")]
    public void LayoutsGroupedNeitherWayAreRefused(int q, int k, int v, string parameter, string fragment)
    {
        var e = Assert.Catch<ArgumentException>(() => _ = new HeadLayout(q, k, v, 8, 4))!;
        Assert.That(e.ParamName, Is.EqualTo(parameter));
        Assert.That(e.Message, Does.Contain(fragment));
    }

    private static void Gla(nint[] q, nint[] k, nint[] v, nint[]? g, nint[] output, nint[]? initialState = null)
    {
        static float[] Zeros(nint[] s) => new float[s.Aggregate(1L, (a, d) => a * d)];
        Engine.Gla.Forward<float>(TestDevices.Get(TestBackend.Cpu),
            new ReadOnlyTensorSpan<float>(Zeros(q), q), new ReadOnlyTensorSpan<float>(Zeros(k), k), new ReadOnlyTensorSpan<float>(Zeros(v), v),
            g is null ? default : new ReadOnlyTensorSpan<float>(Zeros(g), g), new TensorSpan<float>(Zeros(output), output),
            initialState is null ? default : new ReadOnlyTensorSpan<float>(Zeros(initialState), initialState));
    }

    private static void AssertRejected(string tensor, string fragment, TestDelegate call)
    {
        var e = Assert.Catch<ArgumentException>(call)!;
        Assert.That(e.ParamName, Is.EqualTo(tensor), e.Message);
        Assert.That(e.Message, Does.Contain(fragment));
    }

    [Test]
    public void FacadesTakeGroupedValueHeadsAndNameTheTensorThatDoesNotFit()
    {
        nint[] q = [2, 10, 2, 8], k = [2, 10, 2, 8], v = [2, 10, 4, 6], o = [2, 10, 4, 6];
        Assert.DoesNotThrow(() => Gla(q, k, v, [2, 10, 4, 8], o, [2, 4, 8, 6]), "q, k with 2 heads, v with 4");
        Assert.DoesNotThrow(() => Gla(q, k, [2, 10, 6, 6], null, [2, 10, 6, 6]), "three value heads per query/key head");
        AssertRejected("v", "value heads (3) must equal the key heads of k (2)", () => Gla(q, k, [2, 10, 3, 6], null, [2, 10, 3, 6]));
        AssertRejected("v", "value heads (4) must equal the key heads of k (2), or be a multiple of them with q's heads equal to k's (grouped value heads; q has 4)",
            () => Gla([2, 10, 4, 8], k, v, null, o));
        AssertRejected("v", "value heads (2) must equal the key heads of k (4)", () => Gla([2, 10, 4, 8], [2, 10, 4, 8], [2, 10, 2, 6], null, o));
        AssertRejected("output", "expected shape [2, 10, 4, 6] (B, T, max(Hq, Hv), V)", () => Gla(q, k, v, null, [2, 10, 2, 6]));
        AssertRejected("g", "expected shape [2, 10, 4, 8] (B, T, Hv, K)", () => Gla(q, k, v, [2, 10, 2, 8], o));
        AssertRejected("g", "expected shape [2, 10, 4] (B, T, Hv)", () => Gla(q, k, v, [2, 10, 2], o));
        AssertRejected("initial_state", "expected shape [2, 4, 8, 6] (N, Hv, K, V)", () => Gla(q, k, v, null, o, [2, 2, 8, 6]));
    }

    [Test]
    public void BetaIsPerValueHead()
    {
        var data = new TestData(5);
        var e = Assert.Catch<ArgumentException>(() => Engine.DeltaRule.Forward<float>(TestDevices.Get(TestBackend.Cpu),
            new ReadOnlyTensorSpan<float>(data.Normal(40), [1, 4, 1, 10]), new ReadOnlyTensorSpan<float>(data.UnitRows(4, 10), [1, 4, 1, 10]),
            new ReadOnlyTensorSpan<float>(data.Normal(48), [1, 4, 2, 6]), new ReadOnlyTensorSpan<float>(data.Uniform(4, 0.1, 0.9), [1, 4, 1]),
            default, new TensorSpan<float>(new float[48], [1, 4, 2, 6])))!;
        Assert.That(e.ParamName, Is.EqualTo("beta"));
        Assert.That(e.Message, Does.Contain("expected shape [1, 4, 2] (B, T, Hv)"));
    }

    [Test]
    public void ASessionForGroupedValueHeadsRefusesCallsGroupedOtherwise()
    {
        using var session = new GlaSession(TestDevices.Get(TestBackend.Cpu), 1, new HeadLayout(2, 2, 4, 8, 4), GateKind.None);
        Assert.That(session.StateShape.ToArray(), Is.EqualTo(new nint[] { 1, 4, 8, 4 }));
        var x = new float[2 * 8];
        var e = Assert.Catch<ArgumentException>(() => session.Step(new ReadOnlyTensorSpan<float>(x, [1, 1, 2, 8]),
            new ReadOnlyTensorSpan<float>(x, [1, 1, 2, 8]), new ReadOnlyTensorSpan<float>(new float[8], [1, 1, 2, 4]), default,
            new TensorSpan<float>(new float[8], [1, 1, 2, 4])))!;
        Assert.That(e.ParamName, Is.EqualTo("q"));
        Assert.That(e.Message, Does.Contain("(Hq 2, Hk 2, Hv 2, K 8, V 4) differ from the session's (Hq 2, Hk 2, Hv 4, K 8, V 4)"));
    }

    [Test]
    public void ConvenienceFormAllocatesOutputAndStateForValueHeads()
    {
        var data = new TestData(9);
        var q = Tensor.Create(data.Normal(2 * 5 * 2 * 8), [2, 5, 2, 8]);
        var k = Tensor.Create(data.UnitRows(2 * 5 * 2, 8), [2, 5, 2, 8]);
        var v = Tensor.Create(data.Normal(2 * 5 * 6 * 4), [2, 5, 6, 4]);
        var g = Tensor.Create(data.LogGates(2 * 5 * 6, 1.0), [2, 5, 6]);
        var result = Engine.Gla.Forward(TestDevices.Get(TestBackend.Cpu), q, k, v, g);
        Assert.That(result.Output.Lengths.ToArray(), Is.EqualTo(new nint[] { 2, 5, 6, 4 }));
        Assert.That(result.FinalState.Lengths.ToArray(), Is.EqualTo(new nint[] { 2, 6, 8, 4 }));
    }

    /// <summary>Rows of a [tokens, heads, dim] array with every head repeated m times in place (repeat_interleave on the head axis).</summary>
    private static float[] RepeatHeads(float[] x, int tokens, int heads, int dim, int m)
    {
        var r = new float[(long)tokens * heads * m * dim];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads * m; h++)
                Array.Copy(x, ((long)t * heads + h / m) * dim, r, ((long)t * heads * m + h) * dim, dim);
        return r;
    }

    private static readonly SequenceLayout Sequences = SequenceLayout.Packed([0, 3, 3, 20], 20);

    [Test]
    public void GlaReferenceWithGroupedValueHeadsEqualsItOnRepeatedQueriesAndKeys(
        [Values(2, 4)] int m, [Values(GateKind.PerKey, GateKind.PerHead, GateKind.None, GateKind.Constant)] GateKind gate)
    {
        const int qk = 2, kd = 6, vd = 5;
        int hv = qk * m, tokens = Sequences.TotalTokens;
        var data = new TestData(17 * m + (int)gate);
        var q = data.Normal((long)tokens * qk * kd);
        var k = data.UnitRows((long)tokens * qk, kd);
        var v = data.Normal((long)tokens * hv * vd);
        var g = gate switch
        {
            GateKind.PerKey => data.LogGates((long)tokens * hv * kd, 1.0),
            GateKind.PerHead => data.LogGates((long)tokens * hv, 1.0),
            _ => [],
        };
        var constant = gate == GateKind.Constant ? Enumerable.Range(0, hv).Select(h => -0.1f * (h + 1)).ToArray() : null;
        var h0 = data.Normal((long)Sequences.Count * hv * kd * vd, 0.5);

        (double[] Output, double[] State) Run(HeadLayout heads, float[] qs, float[] ks)
        {
            var output = new double[(long)tokens * hv * vd];
            var state = TestData.ToDouble(h0);
            GlaReference.Forward(new GlaConfig(heads, gate, 0.4f, 16, constant), Sequences, qs, ks, v, g, output, state);
            return (output, state);
        }

        var grouped = Run(new HeadLayout(qk, qk, hv, kd, vd), q, k);
        var repeated = Run(new HeadLayout(hv, hv, kd, vd), RepeatHeads(q, tokens, qk, kd, m), RepeatHeads(k, tokens, qk, kd, m));
        Assert.That(grouped.Output, Is.EqualTo(repeated.Output), "output");
        Assert.That(grouped.State, Is.EqualTo(repeated.State), "final state");
    }

    [Test]
    public void DeltaRuleReferenceWithGroupedValueHeadsEqualsItOnRepeatedQueriesAndKeys(
        [Values(2, 4)] int m, [Values(GateKind.PerKey, GateKind.PerHead, GateKind.None)] GateKind gate)
    {
        const int qk = 2, kd = 6, vd = 5;
        int hv = qk * m, tokens = Sequences.TotalTokens;
        var data = new TestData(31 * m + (int)gate);
        var q = data.Normal((long)tokens * qk * kd);
        var k = data.Normal((long)tokens * qk * kd);
        var v = data.Normal((long)tokens * hv * vd);
        var beta = data.Uniform((long)tokens * hv, 0.1, 0.9);
        var g = gate switch
        {
            GateKind.PerKey => data.LogGates((long)tokens * hv * kd, 1.0),
            GateKind.PerHead => data.LogGates((long)tokens * hv, 1.0),
            _ => [],
        };
        var h0 = data.Normal((long)Sequences.Count * hv * kd * vd, 0.5);

        (double[] Output, double[] State) Run(HeadLayout heads, float[] qs, float[] ks)
        {
            var output = new double[(long)tokens * hv * vd];
            var state = TestData.ToDouble(h0);
            DeltaRuleReference.Forward(new DeltaRuleConfig(heads, gate, 0.4f, 16, qkL2Norm: true), Sequences, qs, ks, v, beta, g, output, state);
            return (output, state);
        }

        var grouped = Run(new HeadLayout(qk, qk, hv, kd, vd), q, k);
        var repeated = Run(new HeadLayout(hv, hv, kd, vd), RepeatHeads(q, tokens, qk, kd, m), RepeatHeads(k, tokens, qk, kd, m));
        Assert.That(grouped.Output, Is.EqualTo(repeated.Output), "output");
        Assert.That(grouped.State, Is.EqualTo(repeated.State), "final state");
    }
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.DeltaRule;

/// <summary>Rejected inputs, decode against prefill, state carry across calls and a long sequence.</summary>
[TestFixture]
public sealed class DeltaRuleTests
{
    private static EngineDevice Cpu => TestDevices.Get(TestBackend.Cpu);

    /// <summary>Dense float inputs of one case, with beta and g replaceable, run through the facade.</summary>
    private static void Forward(int b, int t, int hq, int hkv, int k, int v, float[]? beta = null, float[]? g = null,
        nint[]? betaShape = null, nint[]? kShape = null, nint[]? gShape = null, DeltaRuleOptions? options = null, bool gated = true)
    {
        var data = new TestData(7);
        var q = data.Normal((long)b * t * hq * k);
        var kk = data.UnitRows((long)b * t * hkv, k);
        var vv = data.Normal((long)b * t * hkv * v);
        beta ??= data.Uniform((long)b * t * hkv, 0.1, 0.9);
        g ??= gated ? data.LogGates((long)b * t * hkv, 1.0) : null;
        var output = new float[(long)b * t * hq * v];
        Engine.DeltaRule.Forward<float>(Cpu,
            new ReadOnlyTensorSpan<float>(q, [b, t, hq, k]),
            new ReadOnlyTensorSpan<float>(kk, kShape ?? [b, t, hkv, k]),
            new ReadOnlyTensorSpan<float>(vv, [b, t, hkv, v]),
            new ReadOnlyTensorSpan<float>(beta, betaShape ?? [b, t, hkv]),
            g is null ? default : new ReadOnlyTensorSpan<float>(g, gShape ?? [b, t, hkv]),
            new TensorSpan<float>(output, [b, t, hq, v]), options: options);
    }

    private static void AssertRejected(TestDelegate call, string name, string fragment)
    {
        var e = Assert.Throws(Is.InstanceOf<ArgumentException>(), call)!;
        Assert.Multiple(() =>
        {
            Assert.That(((ArgumentException)e).ParamName, Is.EqualTo(name), e.Message);
            Assert.That(e.Message, Does.Contain(fragment));
        });
    }

    [Test]
    public void RejectsNaNBeta()
    {
        var beta = Enumerable.Repeat(0.5f, 2 * 8 * 2).ToArray();
        beta[5] = float.NaN;
        AssertRejected(() => Forward(2, 8, 2, 2, 16, 16, beta: beta), "beta", "finite");
    }

    [Test]
    public void RejectsPositiveOrInfiniteLogGate()
    {
        var g = Enumerable.Repeat(-0.1f, 8).ToArray();
        g[3] = 0.25f;
        AssertRejected(() => Forward(1, 8, 1, 1, 16, 16, g: g), "g", "<= 0, got 0.25");
        g[3] = float.NegativeInfinity;
        AssertRejected(() => Forward(1, 8, 1, 1, 16, 16, g: g), "g", "finite");
    }

    [Test]
    public void RejectsMismatchedShapes()
    {
        AssertRejected(() => Forward(2, 8, 2, 2, 16, 16, betaShape: [2, 8, 1], beta: new float[16]), "beta", "expected shape [2, 8, 2] (B, T, Hv), got [2, 8, 1]");
        AssertRejected(() => Forward(2, 8, 2, 2, 16, 16, gShape: [2, 8, 1]), "g", "expected shape [2, 8, 2] (B, T, Hv)");
        AssertRejected(() => Forward(2, 8, 2, 2, 16, 16, gShape: [2, 8, 2, 1]), "g", "expected shape [2, 8, 2, 16] (B, T, Hv, K)");
        AssertRejected(() => Forward(2, 8, 2, 2, 16, 16, g: Enumerable.Repeat(-0.1f, 512).ToArray(), gShape: [2, 8, 2, 4, 4]), "g", "expected rank 4 (B, T, Hv, K) for a per-key gate, rank 3");
        AssertRejected(() => Forward(2, 8, 2, 2, 16, 16, kShape: [2, 8, 2, 8, 2]), "k", "rank 4");
        AssertRejected(() => Forward(1, 8, 3, 2, 16, 16, beta: new float[16], g: Enumerable.Repeat(-0.1f, 16).ToArray()), "k", "must divide the query heads");
    }

    [Test]
    public void RejectsHeadDimsOverTheKernelLimit()
    {
        AssertRejected(() => Forward(1, 2, 1, 1, 257, 16), "q", "K = 257 is over the delta-rule kernels' limit of 256");
        AssertRejected(() => Forward(1, 2, 1, 1, 16, 300), "v", "V = 300 is over the delta-rule kernels' limit of 256");
    }

    [Test]
    public void RejectsUnsupportedChunkSize()
    {
        AssertRejected(() => Forward(1, 8, 1, 1, 16, 16, options: new DeltaRuleOptions { ChunkSize = 48 }), "options", "one of 16, 32, 64, got 48");
    }

    [Test]
    public void SessionRejectsTheOtherVariant()
    {
        using var session = new DeltaRuleSession(Cpu, 1, new HeadLayout(1, 1, 16, 16), GateKind.PerHead);
        var x = new float[16];
        var one = new float[1];
        var e = Assert.Throws<ArgumentException>(() => session.Step<float>(
            new ReadOnlyTensorSpan<float>(x, [1, 1, 1, 16]), new ReadOnlyTensorSpan<float>(x, [1, 1, 1, 16]),
            new ReadOnlyTensorSpan<float>(x, [1, 1, 1, 16]), new ReadOnlyTensorSpan<float>(one, [1, 1, 1]), default,
            new TensorSpan<float>(new float[16], [1, 1, 1, 16])))!;
        Assert.That(e.ParamName, Is.EqualTo("g"));
    }

    [Test]
    public void SessionRefusesAConstantGate()
    {
        var e = Assert.Throws<ArgumentException>(() => new DeltaRuleSession(Cpu, 1, new HeadLayout(1, 1, 16, 16), GateKind.Constant))!;
        Assert.That(e.ParamName, Is.EqualTo("gate"));
        Assert.That(e.Message, Does.Contain("None, PerHead or PerKey, got Constant"));
    }

    /// <summary>Grouped query heads (4 over 2) and grouped value heads (2 query/key heads, 4 value heads), every gate, every backend.</summary>
    public static IEnumerable<TestCaseData> Sessions() =>
        from backend in TestDevices.For(small: true)
        from gate in DeltaRuleCases.Gates
        from grouped in new[] { (Hq: 4, ValueGroup: 1), (Hq: 2, ValueGroup: 2) }
        select new TestCaseData(backend, gate, grouped.Hq, grouped.ValueGroup)
            .SetName($"delta session {gate} H{grouped.Hq}/2{(grouped.ValueGroup > 1 ? $"/{2 * grouped.ValueGroup}" : "")} on {backend}");

    /// <summary>Decode one token at a time after a prefill, and two prefill halves, both against one reference run.</summary>
    [TestCaseSource(nameof(Sessions))]
    public void SessionDecodeAndStateCarryMatchTheReference(TestBackend backend, GateKind gate, int qHeads, int valueGroup)
    {
        var c = new DeltaRuleCase { B = 2, T = 37, Hq = qHeads, Hkv = 2, ValueGroup = valueGroup, K = 16, V = 24, Gate = gate, Chunk = 16, WithInitialState = true, QkL2Norm = true };
        var expected = c.Reference();
        var (q, k, v, beta, g, h0) = c.Inputs();
        var device = TestDevices.Get(backend);
        int b = c.B, hq = c.Hq, hk = c.Hk, hv = c.Hv, ho = c.Ho, kd = c.K, vd = c.V;

        // Slices of token range [t0, t1) of a [B, T, H, D] (or [B, T, H]) input.
        float[] Slice(float[] x, int perToken, int t0, int t1)
        {
            var r = new float[b * (t1 - t0) * perToken];
            for (int n = 0; n < b; n++) Array.Copy(x, ((long)n * c.T + t0) * perToken, r, (long)n * (t1 - t0) * perToken, (t1 - t0) * perToken);
            return r;
        }
        void Run(DeltaRuleSession session, bool step, int t0, int t1, float[] output)
        {
            int len = t1 - t0;
            var o = Numerics.NaNs((long)b * len * ho * vd);
            var qs = new ReadOnlyTensorSpan<float>(Slice(q, hq * kd, t0, t1), [b, len, hq, kd]);
            var ks = new ReadOnlyTensorSpan<float>(Slice(k, hk * kd, t0, t1), [b, len, hk, kd]);
            var vs = new ReadOnlyTensorSpan<float>(Slice(v, hv * vd, t0, t1), [b, len, hv, vd]);
            var bs = new ReadOnlyTensorSpan<float>(Slice(beta, hv, t0, t1), [b, len, hv]);
            var gs = gate switch
            {
                GateKind.PerHead => new ReadOnlyTensorSpan<float>(Slice(g, hv, t0, t1), [b, len, hv]),
                GateKind.PerKey => new ReadOnlyTensorSpan<float>(Slice(g, hv * kd, t0, t1), [b, len, hv, kd]),
                _ => default,
            };
            var os = new TensorSpan<float>(o, [b, len, ho, vd]);
            if (step) session.Step(qs, ks, vs, bs, gs, os);
            else session.Prefill(qs, ks, vs, bs, gs, os);
            for (int n = 0; n < b; n++) Array.Copy(o, (long)n * len * ho * vd, output, ((long)n * c.T + t0) * ho * vd, len * ho * vd);
        }
        float[] FinalState(DeltaRuleSession session)
        {
            var s = Numerics.NaNs(h0.Length);
            session.GetState(new TensorSpan<float>(s, session.StateShape));
            return s;
        }

        var heads = c.Heads;
        using var decode = new DeltaRuleSession(device, b, heads, gate, c.Options);
        using var halves = new DeltaRuleSession(device, b, heads, gate, c.Options);
        decode.SetState(new ReadOnlyTensorSpan<float>(h0, decode.StateShape));
        halves.SetState(new ReadOnlyTensorSpan<float>(h0, halves.StateShape));

        var decoded = Numerics.NaNs(expected["output"].Length);
        Run(decode, step: false, 0, 20, decoded);
        for (int t = 20; t < c.T; t++) Run(decode, step: true, t, t + 1, decoded);
        var twoHalves = Numerics.NaNs(expected["output"].Length);
        Run(halves, step: false, 0, 19, twoHalves);
        Run(halves, step: false, 19, c.T, twoHalves);

        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(decoded, expected["output"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "decode output");
            Assert.That(Numerics.RelativeRms(FinalState(decode), expected["final_state"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "decode state");
            Assert.That(Numerics.RelativeRms(twoHalves, expected["output"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "halves output");
            Assert.That(Numerics.RelativeRms(FinalState(halves), expected["final_state"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "halves state");
        });
    }

    /// <summary>T = 16384 through both CPU forms: finite and matching the float64 reference.</summary>
    [TestCase(AttentionMode.Chunked, GateKind.PerHead)]
    [TestCase(AttentionMode.Recurrent, GateKind.PerHead)]
    [TestCase(AttentionMode.Chunked, GateKind.PerKey)]
    [TestCase(AttentionMode.Recurrent, GateKind.PerKey)]
    public void LongSequenceOnCpuStaysFiniteAndMatches(AttentionMode mode, GateKind gate)
    {
        var c = new DeltaRuleCase { B = 1, T = 16384, Hq = 2, Hkv = 1, K = 32, V = 32, Gate = gate, GateScale = 0.1, Mode = mode, QkL2Norm = true, WithInitialState = true };
        var expected = c.Reference();
        var actual = c.Run(Cpu);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.AllFinite(actual["output"]) && Numerics.AllFinite(actual["final_state"]), Is.True, "finite");
            Assert.That(Numerics.RelativeRms(actual["output"], expected["output"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(actual["final_state"], expected["final_state"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }
}

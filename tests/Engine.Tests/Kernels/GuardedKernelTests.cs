using Engine.Kernels.Common;
using Engine.Kernels.Conv;
using Engine.Kernels.Gating;
using Engine.Kernels.Lssl;
using Engine.Tests.Harness;
using Engine.Tests.Lssl;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// The CPU kernels besides attention (the causal convolution, the gating kernels, LSSL) over tensors that lie flush
/// against inaccessible pages, at their start and at their end, each in its own region: a kernel that reads or writes one
/// float outside the spans it was given stops the process. Results against the float64 references.
/// </summary>
[TestFixture]
public sealed unsafe class GuardedKernelTests
{
    private static readonly bool[] Ends = [false, true];

    [SetUp]
    public void RequireGuardPages() => Assume.That(GuardedMemory.Supported, "guard pages need Linux");

    public static IEnumerable<TestCaseData> ConvCases()
    {
        foreach (bool flushEnd in Ends)
        {
            string end = flushEnd ? "flush end" : "flush start";
            yield return new TestCaseData(new CausalConvConfig(33, 4, 1, ConvActivation.Silu, ConvLayout.ChannelsLast, ConvLayout.ChannelsFirst), new[] { 0, 1, 1, 3, 200 }, flushEnd).SetName($"GuardedCausalConv channels-last, K=4, 33 channels, ragged, {end}");
            yield return new TestCaseData(new CausalConvConfig(300, 5, 1, ConvActivation.None, ConvLayout.ChannelsLast, ConvLayout.ChannelsLast), new[] { 0, 2, 130 }, flushEnd).SetName($"GuardedCausalConv channels-last, K=5, 300 channels, {end}");
            yield return new TestCaseData(new CausalConvConfig(21, 3, 2, ConvActivation.Silu, ConvLayout.ChannelsFirst, ConvLayout.ChannelsFirst), new[] { 0, 1, 40 }, flushEnd).SetName($"GuardedCausalConv channels-first, K=3 dilation 2, {end}");
        }
    }

    [TestCaseSource(nameof(ConvCases))]
    public void CausalConvolution(CausalConvConfig config, int[] offsets, bool flushEnd)
    {
        var sequences = SequenceLayout.Packed(offsets, offsets[^1]);
        var data = new TestData(config.Channels + offsets.Length);
        int states = sequences.Count * config.Channels * config.StateLength;
        var x = data.Normal((long)sequences.TotalTokens * config.Channels);
        var w = data.Normal(config.Channels * config.KernelSize, 0.5);
        var b = data.Normal(config.Channels, 0.5);
        var past = data.Normal(states);
        var expected = new double[x.Length];
        var expectedState = new double[states];
        CausalConvReference.Forward(config, sequences, x, w, b, past, expected, expectedState);

        using GuardedMemory gx = GuardedMemory.Of(x, flushEnd), gw = GuardedMemory.Of(w, flushEnd), gb = GuardedMemory.Of(b, flushEnd),
            gp = GuardedMemory.Of(past, flushEnd), gy = GuardedMemory.Of(Numerics.NaNs(x.Length), flushEnd), gs = GuardedMemory.Of(Numerics.NaNs(states), flushEnd);
        CausalConvCpu.Forward(config, sequences, gx.Span, gw.Span, gb.Span, gp.Span, gy.Span, gs.Span, new ThreadPoolScheduler(2));
        Assert.That(Numerics.RelativeRms(gy.Span, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
        Assert.That(Numerics.RelativeRms(gs.Span, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "present state");
    }

    [Test]
    public void GatingKernels([ValueSource(nameof(Ends))] bool flushEnd, [Values(7, 20, 128)] int groupSize)
    {
        var data = new TestData(groupSize);
        int rows = 77;
        var x = data.Normal(rows * groupSize);
        var z = data.Normal(rows * groupSize, 4);
        var scale = data.Normal(groupSize, 0.5);
        var expected = new double[x.Length];
        GatedRmsNormReference.Forward(x, z, scale, 1e-5, GateActivation.Silu, expected);
        using (GuardedMemory gx = GuardedMemory.Of(x, flushEnd), gz = GuardedMemory.Of(z, flushEnd), gs = GuardedMemory.Of(scale, flushEnd),
            gy = GuardedMemory.Of(Numerics.NaNs(x.Length), flushEnd))
        {
            GatedRmsNormCpu.Forward(gx.Span, gz.Span, gs.Span, 1e-5f, GateActivation.Silu, gy.Span, new ThreadPoolScheduler(2));
            Assert.That(Numerics.RelativeRms(gy.Span, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "gated RMS norm");
        }

        // The decay gate over rows of groupSize heads, with beta.
        var a = data.Uniform(rows * groupSize, -20, 20);
        var bp = data.Uniform(rows * groupSize, -20, 20);
        var dtBias = data.Normal(groupSize);
        var decayScale = data.Uniform(groupSize, 0.01, 4).Select(v => -v).ToArray();
        var decay = new double[a.Length];
        var beta = new double[a.Length];
        DecayGateReference.Forward(a, dtBias, decayScale, bp, decay, beta);
        using GuardedMemory ga = GuardedMemory.Of(a, flushEnd), gbp = GuardedMemory.Of(bp, flushEnd), gt = GuardedMemory.Of(dtBias, flushEnd),
            gd = GuardedMemory.Of(decayScale, flushEnd), gg = GuardedMemory.Of(Numerics.NaNs(a.Length), flushEnd), gbeta = GuardedMemory.Of(Numerics.NaNs(a.Length), flushEnd);
        DecayGateCpu.Forward(ga.Span, gt.Span, gd.Span, gbp.Span, gg.Span, gbeta.Span, new ThreadPoolScheduler(2));
        Assert.That(Numerics.RelativeRms(gg.Span, decay), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "decay");
        Assert.That(Numerics.RelativeRms(gbeta.Span, beta), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "beta");
    }

    [Test]
    public void Lssl([ValueSource(nameof(Ends))] bool flushEnd, [Values(LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv)] LsslMode mode,
        [Values(LsslStateMatrix.Diagonal, LsslStateMatrix.DensePerChannel)] LsslStateMatrix form)
    {
        const int batch = 2, h = 19, n = 8, length = 37;
        var p = LsslProblem.Make(h, n, form, seed: 5);
        using var system = p.System(LsslDiscretization.Bilinear, 16);
        using var cpu = new LsslCpu(system.Config);
        var u = new TestData(length).Normal(batch * length * h);
        var x0 = new TestData(length + 1).Normal(batch * h * n, 0.5);
        var expectedY = new double[u.Length];
        var expectedState = TestData.ToDouble(x0);
        LsslReference.Forward(system, batch, length, u, expectedY, expectedState);
        using GuardedMemory gu = GuardedMemory.Of(u, flushEnd), gy = GuardedMemory.Of(Numerics.NaNs(u.Length), flushEnd), gs = GuardedMemory.Of(x0, flushEnd);
        cpu.Run(new ThreadPoolScheduler(2), mode, system, batch, length, gu.Span, gy.Span, gs.Span);
        Assert.That(Numerics.RelativeRms(gy.Span, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "y");
        Assert.That(Numerics.RelativeRms(gs.Span, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "state");
    }
}

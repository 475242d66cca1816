using Engine.Kernels.Common;
using Engine.Kernels.Conv;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Conv;

/// <summary>The CPU causal convolution against the float64 reference: every layout, dilation, state and sequence shape.</summary>
[TestFixture]
public sealed class CausalConvKernelTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var activations in new[] { ConvLayout.ChannelsFirst, ConvLayout.ChannelsLast })
        foreach (var state in new[] { ConvLayout.ChannelsFirst, ConvLayout.ChannelsLast })
        {
            string layouts = $"{activations} x, {state} state";
            yield return new TestCaseData(new CausalConvConfig(48, 4, 1, ConvActivation.Silu, activations, state), new[] { 0, 300, 600 }, true, true, 3).SetName($"CausalConv {layouts}, K=4 silu, 2 x 300");
            yield return new TestCaseData(new CausalConvConfig(21, 3, 2, ConvActivation.None, activations, state), new[] { 0, 37 }, true, false, 2).SetName($"CausalConv {layouts}, K=3 dilation 2, 21 channels, no bias");
            yield return new TestCaseData(new CausalConvConfig(40, 4, 1, ConvActivation.Silu, activations, state), new[] { 0, 1, 2 }, true, true, 2).SetName($"CausalConv {layouts}, decode T=1");
            yield return new TestCaseData(new CausalConvConfig(32, 5, 1, ConvActivation.Silu, activations, state), new[] { 0, 2, 4, 6 }, false, true, 2).SetName($"CausalConv {layouts}, T=2 < K-1, no past state");
            yield return new TestCaseData(new CausalConvConfig(17, 1, 1, ConvActivation.None, activations, state), new[] { 0, 20 }, true, true, 1).SetName($"CausalConv {layouts}, K=1 (no state)");
            if (activations != ConvLayout.ChannelsLast) continue;
            yield return new TestCaseData(new CausalConvConfig(300, 4, 1, ConvActivation.Silu, activations, state), new[] { 0, 130, 400 }, true, true, 3).SetName($"CausalConv {layouts}, 300 channels over two channel blocks, token blocks across sequences");
            yield return new TestCaseData(new CausalConvConfig(200, 20, 1, ConvActivation.None, activations, state), new[] { 0, 50 }, true, true, 2).SetName($"CausalConv {layouts}, K=20 (narrower channel blocks)");
            yield return new TestCaseData(new CausalConvConfig(33, 4, 1, ConvActivation.Silu, activations, state), new[] { 0, 5, 5, 7, 200, 201, 330 }, true, true, 3).SetName($"CausalConv {layouts}, ragged varlen with an empty sequence");
        }
        // The longest kernel taken, its taps and a row's reach on the workers' stacks (three channel blocks: three work items).
        yield return new TestCaseData(new CausalConvConfig(48, CausalConvConfig.MaxKernelSize, 1, ConvActivation.None, ConvLayout.ChannelsLast, ConvLayout.ChannelsFirst),
            new[] { 0, 40 }, true, false, 2).SetName("CausalConv channels-last, K=4096 on worker threads");
    }

    /// <summary>A kernel past the longest taken is refused where it is built: K = 30,000 would put 1.9 MB of taps on a worker's stack.</summary>
    [Test]
    public void AKernelLongerThanTheLongestTakenIsRefused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new CausalConvConfig(16, CausalConvConfig.MaxKernelSize + 1))!;
        Assert.That(e.ParamName, Is.EqualTo("kernelSize"));
        Assert.That(e.Message, Does.Contain("kernel size must be in [1, 4096]"));
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(CausalConvConfig config, int[] offsets, bool past, bool bias, int workers)
    {
        var sequences = SequenceLayout.Packed(offsets, offsets[^1]);
        var data = new TestData(AttentionCase.StableSeed(TestContext.CurrentContext.Test.Name));
        int c = config.Channels, stateFloats = sequences.Count * c * config.StateLength;
        var x = data.Normal((long)sequences.TotalTokens * c);
        var w = data.Normal(c * config.KernelSize, 0.5);
        var b = bias ? data.Normal(c, 0.5) : [];
        var pastState = past ? data.Normal(stateFloats) : [];
        var expected = new double[x.Length];
        var expectedState = new double[stateFloats];
        CausalConvReference.Forward(config, sequences, x, w, b, pastState, expected, expectedState);

        var y = Numerics.NaNs(x.Length);
        var present = Numerics.NaNs(stateFloats);
        CausalConvCpu.Forward(config, sequences, x, w, b, pastState, y, present, new ThreadPoolScheduler(workers));
        Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
        Assert.That(Numerics.RelativeRms(present, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "present state");

        if (!past) return;
        // The state updated in place: past and present one buffer.
        var inPlace = (float[])pastState.Clone();
        var y2 = Numerics.NaNs(x.Length);
        CausalConvCpu.Forward(config, sequences, x, w, b, inPlace, y2, inPlace, new ThreadPoolScheduler(workers));
        Assert.That(y2, Is.EqualTo(y), "output with the state updated in place");
        Assert.That(inPlace, Is.EqualTo(present), "state updated in place");
    }

    [Test]
    public void CarriedStateContinuesTheSequence()
    {
        // One call over 50 tokens equals 47 tokens then decode steps of one token carrying the state.
        var config = new CausalConvConfig(24, 4, 1, ConvActivation.Silu, ConvLayout.ChannelsLast, ConvLayout.ChannelsFirst);
        var data = new TestData(AttentionCase.StableSeed("causal conv carried state"));
        var x = data.Normal(50 * 24);
        var w = data.Normal(24 * 4, 0.5);
        var whole = new float[x.Length];
        var state = new float[24 * 3];
        CausalConvCpu.Forward(config, SequenceLayout.Dense(1, 50), x, w, [], [], whole, state, new ThreadPoolScheduler(2));

        var carried = new float[24 * 3];
        var pieces = new float[x.Length];
        CausalConvCpu.Forward(config, SequenceLayout.Dense(1, 47), x.AsSpan(0, 47 * 24), w, [], [], pieces.AsSpan(0, 47 * 24), carried, new ThreadPoolScheduler(2));
        for (int t = 47; t < 50; t++)
            CausalConvCpu.Forward(config, SequenceLayout.Dense(1, 1), x.AsSpan(t * 24, 24), w, [], carried, pieces.AsSpan(t * 24, 24), carried, new ThreadPoolScheduler(1));
        Assert.That(Numerics.RelativeRms(pieces, whole), Is.LessThanOrEqualTo(1e-6));
        Assert.That(carried, Is.EqualTo(state));
    }

    [Test]
    public void SiluKeepsItsExponentNonPositive()
    {
        // Large negative and positive arguments: no overflow of e^−x, values against the float64 form.
        float[] xs = [-200f, -90f, -20f, -1f, 0f, 1f, 20f, 90f, 200f, 3.5f, -3.5f, 0.25f, -0.25f, 7f, -7f, 60f];
        var v = System.Runtime.Intrinsics.Vector512.Create(xs);
        var silu = SimdMath.Silu(v);
        for (int i = 0; i < xs.Length; i++)
        {
            double expected = xs[i] * CausalConvReference.Sigmoid(xs[i]);
            Assert.That(silu[i], Is.EqualTo(expected).Within(1e-6 * Math.Max(1, Math.Abs(expected))), $"vector silu({xs[i]})");
            Assert.That(SimdMath.Silu(xs[i]), Is.EqualTo(expected).Within(1e-6 * Math.Max(1, Math.Abs(expected))), $"scalar silu({xs[i]})");
        }
    }
}

using Engine.Kernels.Gating;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Gating;

/// <summary>The gating kernels on the CPU against their float64 references (fp32 tolerance 1e-5 relative RMS), on several workers.</summary>
[TestFixture]
public sealed class GatingKernelTests
{
    [TestCase(128, GateActivation.Silu, 3)]
    [TestCase(20, GateActivation.Sigmoid, 2)]
    [TestCase(7, GateActivation.Silu, 1)]
    public void GatedRmsNormMatchesReference(int groupSize, GateActivation activation, int workers)
    {
        var data = new TestData(AttentionCase.StableSeed($"gated rms norm {groupSize} {activation}"));
        int rows = 777;
        var x = data.Normal(rows * groupSize);
        var z = data.Normal(rows * groupSize, 4);
        var scale = data.Normal(groupSize, 0.5);
        var expected = new double[x.Length];
        GatedRmsNormReference.Forward(x, z, scale, 1e-5, activation, expected);
        var y = Numerics.NaNs(x.Length);
        GatedRmsNormCpu.Forward(x, z, scale, 1e-5f, activation, y, new ThreadPoolScheduler(workers));
        Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    /// <summary>Rows whose squares overflow fp32 (elements up to 3e38) are normalized as the float64 reference does, not zeroed.</summary>
    [TestCase(128, 1e20)]
    [TestCase(7, 3e38)]
    [TestCase(20, 1e-30)]
    public void GatedRmsNormOfLargeAndTinyRowsMatchesReference(int groupSize, double magnitude)
    {
        var data = new TestData(AttentionCase.StableSeed($"gated rms norm extremes {groupSize} {magnitude}"));
        int rows = 9;
        var x = Array.ConvertAll(data.Normal(rows * groupSize), v => (float)Math.Clamp(v * magnitude, -float.MaxValue, float.MaxValue));
        var z = data.Normal(rows * groupSize, 4);
        var scale = data.Normal(groupSize, 0.5);
        var expected = new double[x.Length];
        GatedRmsNormReference.Forward(x, z, scale, 1e-5, GateActivation.Silu, expected);
        var y = Numerics.NaNs(x.Length);
        GatedRmsNormCpu.Forward(x, z, scale, 1e-5f, GateActivation.Silu, y, new ThreadPoolScheduler(2));
        Assert.That(y.All(float.IsFinite), Is.True);
        Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    /// <summary>
    /// Epsilon 0 (ORT's GatedRMSNorm takes it): a zero row was 0/0 and a row whose squares underflow fp32 (elements below
    /// about 1e-19, subnormals too) 0·∞, both NaN. Now a zero row gives 0, the limit as epsilon goes to 0, and a tiny row
    /// is normalized as the float64 reference does.
    /// </summary>
    [TestCase(16, 0.0)]
    [TestCase(20, 1e-25)]
    [TestCase(7, 1e-41)]
    public void GatedRmsNormWithEpsilonZeroOfZeroAndTinyRowsMatchesReference(int groupSize, double magnitude)
    {
        var data = new TestData(AttentionCase.StableSeed($"gated rms norm epsilon 0 {groupSize} {magnitude}"));
        int rows = 5;
        var x = Array.ConvertAll(data.Normal(rows * groupSize), v => (float)(v * magnitude));
        var z = data.Normal(rows * groupSize, 4);
        var scale = data.Normal(groupSize, 0.5);
        var expected = new double[x.Length];
        GatedRmsNormReference.Forward(x, z, scale, 0, GateActivation.Silu, expected);
        var y = Numerics.NaNs(x.Length);
        GatedRmsNormCpu.Forward(x, z, scale, 0f, GateActivation.Silu, y, new ThreadPoolScheduler(2));
        Assert.That(y.All(float.IsFinite), Is.True);
        if (magnitude == 0) Assert.That(y, Is.All.Zero);
        else Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(1e-5), "subnormal inputs carry fewer significant bits");
    }

    [TestCase(true, 3)]
    [TestCase(false, 2)]
    public void DecayGateMatchesReferenceOverSoftplusTails(bool withBeta, int workers)
    {
        const int heads = 24, tokens = 1500;
        var data = new TestData(AttentionCase.StableSeed($"decay gate {withBeta}"));
        // Projections from −120 to 120: softplus's far tails on both sides (e^−|x| down to 1e−52) and sigmoid's.
        var a = data.Uniform(heads * tokens, -120, 120);
        var b = withBeta ? data.Uniform(heads * tokens, -120, 120) : [];
        var dtBias = data.Normal(heads);
        var decayScale = data.Uniform(heads, 0.01, 16).Select(v => -v).ToArray();
        var decay = new double[a.Length];
        var beta = new double[b.Length];
        DecayGateReference.Forward(a, dtBias, decayScale, b, decay, beta);
        var gotDecay = Numerics.NaNs(a.Length);
        var gotBeta = Numerics.NaNs(b.Length);
        DecayGateCpu.Forward(a, dtBias, decayScale, b, gotDecay, gotBeta, new ThreadPoolScheduler(workers));
        Assert.That(Numerics.RelativeRms(gotDecay, decay), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "decay");
        Assert.That(gotDecay.All(d => d <= 0 && float.IsFinite(d)), Is.True, "a negative decay scale gives a finite log decay <= 0");
        // Element by element too, as the tails are tiny next to the values the RMS is dominated by: relative 1e-5, as the
        // fp32 sum a + dt_bias (|a| <= 120, rounded to 2^−24 relative) moves e^−|a + dt_bias| by up to 120 · 2^−24 ≈ 7e-6.
        for (int i = 0; i < a.Length; i++)
            Assert.That(gotDecay[i], Is.EqualTo(decay[i]).Within(1e-5 * Math.Abs(decay[i]) + 1e-37), $"decay[{i}], a = {a[i]}");
        if (withBeta) Assert.That(Numerics.RelativeRms(gotBeta, beta), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "beta");
    }
}

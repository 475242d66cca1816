using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Lightning;

[TestFixture]
public sealed class LightningTests
{
    [Test]
    public void PowerOfTwoSlopesFollowTheAlibiFormula()
    {
        Assert.That(Engine.Lightning.Slopes(8), Is.EqualTo(new[] { 0.5f, 0.25f, 0.125f, 0.0625f, 0.03125f, 0.015625f, 0.0078125f, 0.00390625f }));
        var s32 = Engine.Lightning.Slopes(32);
        for (int h = 0; h < 32; h++) Assert.That(s32[h], Is.EqualTo((float)Math.Pow(2, -8.0 * (h + 1) / 32)));
    }

    [Test]
    public void OtherHeadCountsInterleaveTheNextSchedule()
    {
        // H = 12: the 8-head schedule, then slopes 0, 2, 4, 6 of the 16-head schedule.
        var expected = Enumerable.Range(0, 8).Select(h => Math.Pow(2, -(h + 1.0)))
            .Concat(new[] { 0, 2, 4, 6 }.Select(h => Math.Pow(2, -8.0 * (h + 1) / 16))).Select(x => (float)x);
        Assert.That(Engine.Lightning.Slopes(12), Is.EqualTo(expected));
        Assert.That(Engine.Lightning.Slopes(1), Is.EqualTo(new[] { 1f / 256 }));
        Assert.That(Engine.Lightning.Slopes(6), Has.Length.EqualTo(6));
    }

    [Test]
    public void PerLayerFactorScalesTheSchedule()
    {
        var base8 = Engine.Lightning.Slopes(8);
        var first = Engine.Lightning.Slopes(8, layer: 0, layers: 4);
        var third = Engine.Lightning.Slopes(8, layer: 2, layers: 4);
        for (int h = 0; h < 8; h++)
        {
            Assert.That(first[h], Is.EqualTo(base8[h] * (1 + 1e-5)).Within(1e-5).Percent);
            Assert.That(third[h], Is.EqualTo(base8[h] * (1 - 2.0 / 3 + 1e-5)).Within(1e-5).Percent);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Engine.Lightning.Slopes(8, layer: 4, layers: 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => Engine.Lightning.Slopes(8, layer: 0, layers: 1));
    }

    [Test]
    public void EqualsTheScalarGateGlaPathWithGateMinusSlope()
    {
        const int t = 300, h = 8, k = 32, v = 32;
        var data = new TestData(5);
        var q = data.Normal(t * h * k, 0.2);
        var kk = data.Normal(t * h * k, 0.2);
        var vv = data.Normal(t * h * v);
        var slopes = Engine.Lightning.Slopes(h);
        var g = new float[t * h];
        for (int i = 0; i < g.Length; i++) g[i] = -slopes[i % h];
        var device = TestDevices.Get(TestBackend.Cpu);
        var lightning = Engine.Lightning.Forward(device, Tensor.Create(q, [1, t, h, k]), Tensor.Create(kk, [1, t, h, k]), Tensor.Create(vv, [1, t, h, v]));
        var gla = Engine.Gla.Forward(device, Tensor.Create(q, [1, t, h, k]), Tensor.Create(kk, [1, t, h, k]), Tensor.Create(vv, [1, t, h, v]),
            Tensor.Create(g, [1, t, h]), new GlaOptions { Scale = 1f });
        float[] a = new float[t * h * v], b = new float[t * h * v];
        lightning.Output.FlattenTo(a);
        gla.Output.FlattenTo(b);
        Assert.That(Numerics.RelativeRms(a, b), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void LongSequenceWithALargeSlopeStaysFinite()
    {
        const int t = 32768, h = 2, k = 16, v = 16;
        var data = new TestData(9);
        var q = data.Normal(t * h * k);
        var kk = data.Normal(t * h * k);
        var vv = data.Normal(t * h * v);
        float[] slopes = [8f, 0.001f];
        var expected = new double[t * h * v];
        GlaReference.Forward(new GlaConfig(new HeadLayout(h, h, k, v), GateKind.Constant, 1f, 64, slopes.Select(s => -s).ToArray()),
            SequenceLayout.Dense(1, t), q, kk, vv, [], expected, new double[h * k * v]);
        var r = Engine.Lightning.Forward(TestDevices.Get(TestBackend.Cpu), Tensor.Create(q, [1, t, h, k]), Tensor.Create(kk, [1, t, h, k]),
            Tensor.Create(vv, [1, t, h, v]), new LightningOptions { Slopes = slopes, BlockSize = 256 });
        var o = new float[t * h * v];
        r.Output.FlattenTo(o);
        Assert.That(Numerics.AllFinite(o), Is.True);
        Assert.That(Numerics.RelativeRms(o, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void SessionDecodeMatchesPrefill()
    {
        const int t = 90, h = 4, k = 16, v = 16, prompt = 70;
        var data = new TestData(2);
        var q = data.Normal(t * h * k, 0.3);
        var kk = data.Normal(t * h * k, 0.3);
        var vv = data.Normal(t * h * v);
        var expected = new double[t * h * v];
        var slopes = Engine.Lightning.Slopes(h, layer: 1, layers: 3);
        GlaReference.Forward(new GlaConfig(new HeadLayout(h, h, k, v), GateKind.Constant, 1f, 64, slopes.Select(s => -s).ToArray()),
            SequenceLayout.Dense(1, t), q, kk, vv, [], expected, new double[h * k * v]);
        using var session = new LightningSession(TestDevices.Get(TestBackend.Cpu), 1, new HeadLayout(h, h, k, v), new LightningOptions { Layer = 1, Layers = 3, BlockSize = 256 });
        Assert.That(session.Slopes, Is.EqualTo(slopes));
        var output = Numerics.NaNs(t * h * v);
        session.Prefill(new ReadOnlyTensorSpan<float>(q.AsSpan(0, prompt * h * k), [1, prompt, h, k]), new ReadOnlyTensorSpan<float>(kk.AsSpan(0, prompt * h * k), [1, prompt, h, k]),
            new ReadOnlyTensorSpan<float>(vv.AsSpan(0, prompt * h * v), [1, prompt, h, v]), new TensorSpan<float>(output.AsSpan(0, prompt * h * v), [1, prompt, h, v]));
        for (int i = prompt; i < t; i++)
            session.Step(new ReadOnlyTensorSpan<float>(q.AsSpan(i * h * k, h * k), [1, 1, h, k]), new ReadOnlyTensorSpan<float>(kk.AsSpan(i * h * k, h * k), [1, 1, h, k]),
                new ReadOnlyTensorSpan<float>(vv.AsSpan(i * h * v, h * v), [1, 1, h, v]), new TensorSpan<float>(output.AsSpan(i * h * v, h * v), [1, 1, h, v]));
        Assert.That(Numerics.RelativeRms(output, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void RejectsBadSlopesAndGates()
    {
        var x = Tensor.Create(new float[2 * 4 * 8], [1, 2, 4, 8]);
        var device = TestDevices.Get(TestBackend.Cpu);
        void Check(LightningOptions options, string fragment)
        {
            var e = Assert.Throws<ArgumentException>(() => Engine.Lightning.Forward(device, x, x, x, options));
            Assert.That(e!.ParamName, Is.EqualTo("slopes"));
            Assert.That(e.Message, Does.Contain(fragment));
        }
        Check(new LightningOptions { Slopes = [0.5f, -0.1f, 0.2f, 0.1f] }, "finite and >= 0, got -0.1 at head 1");
        Check(new LightningOptions { Slopes = [0.5f, float.NaN, 0.2f, 0.1f] }, "got NaN");
        Check(new LightningOptions { Slopes = [0.5f, 0.2f] }, "expected 4 slopes");
        Check(new LightningOptions { Slopes = [0.5f, 0.2f, 0.1f, 0.1f], Layer = 0, Layers = 2 }, "not both");
        var bad = Assert.Throws<ArgumentException>(() => Engine.Lightning.Forward(device, x, x, x, new LightningOptions { BlockSize = 100 }));
        Assert.That(bad!.Message, Does.StartWith("block size (BlockSize) must be one of 16, 32, 64, 128, 256, got 100"));
    }
}

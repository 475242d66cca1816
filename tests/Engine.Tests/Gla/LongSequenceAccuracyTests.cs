using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Gla;

/// <summary>
/// Without decay the state grows with the sequence (keys of one sign: here to some 4,000 at T = 16,384), and each chunk's
/// product is added onto it. Summed term by term onto the state, the CPU chunked path's error grew as a token-by-token fp32
/// recurrence's does (1.7e-6 of the output at T = 16,384); the chunk's product is now summed on its own and added once.
/// </summary>
[TestFixture]
public sealed class LongSequenceAccuracyTests
{
    private const int T = 16384, H = 1, K = 32, V = 32;

    [Test]
    public void AGrowingStateKeepsTheChunkedPathNearTheReference()
    {
        var data = new TestData(21);
        var q = Tensor.Create(data.Normal(T * H * K), [1, T, H, K]);
        var k = Tensor.Create(data.Uniform(T * H * K, 0, 1), [1, T, H, K]);
        var v = Tensor.Create(data.Normal(T * H * V).Select(x => 1 + x).ToArray(), [1, T, H, V]);
        var options = new GlaOptions { Mode = AttentionMode.Chunked };
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, null, options);
        var actual = Engine.Gla.Forward(TestDevices.Get(TestBackend.Cpu), q, k, v, null, options);

        double output = Numerics.RelativeRms(Flat(actual.Output), Flat(expected.Output));
        double state = Numerics.RelativeRms(Flat(actual.FinalState), Flat(expected.FinalState));
        // A chunk's 64 terms summed in fp32, then one rounding at the state's size per chunk: about 3e-7 of both here.
        Assert.Multiple(() =>
        {
            Assert.That(output, Is.LessThan(6e-7), "output");
            Assert.That(state, Is.LessThan(6e-7), "final state");
        });
    }

    private static float[] Flat(Tensor<float> t)
    {
        var a = Numerics.NaNs(t.FlattenedLength);
        t.FlattenTo(a);
        return a;
    }
}

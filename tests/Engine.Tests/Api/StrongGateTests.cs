using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// Per-head log gates that are strong for part of a chunk, then weak: the chunk's running sum reaches the hundreds, where an
/// fp32 sum lost the weak gates after it and the factors between later tokens with them (relative RMS 1.9e-4 on the CPU).
/// The chunked CPU forms against the float64 reference at the fp32 tolerance.
/// </summary>
[TestFixture]
public sealed class StrongGateTests
{
    private const int T = 64, K = 16, V = 16;

    private static float[] Gates(int strongTokens, float strong, float weak) =>
        [.. Enumerable.Range(0, T).Select(t => t < strongTokens ? strong : weak)];

    [TestCase(40, -20f, -1e-4f)]
    [TestCase(32, -100f, -1e-3f)]
    public void GlaAndTheDeltaRuleKeepWeakGatesAfterStrongOnes(int strongTokens, float strong, float weak)
    {
        var data = new TestData(19);
        var q = Tensor.Create(data.Normal(T * K), [1, T, 1, K]);
        var k = Tensor.Create(data.UnitRows(T, K), [1, T, 1, K]);
        var v = Tensor.Create(data.Normal(T * V), [1, T, 1, V]);
        var g = Tensor.Create(Gates(strongTokens, strong, weak), [1, T, 1]);
        var beta = Tensor.Create(Enumerable.Repeat(0.5f, T).ToArray(), [1, T, 1]);
        var glaOptions = new GlaOptions { Mode = AttentionMode.Chunked, ChunkSize = 64 };
        var deltaOptions = new DeltaRuleOptions { Mode = AttentionMode.Chunked, ChunkSize = 64 };
        var gla = Engine.Gla.Forward(TestDevices.Of(Backend.Cpu), q, k, v, g, glaOptions).Output;
        var glaExpected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g, glaOptions).Output;
        var delta = Engine.DeltaRule.Forward(TestDevices.Of(Backend.Cpu), q, k, v, beta, g, deltaOptions).Output;
        var deltaExpected = Engine.DeltaRule.Forward(TestDevices.Reference, q, k, v, beta, g, deltaOptions).Output;
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(gla.ToArray(), glaExpected.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "GLA");
            Assert.That(Numerics.RelativeRms(delta.ToArray(), deltaExpected.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "delta rule");
        });
    }
}

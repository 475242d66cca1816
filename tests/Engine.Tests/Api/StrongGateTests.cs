using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// Log gates that are strong for part of a chunk, then weak: the chunk's running sum reaches the hundreds, where a plain
/// fp32 sum lost the weak gates after it and the factors between later tokens with them (relative RMS 1.9e-4). The
/// chunked forms of every backend, per-head and per-key gates, against the float64 reference at the fp32 tolerance.
/// </summary>
[TestFixture]
public sealed class StrongGateTests
{
    private const int T = 64, K = 16, V = 16;

    /// <summary>Gate of token t at key dim c: strong before <paramref name="strongTokens"/>, weak after, varied a little per key dim.</summary>
    private static float[] Gates(int strongTokens, float strong, float weak, int keyDims) =>
        [.. Enumerable.Range(0, T * keyDims).Select(e => (e / keyDims < strongTokens ? strong : weak) * (1f + e % keyDims / (4f * keyDims)))];

    private static IEnumerable<TestCaseData> Cases() =>
        from backend in TestDevices.For(small: true)
        from perKey in new[] { false, true }
        from pattern in new[] { (40, -20f, -1e-4f), (32, -100f, -1e-3f) }
        select new TestCaseData(backend, perKey, pattern.Item1, pattern.Item2, pattern.Item3);

    [TestCaseSource(nameof(Cases))]
    public void GlaAndTheDeltaRuleKeepWeakGatesAfterStrongOnes(TestBackend backend, bool perKey, int strongTokens, float strong, float weak)
    {
        var device = TestDevices.Get(backend);
        var data = new TestData(19);
        int gateDims = perKey ? K : 1;
        var q = Tensor.Create(data.Normal(T * K), [1, T, 1, K]);
        var k = Tensor.Create(data.UnitRows(T, K), [1, T, 1, K]);
        var v = Tensor.Create(data.Normal(T * V), [1, T, 1, V]);
        float[] gates = Gates(strongTokens, strong, weak, gateDims);
        var g = perKey ? Tensor.Create(gates, [1, T, 1, K]) : Tensor.Create(gates, [1, T, 1]);
        var beta = Tensor.Create(Enumerable.Repeat(0.5f, T).ToArray(), [1, T, 1]);
        var glaOptions = new GlaOptions { Mode = AttentionMode.Chunked, ChunkSize = 64 };
        var deltaOptions = new DeltaRuleOptions { Mode = AttentionMode.Chunked, ChunkSize = 64 };
        var gla = Engine.Gla.Forward(device, q, k, v, g, glaOptions);
        var glaExpected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g, glaOptions);
        var delta = Engine.DeltaRule.Forward(device, q, k, v, beta, g, deltaOptions);
        var deltaExpected = Engine.DeltaRule.Forward(TestDevices.Reference, q, k, v, beta, g, deltaOptions);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(gla.Output.ToArray(), glaExpected.Output.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "GLA output");
            Assert.That(Numerics.RelativeRms(gla.FinalState.ToArray(), glaExpected.FinalState.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "GLA state");
            Assert.That(Numerics.RelativeRms(delta.Output.ToArray(), deltaExpected.Output.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "delta rule output");
            Assert.That(Numerics.RelativeRms(delta.FinalState.ToArray(), deltaExpected.FinalState.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "delta rule state");
        });
    }
}

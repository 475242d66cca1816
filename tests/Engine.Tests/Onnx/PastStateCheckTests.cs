using Engine.Onnx;
using Engine.Onnx.Ops;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// A past_state that is not finite is refused, naming the first offender, wherever it lies: the kernels check the
/// first token's output rows after the run rather than the whole state before it, so every rule, both paths
/// (token by token for short calls, chunked), padded and unpadded head dims and a call with no token are tried.
/// </summary>
[TestFixture]
public sealed class PastStateCheckTests
{
    private static IEnumerable<TestCaseData> Cases()
    {
        var rules = new (UpdateRule Rule, DecayForm Decay)[]
        {
            (UpdateRule.Linear, DecayForm.PerHead), (UpdateRule.Gated, DecayForm.PerKey), (UpdateRule.Gated, DecayForm.PerHead),
            (UpdateRule.Delta, DecayForm.PerHead), (UpdateRule.GatedDelta, DecayForm.PerHead), (UpdateRule.GatedDelta, DecayForm.PerKey),
        };
        foreach (var (rule, decay) in rules)
            foreach (int t in new[] { 0, 1, 5, 40 })
                foreach (var (dk, dv) in new[] { (16, 16), (12, 20) })
                    yield return new TestCaseData(new LinearAttentionNodeCase
                    {
                        Rule = rule, Decay = decay, B = 2, T = t, Hq = 4, Hkv = 2, Dk = dk, Dv = dv, PastState = true,
                    });
    }

    [TestCaseSource(nameof(Cases))]
    public void NonFinitePastStateIsNamedWhereverItLies(LinearAttentionNodeCase c)
    {
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(1));
        var inputs = c.Inputs();
        int length = (int)inputs["past_state"].ElementCount;
        // First element, one inside the second kv head of the first sequence, the last of the second sequence.
        foreach (var (index, value) in new[] { (0, float.NaN), (c.Dk * c.Dv + 7, float.PositiveInfinity), (length - 1, float.NegativeInfinity) })
        {
            var past = inputs["past_state"].As<float>().ToArray();
            past[index] = value;
            var bad = new Dictionary<string, TensorData>(inputs) { ["past_state"] = TensorData.Create(past, inputs["past_state"].Shape) };
            var e = Assert.Throws<ModelRunException>(() => session.Run(bad), $"{value} at {index}");
            Assert.That(e!.Message, Does.Contain("past_state: values must be finite").And.Contain($"got {value} at flat index {index}"));
        }
        var reference = c.Reference(inputs);
        var good = session.Run(inputs);
        OnnxAssert.Close(good["present_state"], reference.State, "present_state after the refused runs");
        if (c.T > 0) OnnxAssert.Close(good["output"], reference.Output, "output after the refused runs");
    }
}

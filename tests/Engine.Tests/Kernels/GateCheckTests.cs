using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// The CPU kernels check the log gates as they load them (the ONNX hand-over relies on it instead of a pass of its
/// own): a NaN, positive or −∞ gate anywhere, in any gate form and mode, is refused naming g and its flat index.
/// </summary>
[TestFixture]
public sealed class GateCheckTests
{
    private static readonly IWorkScheduler TwoWorkers = new ThreadPoolScheduler(2);

    private const int Tokens = 40;
    private static readonly HeadLayout Heads = new(4, 2, 20, 16);

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var gate in new[] { GateKind.PerHead, GateKind.PerKey })
            foreach (bool chunked in new[] { true, false })
                foreach (float bad in new[] { 0.5f, float.NaN, float.NegativeInfinity })
                    foreach (bool last in new[] { false, true })
                        yield return new TestCaseData(gate, chunked, bad, last)
                            .SetArgDisplayNames(gate.ToString(), chunked ? "chunked" : "recurrent", bad.ToString(), last ? "last gate" : "a middle gate");
    }

    [TestCaseSource(nameof(Cases))]
    public void GlaRefusesAnInvalidGate(GateKind gate, bool chunked, float bad, bool last)
    {
        using var kernel = new GlaCpu(new GlaConfig(Heads, gate, 0.3f, 16));
        var (q, k, v, g, index) = Inputs(gate, bad, last);
        var e = Assert.Throws<ArgumentException>(() =>
        {
            var (output, state) = Outputs();
            if (chunked) kernel.Chunked(TwoWorkers, SequenceLayout.Dense(1, Tokens), q, k, v, g, output, state);
            else kernel.Recurrent(TwoWorkers, SequenceLayout.Dense(1, Tokens), q, k, v, g, output, state);
        })!;
        AssertNames(e, bad, index);
    }

    [TestCaseSource(nameof(Cases))]
    public void DeltaRuleRefusesAnInvalidGate(GateKind gate, bool chunked, float bad, bool last)
    {
        using var kernel = new DeltaRuleCpu(new DeltaRuleConfig(Heads, gate, 0.3f, 16, qkL2Norm: true));
        var (q, k, v, g, index) = Inputs(gate, bad, last);
        var beta = new TestData(5).Uniform(Tokens * Heads.ValueHeads, 0.1, 0.9);
        var e = Assert.Throws<ArgumentException>(() =>
        {
            var (output, state) = Outputs();
            if (chunked) kernel.Chunked(TwoWorkers, SequenceLayout.Dense(1, Tokens), q, k, v, beta, g, output, state);
            else kernel.Recurrent(TwoWorkers, SequenceLayout.Dense(1, Tokens), q, k, v, beta, g, output, state);
        })!;
        AssertNames(e, bad, index);
    }

    private static (float[] q, float[] k, float[] v, float[] g, int index) Inputs(GateKind gate, float bad, bool last)
    {
        var data = new TestData(3);
        int width = gate == GateKind.PerKey ? Heads.ValueHeads * Heads.KeyDim : Heads.ValueHeads;
        var g = data.LogGates(Tokens * width, 1.0);
        int index = last ? g.Length - 1 : g.Length / 2 + 3;
        g[index] = bad;
        return (data.Normal(Tokens * Heads.QHeads * Heads.KeyDim), data.Normal(Tokens * Heads.KeyHeads * Heads.KeyDim),
            data.Normal(Tokens * Heads.ValueHeads * Heads.ValueDim), g, index);
    }

    private static (float[] output, float[] state) Outputs() =>
        (new float[Tokens * Heads.QHeads * Heads.ValueDim], new float[Heads.ValueHeads * Heads.KeyDim * Heads.ValueDim]);

    private static void AssertNames(ArgumentException e, float bad, int index)
    {
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo("g"));
            Assert.That(e.Message, Does.Contain($"log gates must be finite and <= 0, got {bad} at flat index {index}"));
        });
    }
}

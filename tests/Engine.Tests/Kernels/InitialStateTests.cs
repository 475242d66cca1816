using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// The CPU kernels read a call's initial state from a separate buffer (the ONNX hand-over's past_state) or from
/// the state buffer itself: both must give the same outputs and final states, the initial buffer untouched.
/// </summary>
[TestFixture]
public sealed class InitialStateTests
{
    private static readonly IWorkScheduler TwoWorkers = new ThreadPoolScheduler(2);

    /// <summary>Three packed sequences, one of them empty: its final state is its initial one.</summary>
    private static readonly int[] CuSeqlens = [0, 5, 5, 40];

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (bool chunked in new[] { true, false })
        {
            yield return new TestCaseData(32, 32, chunked).SetArgDisplayNames("K32 V32", chunked ? "chunked" : "recurrent");
            yield return new TestCaseData(20, 24, chunked).SetArgDisplayNames("K20 V24 (padded)", chunked ? "chunked" : "recurrent");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void GlaReadsTheInitialStateWhereItLies(int kd, int vd, bool chunked)
    {
        var heads = new HeadLayout(4, 2, kd, vd);
        using var kernel = new GlaCpu(new GlaConfig(heads, GateKind.PerKey, 0.3f, 16));
        var data = new TestData(kd * 100 + vd);
        int t = CuSeqlens[^1];
        var (q, k, v, g) = (data.Normal(t * 4 * kd), data.Normal(t * 2 * kd), data.Normal(t * 2 * vd), data.LogGates(t * 2 * kd, 1));
        var sequences = SequenceLayout.Packed(CuSeqlens, t);
        AssertSameAsInPlace(t * 4 * vd, 3 * 2 * kd * vd, data, (output, state, initial) =>
        {
            if (chunked) kernel.Chunked(TwoWorkers, sequences, q, k, v, g, output, state, initial);
            else kernel.Recurrent(TwoWorkers, sequences, q, k, v, g, output, state, initial);
        });
    }

    [TestCaseSource(nameof(Cases))]
    public void DeltaRuleReadsTheInitialStateWhereItLies(int kd, int vd, bool chunked)
    {
        foreach (var gate in new[] { GateKind.PerHead, GateKind.PerKey })
            DeltaRuleReadsTheInitialStateWhereItLies(kd, vd, chunked, gate);
    }

    private static void DeltaRuleReadsTheInitialStateWhereItLies(int kd, int vd, bool chunked, GateKind gate)
    {
        var heads = new HeadLayout(4, 2, kd, vd);
        var config = new DeltaRuleConfig(heads, gate, 0.3f, 16, qkL2Norm: true);
        using var kernel = new DeltaRuleCpu(config);
        var data = new TestData(kd * 100 + vd + 1);
        int t = CuSeqlens[^1];
        var (q, k, v) = (data.Normal(t * 4 * kd), data.Normal(t * 2 * kd), data.Normal(t * 2 * vd));
        var (beta, g) = (data.Uniform(t * 2, 0.05, 0.95), data.LogGates(t * config.GatePerToken, 1));
        var sequences = SequenceLayout.Packed(CuSeqlens, t);
        AssertSameAsInPlace(t * 4 * vd, 3 * 2 * kd * vd, data, (output, state, initial) =>
        {
            if (chunked) kernel.Chunked(TwoWorkers, sequences, q, k, v, beta, g, output, state, initial);
            else kernel.Recurrent(TwoWorkers, sequences, q, k, v, beta, g, output, state, initial);
        });
    }

    private delegate void Call(Span<float> output, Span<float> state, ReadOnlySpan<float> initial);

    private static void AssertSameAsInPlace(int outputLength, int stateLength, TestData data, Call call)
    {
        var initial = data.Normal(stateLength, 0.5);
        var inPlaceOutput = Numerics.NaNs(outputLength);
        var inPlaceState = (float[])initial.Clone();
        call(inPlaceOutput, inPlaceState, default);

        var output = Numerics.NaNs(outputLength);
        var state = Numerics.NaNs(stateLength);
        var untouched = (float[])initial.Clone();
        call(output, state, initial);

        Assert.That(Numerics.AllFinite(inPlaceOutput) && Numerics.AllFinite(inPlaceState), "the in-place call wrote every element");
        Assert.That(output, Is.EqualTo(inPlaceOutput), "output");
        Assert.That(state, Is.EqualTo(inPlaceState), "final state");
        Assert.That(initial, Is.EqualTo(untouched), "initial state left as it was");
    }
}

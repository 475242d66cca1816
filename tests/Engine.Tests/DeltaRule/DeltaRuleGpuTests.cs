using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Tests.Harness;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.DeltaRule;

/// <summary>
/// The delta-rule GPU kernels in their CUDA geometry (128 threads per group) on ILGPU's CPU accelerator, against the
/// float64 reference. The harness runs them at 16 threads.
/// </summary>
[TestFixture]
public sealed class DeltaRuleGpuTests
{
    private GpuRuntime _runtime = null!;

    [OneTimeSetUp]
    public void CreateRuntime() => _runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: 128);

    [OneTimeTearDown]
    public void DisposeRuntime() => _runtime.Dispose();

    /// <summary>CUDA's 128 threads per group; grouped query heads (2 over 1) and grouped value heads (1 query/key head, 2 value heads).</summary>
    [TestCase(GateKind.None, AttentionMode.Chunked, 2, 1)]
    [TestCase(GateKind.PerHead, AttentionMode.Chunked, 2, 1)]
    [TestCase(GateKind.PerHead, AttentionMode.Recurrent, 2, 1)]
    [TestCase(GateKind.PerKey, AttentionMode.Chunked, 2, 1)]
    [TestCase(GateKind.PerKey, AttentionMode.Recurrent, 2, 1)]
    [TestCase(GateKind.PerHead, AttentionMode.Chunked, 1, 2)]
    [TestCase(GateKind.PerKey, AttentionMode.Recurrent, 1, 2)]
    public void CudaGroupSizeMatchesTheReference(GateKind gate, AttentionMode mode, int qHeads, int valueGroup) =>
        AssertMatchesTheReference(new DeltaRuleCase
        {
            SeqLens = [0, 3, 37], Hq = qHeads, Hkv = 1, ValueGroup = valueGroup, K = 16, V = 20, Gate = gate, Chunk = 32, Mode = mode,
            WithInitialState = true, QkL2Norm = true,
        }, StateLayout.KeyMajor);

    /// <summary>
    /// The state pass's 4-column value tiles and the output's 16-column ones, partial at the end (V = 7: tiles of 4 and 3;
    /// V = 9: 4, 4 and 1), over sequences of 1 token, of a chunk and a bit, of exactly a chunk and of none; the W S sums split
    /// 8 ways (chunk 16) or 4 ways (chunk 32) over the group's threads; both state layouts.
    /// </summary>
    [TestCase(GateKind.None, 7, 16, StateLayout.KeyMajor)]
    [TestCase(GateKind.PerHead, 7, 16, StateLayout.KeyMajor)]
    [TestCase(GateKind.PerKey, 7, 16, StateLayout.KeyMajor)]
    [TestCase(GateKind.None, 9, 32, StateLayout.ValueMajor)]
    [TestCase(GateKind.PerHead, 9, 32, StateLayout.ValueMajor)]
    [TestCase(GateKind.PerKey, 9, 16, StateLayout.ValueMajor)]
    public void ValueTilesMatchTheReference(GateKind gate, int valueDim, int chunk, StateLayout layout) =>
        AssertMatchesTheReference(new DeltaRuleCase
        {
            SeqLens = [1, chunk + 5, 0, chunk], Hq = 2, Hkv = 1, K = 12, V = valueDim, Gate = gate, Chunk = chunk, WithInitialState = true,
        }, layout);

    /// <summary>The kernels at 128 threads per group against the float64 reference, the state in <paramref name="layout"/>.</summary>
    private void AssertMatchesTheReference(DeltaRuleCase c, StateLayout layout)
    {
        var expected = c.Reference();
        var (q, k, v, beta, g, h0) = c.Inputs();
        var output = Numerics.NaNs(expected["output"].Length);
        bool valueMajor = layout == StateLayout.ValueMajor;
        var config = new DeltaRuleConfig(c.Heads, c.Gate, c.Config.Scale, c.Chunk, c.QkL2Norm, c.Config.L2NormEpsilon, layout);
        using var kernel = new DeltaRuleGpu(config, _runtime);
        using var state = _runtime.Accelerator.Allocate1D(valueMajor ? StateLayoutTests.TransposeHeads(h0, c.K, c.V) : h0);
        kernel.Run(c.Mode == AttentionMode.Chunked, c.Layout, q, k, v, beta, g, output, state.View);
        var finalState = state.GetAsArray1D();
        if (valueMajor) finalState = StateLayoutTests.TransposeHeads(finalState, c.V, c.K);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(output, expected["output"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(finalState, expected["final_state"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }
}

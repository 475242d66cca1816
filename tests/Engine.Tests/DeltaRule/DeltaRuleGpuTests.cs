using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Tests.Harness;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.DeltaRule;

/// <summary>
/// The delta-rule GPU kernels in their CUDA geometry (128 threads per group, so 8 row slices per 16-column
/// tile) on ILGPU's CPU accelerator, against the float64 reference. The harness runs them at 16 threads.
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
    public void CudaGroupSizeMatchesTheReference(GateKind gate, AttentionMode mode, int qHeads, int valueGroup)
    {
        var c = new DeltaRuleCase
        {
            SeqLens = [0, 3, 37], Hq = qHeads, Hkv = 1, ValueGroup = valueGroup, K = 16, V = 20, Gate = gate, Chunk = 32, Mode = mode,
            WithInitialState = true, QkL2Norm = true,
        };
        var expected = c.Reference();
        var (q, k, v, beta, g, h0) = c.Inputs();
        var output = Numerics.NaNs(expected["output"].Length);
        using var kernel = new DeltaRuleGpu(c.Config, _runtime);
        using var state = _runtime.Accelerator.Allocate1D(h0);
        kernel.Run(mode == AttentionMode.Chunked, c.Layout, q, k, v, beta, g, output, state.View);
        var finalState = state.GetAsArray1D();
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(output, expected["output"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(finalState, expected["final_state"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }
}

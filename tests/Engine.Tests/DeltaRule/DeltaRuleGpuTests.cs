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

    /// <summary>CUDA's group size and warps: what the tensor-core products need.</summary>
    private GpuRuntime _warpRuntime = null!;

    [OneTimeSetUp]
    public void CreateRuntimes()
    {
        _runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: 128);
        _warpRuntime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: 128, cpuWarpSize: MmaTf32.WarpSize);
    }

    [OneTimeTearDown]
    public void DisposeRuntimes()
    {
        _runtime.Dispose();
        _warpRuntime.Dispose();
    }

    /// <summary>The tensor-core precisions' stated bound on the relative RMS error against the float64 reference (<see cref="GpuPrecision"/>).</summary>
    private const double TensorCoreTolerance = 2e-3;

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

    /// <summary>
    /// The chunk products on tensor cores (32-lane warps, emulated): within the tensor-core bound of the reference, and off it by more
    /// than fp32 rounding, so the rounded products ran. K = 8 and V = 12 leave partial slices and tiles; the second sequence ends
    /// mid-chunk. Tiny shapes, grouped query heads (2 over 1) once: the emulated instruction is slow on the CPU accelerator.
    /// </summary>
    [TestCase(GpuPrecision.Tf32, GateKind.None, 16, StateLayout.KeyMajor, 2)]
    [TestCase(GpuPrecision.Tf32, GateKind.PerHead, 32, StateLayout.ValueMajor, 1)]
    [TestCase(GpuPrecision.Tf32, GateKind.PerHead, 64, StateLayout.KeyMajor, 1)]
    [TestCase(GpuPrecision.Tf32, GateKind.PerKey, 32, StateLayout.ValueMajor, 1)]
    [TestCase(GpuPrecision.Fp16, GateKind.None, 64, StateLayout.KeyMajor, 1)]
    [TestCase(GpuPrecision.Fp16, GateKind.PerHead, 32, StateLayout.ValueMajor, 2)]
    [TestCase(GpuPrecision.Fp16, GateKind.PerKey, 16, StateLayout.KeyMajor, 1)]
    public void TensorCoresMatchTheReferenceWithinTheirBound(GpuPrecision precision, GateKind gate, int chunk, StateLayout layout, int queryHeads)
    {
        var c = new DeltaRuleCase
        {
            SeqLens = [1, chunk + 9], Hq = queryHeads, Hkv = 1, K = 8, V = 12, Gate = gate, Chunk = chunk, WithInitialState = true, QkL2Norm = true,
        };
        var (output, finalState) = Run(c, layout, precision, _warpRuntime);
        var expected = c.Reference();
        double outputError = Numerics.RelativeRms(output, expected["output"]), stateError = Numerics.RelativeRms(finalState, expected["final_state"]);
        TestContext.Out.WriteLine($"{precision} relative RMS error: output {outputError:E2}, final state {stateError:E2}");
        Assert.Multiple(() =>
        {
            Assert.That(outputError, Is.LessThanOrEqualTo(TensorCoreTolerance), "output");
            Assert.That(stateError, Is.LessThanOrEqualTo(TensorCoreTolerance), "final state");
            Assert.That(outputError, Is.GreaterThan(Numerics.Fp32Tolerance), $"the products are rounded to {precision}");
        });
    }

    /// <summary>A NaN in a later token's k or v leaves every earlier output of the tensor-core kernels bitwise as it was.</summary>
    [TestCase(GpuPrecision.Tf32, GateKind.PerHead, "k")]
    [TestCase(GpuPrecision.Tf32, GateKind.None, "v")]
    [TestCase(GpuPrecision.Fp16, GateKind.PerHead, "v")]
    public void TensorCoreOutputsBeforeAFaultAreThoseOfTheRunWithoutIt(GpuPrecision precision, GateKind gate, string input)
    {
        const int chunk = 16, fault = 3 + chunk + 5;
        var c = new DeltaRuleCase { SeqLens = [3, chunk + 8], Hq = 1, Hkv = 1, K = 8, V = 12, Gate = gate, Chunk = chunk, QkL2Norm = true };
        var config = new DeltaRuleConfig(c.Heads, c.Gate, c.Config.Scale, c.Chunk, c.QkL2Norm, gpuPrecision: precision);
        using var kernel = new DeltaRuleGpu(config, _warpRuntime);
        using var state = _warpRuntime.Accelerator.Allocate1D<float>(c.Sequences * c.Hv * c.K * c.V);
        var inputs = c.Inputs();
        float[] Run()
        {
            var output = Numerics.NaNs((long)c.TotalT * c.Ho * c.V);
            state.MemSetToZero();
            kernel.Run(chunked: true, c.Layout, inputs.q, inputs.k, inputs.v, inputs.beta, inputs.g, output, state.View);
            return output;
        }
        var clean = Run();
        var faulted = input == "k" ? inputs.k : inputs.v;
        int perToken = faulted.Length / c.TotalT;
        faulted[perToken * fault + perToken / 2] = float.NaN;
        var withFault = Run();
        int earlier = fault * c.Ho * c.V;
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.AllFinite(clean), "the run without a fault");
            Assert.That(withFault.AsSpan(0, earlier).ToArray(), Is.EqualTo(clean.AsSpan(0, earlier).ToArray()), "outputs before the fault");
            Assert.That(Numerics.AllFinite(withFault.AsSpan(earlier, c.Ho * c.V)), Is.False, "the fault reaches its own token");
        });
    }

    [Test]
    public void TensorCoresNeedWholeWarps([Values(GpuPrecision.Tf32, GpuPrecision.Fp16)] GpuPrecision precision)
    {
        var config = new DeltaRuleConfig(new HeadLayout(1, 1, 16, 16), GateKind.PerHead, 1f, 16, qkL2Norm: false, gpuPrecision: precision);
        var error = Assert.Throws<NotSupportedException>(() => new DeltaRuleGpu(config, _runtime).Dispose());
        Assert.That(error!.Message, Does.Contain($"{precision} precision").And.Contain("warps of 32 threads").And.Contain("have 4"));
    }

    /// <summary>A warp's 16 × 32 block needs 16 · group size / chunk columns, a multiple of 32; and the staged tiles within 48 KB.</summary>
    [TestCase(32, 64, "multiple of 128")]
    [TestCase(256, 16, "bytes of shared memory")]
    public void Tf32NeedsTilesThatFit(int groupSize, int chunk, string expected)
    {
        using var runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: groupSize, cpuWarpSize: MmaTf32.WarpSize);
        var config = new DeltaRuleConfig(new HeadLayout(1, 1, 16, 16), GateKind.PerHead, 1f, chunk, qkL2Norm: false, gpuPrecision: GpuPrecision.Tf32);
        var error = Assert.Throws<NotSupportedException>(() => new DeltaRuleGpu(config, runtime).Dispose());
        Assert.That(error!.Message, Does.Contain(expected));
    }

    /// <summary>The kernels at 128 threads per group against the float64 reference, the state in <paramref name="layout"/>.</summary>
    private void AssertMatchesTheReference(DeltaRuleCase c, StateLayout layout)
    {
        var expected = c.Reference();
        var (output, finalState) = Run(c, layout, GpuPrecision.Fp32, _runtime);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(output, expected["output"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(finalState, expected["final_state"]), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }

    /// <summary>One call of the kernels on <paramref name="runtime"/>: the output and the final state (key-major), the state in <paramref name="layout"/> on the device.</summary>
    private static (float[] Output, float[] FinalState) Run(DeltaRuleCase c, StateLayout layout, GpuPrecision precision, GpuRuntime runtime)
    {
        var (q, k, v, beta, g, h0) = c.Inputs();
        var output = Numerics.NaNs((long)c.TotalT * c.Ho * c.V);
        bool valueMajor = layout == StateLayout.ValueMajor;
        var config = new DeltaRuleConfig(c.Heads, c.Gate, c.Config.Scale, c.Chunk, c.QkL2Norm, c.Config.L2NormEpsilon, layout, precision);
        using var kernel = new DeltaRuleGpu(config, runtime);
        using var state = runtime.Accelerator.Allocate1D(valueMajor ? Api.StateLayoutTests.TransposeHeads(h0, c.K, c.V) : h0);
        kernel.Run(c.Mode == AttentionMode.Chunked, c.Layout, q, k, v, beta, g, output, state.View);
        var finalState = state.GetAsArray1D();
        return (output, valueMajor ? Api.StateLayoutTests.TransposeHeads(finalState, c.V, c.K) : finalState);
    }
}

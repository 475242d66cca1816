using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Gla;

/// <summary>
/// <see cref="AttentionOptions.GpuPrecision"/> through the facades (Gla.Forward, Lightning.Forward, DeltaRule.Forward) on the Gpu backend, ILGPU's
/// CPU accelerator in CUDA's geometry (128 threads, 32-lane warps) emulating the tensor cores: within the stated bound of the
/// float64 reference and outside the fp32 one (the rounding ran); refused on 4-lane warps, for an undefined value, and for fp16
/// operands past fp16's range (GLA's and the delta rule's).
/// </summary>
[TestFixture]
public sealed class GpuPrecisionTests
{
    private const int T = 24, K = 8, V = 12;

    /// <summary>The tensor-core precisions' stated bound on the relative RMS error (<see cref="AttentionOptions.GpuPrecision"/>).</summary>
    private const double TensorCoreTolerance = 2e-3;

    private EngineDevice _cudaGeometry = null!;

    [OneTimeSetUp]
    public void CreateDevice() => _cudaGeometry = EngineDevice.Create(Backend.Gpu,
        new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator, CpuAcceleratorGroupSize = 128, CpuAcceleratorWarpSize = 32 });

    [OneTimeTearDown]
    public void DisposeDevice() => _cudaGeometry.Dispose();

    private static (Tensor<float> Q, Tensor<float> K, Tensor<float> V, Tensor<float> G) Inputs(int seed)
    {
        var data = new TestData(seed);
        return (Tensor.Create(data.Normal(T * K), [1, T, 1, K]), Tensor.Create(data.UnitRows(T, K), [1, T, 1, K]),
            Tensor.Create(data.Normal(T * V), [1, T, 1, V]), Tensor.Create(data.LogGates(T * K, 1.0), [1, T, 1, K]));
    }

    private static void AssertWithinBound(AttentionResult<float> actual, AttentionResult<float> expected, GpuPrecision precision)
    {
        double output = Numerics.RelativeRms(actual.Output.ToArray(), expected.Output.ToArray());
        double state = Numerics.RelativeRms(actual.FinalState.ToArray(), expected.FinalState.ToArray());
        Assert.That(output, Is.LessThanOrEqualTo(TensorCoreTolerance), $"{precision}: output relative RMS error");
        Assert.That(state, Is.LessThanOrEqualTo(TensorCoreTolerance), $"{precision}: final state relative RMS error");
        Assert.That(output, Is.GreaterThan(Numerics.Fp32Tolerance), $"the products are rounded to {precision}");
    }

    [Test]
    public void GlaForwardOnTensorCoresMatchesReferenceWithinTheBound([Values(GpuPrecision.Tf32, GpuPrecision.Fp16)] GpuPrecision precision)
    {
        var (q, k, v, g) = Inputs(seed: 81);
        var options = new GlaOptions { ChunkSize = 16, GpuPrecision = precision };
        AssertWithinBound(Engine.Gla.Forward(_cudaGeometry, q, k, v, g, options), Engine.Gla.Forward(TestDevices.Reference, q, k, v, g, options), precision);
    }

    [Test]
    public void LightningForwardOnTensorCoresMatchesReferenceWithinTheBound([Values(GpuPrecision.Tf32, GpuPrecision.Fp16)] GpuPrecision precision)
    {
        var (q, k, v, _) = Inputs(seed: 82);
        var options = new LightningOptions { BlockSize = 16, Slopes = [0.3f], GpuPrecision = precision };
        AssertWithinBound(Engine.Lightning.Forward(_cudaGeometry, q, k, v, options), Engine.Lightning.Forward(TestDevices.Reference, q, k, v, options), precision);
    }

    [Test]
    public void DeltaRuleForwardOnTensorCoresMatchesReferenceWithinTheBound([Values(GpuPrecision.Tf32, GpuPrecision.Fp16)] GpuPrecision precision)
    {
        var (q, k, v, g) = Inputs(seed: 86);
        var beta = Tensor.Create(new TestData(87).Uniform(T, 0.1, 0.9), [1, T, 1]);
        var options = new DeltaRuleOptions { ChunkSize = 16, QkL2Norm = true, GpuPrecision = precision };
        AssertWithinBound(Engine.DeltaRule.Forward(_cudaGeometry, q, k, v, beta, g, options),
            Engine.DeltaRule.Forward(TestDevices.Reference, q, k, v, beta, g, options), precision);
    }

    /// <summary>
    /// A value finite in fp32 but past fp16's range: the chunk's own products (U = T diag(β) V) overflow and the call is refused. Token 3
    /// of a 32-token chunk: rows 16 on read it through a whole fp16 step (the steps across the diagonal are summed in fp32).
    /// </summary>
    [Test]
    public void DeltaRuleFp16OperandsPastItsRangeAreRefused()
    {
        var (q, k, v, g) = Inputs(seed: 88);
        var beta = Tensor.Create(new TestData(89).Uniform(T, 0.1, 0.9), [1, T, 1]);
        v[0, 3, 0, 3] = 1e6f;
        var error = Assert.Throws<ArgumentException>(() =>
            Engine.DeltaRule.Forward(_cudaGeometry, q, k, v, beta, g, new DeltaRuleOptions { ChunkSize = 32, GpuPrecision = GpuPrecision.Fp16 }));
        Assert.That(error!.ParamName, Is.EqualTo("output"));
        Assert.That(error.Message, Does.Contain("not finite"));
        Assert.DoesNotThrow(() => Engine.DeltaRule.Forward(_cudaGeometry, q, k, v, beta, g, new DeltaRuleOptions { ChunkSize = 32, GpuPrecision = GpuPrecision.Tf32 }),
            "tf32 has fp32's range");
    }

    [Test]
    public void TensorCoresAreRefusedWithoutWholeWarps([Values(GpuPrecision.Tf32, GpuPrecision.Fp16)] GpuPrecision precision)
    {
        var (q, k, v, g) = Inputs(seed: 83);
        var device = TestDevices.Get(TestBackend.GpuOnCpuAccelerator);
        var error = Assert.Throws<NotSupportedException>(() => Engine.Gla.Forward(device, q, k, v, g, new GlaOptions { GpuPrecision = precision }));
        Assert.That(error!.Message, Does.Contain($"{precision} precision").And.Contain("warps of 32 threads"));
    }

    [Test]
    public void AnUndefinedPrecisionIsRefused()
    {
        var (q, k, v, g) = Inputs(seed: 84);
        var error = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(TestDevices.Get(TestBackend.Cpu), q, k, v, g, new GlaOptions { GpuPrecision = (GpuPrecision)7 }));
        Assert.That(error!.Message, Does.Contain("GpuPrecision must be one of Fp32, Tf32, Fp16, got 7"));
    }

    /// <summary>A query finite in fp32 but past fp16's range once scaled: its scores overflow and the call is refused, no infinity handed back.</summary>
    [Test]
    public void Fp16OperandsPastItsRangeAreRefused()
    {
        var (q, k, v, _) = Inputs(seed: 85);
        q[0, 20, 0, 3] = 1e6f;
        var error = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(_cudaGeometry, q, k, v, null, new GlaOptions { ChunkSize = 16, GpuPrecision = GpuPrecision.Fp16 }));
        Assert.That(error!.ParamName, Is.EqualTo("output"));
        Assert.That(error.Message, Does.Contain("not finite"));
        Assert.DoesNotThrow(() => Engine.Gla.Forward(_cudaGeometry, q, k, v, null, new GlaOptions { ChunkSize = 16, GpuPrecision = GpuPrecision.Tf32 }), "tf32 has fp32's range");
    }
}

using Engine.Kernels.Common;
using Engine.Kernels.Lssl;
using Engine.Tests.Harness;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.Lssl;

/// <summary>
/// The LSSL GPU kernels in their CUDA geometry (128 threads per group: more threads than state rows, partial
/// sums from idle threads) on ILGPU's CPU accelerator, against the float64 reference (the harness runs them at
/// 16).
/// </summary>
[TestFixture]
public sealed class LsslGpuTests
{
    private GpuRuntime _runtime = null!;

    [OneTimeSetUp]
    public void CreateRuntime() => _runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: 128);

    [OneTimeTearDown]
    public void DisposeRuntime() => _runtime.Dispose();

    /// <summary>
    /// A system's copy on a runtime that was disposed (its device gone) is released when a copy is next made: a layer that
    /// outlived its devices kept every one's runtime and copy until the layer itself was disposed.
    /// </summary>
    [Test]
    public void ACopyOnADisposedRuntimeIsReleasedWhenTheNextIsMade()
    {
        using var system = LsslProblem.Make(2, 4, LsslStateMatrix.Diagonal, seed: 24).System(LsslDiscretization.Bilinear, 16);
        var first = new DisposalProbe();
        using (var gone = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator)) system.DeviceCopy(gone, () => first);
        Assert.That(first.Disposed, Is.False, "kept until a copy is made");
        var second = new DisposalProbe();
        Assert.That(system.DeviceCopy(_runtime, () => second), Is.SameAs(second));
        Assert.That(first.Disposed, Is.True, "released with its runtime gone");
        Assert.That(second.Disposed, Is.False);
    }

    private sealed class DisposalProbe : IDisposable
    {
        public bool Disposed { get; private set; }

        public void Dispose() => Disposed = true;
    }

    [TestCase(LsslStateMatrix.DensePerChannel, LsslMode.Recurrent)]
    [TestCase(LsslStateMatrix.DensePerChannel, LsslMode.Scan)]
    [TestCase(LsslStateMatrix.DensePerChannel, LsslMode.Conv)]
    [TestCase(LsslStateMatrix.Diagonal, LsslMode.Scan)]
    public void CudaGroupSizeMatchesTheReference(LsslStateMatrix form, LsslMode mode)
    {
        int b = 1, l = 37, h = 2, n = 8;
        var p = LsslProblem.Make(h, n, form, seed: 21);
        using var system = p.System(LsslDiscretization.Bilinear, 16);
        var u = new TestData(22).Normal(b * l * h);
        var x0 = new TestData(23).Normal(b * h * n, 0.5);
        var expectedY = new double[b * l * h];
        var expectedState = TestData.ToDouble(x0);
        LsslReference.Forward(system, b, l, u, expectedY, expectedState);

        var y = Numerics.NaNs(b * l * h);
        using var kernel = new LsslGpu(system.Config, _runtime);
        using var state = _runtime.Accelerator.Allocate1D(x0);
        kernel.Run(mode, system, b, l, u, y, state.View);
        var finalState = state.GetAsArray1D();
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(y, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "y");
            Assert.That(Numerics.RelativeRms(finalState, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        });
    }
}

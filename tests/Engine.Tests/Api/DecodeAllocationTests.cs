using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// Managed bytes a decode step allocates once warm, on one worker. Every call boxed its kernel pool's key and made a
/// closure to build a kernel it then found pooled (a GLA step: 720 bytes, now 592), and an LSSL step formatted a shape
/// message it did not throw (488 bytes, now 248).
/// </summary>
[TestFixture]
public sealed class DecodeAllocationTests
{
    private const int Steps = 100;

    [Test]
    public void AGlaStepFindsItsPooledKernelWithoutAllocating()
    {
        using var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { CpuThreads = 1 });
        using var session = new GlaSession(device, 1, new HeadLayout(2, 2, 16, 16), GateKind.PerKey);
        var data = new TestData(5);
        var q = Tensor.Create(data.Normal(32), [1, 1, 2, 16]);
        var g = Tensor.Create(data.LogGates(32, 0.5), [1, 1, 2, 16]);
        var output = Tensor.Create(new float[32], [1, 1, 2, 16]);
        Assert.That(BytesPerCall(() => session.Step(q, q, q, g, output)), Is.LessThan(640), "bytes allocated per GLA decode step");
    }

    [Test]
    public void AnLsslStepFormatsNoMessage()
    {
        using var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { CpuThreads = 1 });
        using var layer = Engine.Lssl.Parameters(LsslInitKind.Diagonal, 4, 8, 1).Layer();
        using var session = layer.CreateSession(device, 1);
        var u = Tensor.Create(new TestData(6).Normal(4), [1, 1, 4]);
        var y = Tensor.Create(new float[4], [1, 1, 4]);
        Assert.That(BytesPerCall(() => session.Step(u, y)), Is.LessThan(300), "bytes allocated per LSSL decode step");
    }

    private static long BytesPerCall(Action call)
    {
        for (int i = 0; i < 10; i++) call();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Steps; i++) call();
        return (GC.GetAllocatedBytesForCurrentThread() - before) / Steps;
    }
}

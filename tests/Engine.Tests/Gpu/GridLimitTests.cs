using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Gpu;

/// <summary>
/// Heads and head dims whose launches would pass the accelerator's grid in y or z (65535 groups, on CUDA as on ILGPU's CPU
/// accelerator), from tensors of one token: refused naming the heads and dims. Before, ILGPU refused the launch as it ran
/// with an ArgumentOutOfRangeException naming only its grid.
/// </summary>
[TestFixture]
public sealed class GridLimitTests
{
    private static Tensor<float> Filled(params nint[] shape)
    {
        var t = Tensor.CreateFromShape<float>(shape);
        t.Fill(0.01f);
        return t;
    }

    [Test]
    public void GlaHeadsPastTheGridAreRefused()
    {
        const int heads = 70000;
        var rows = Filled(1, 1, heads, 1);
        var e = Assert.Throws<NotSupportedException>(() => Engine.Gla.Forward(TestDevices.Of(Backend.Gpu), rows, rows, rows, null))!;
        Assert.That(e.Message, Does.StartWith($"q, k, v: {heads} heads, K = 1, V = 1: the GPU kernels would launch {heads} groups in a grid's y"));
    }

    /// <summary>The chunked state scan launches a thread per state entry of a head: K = V = 1024 is 65536 groups of 16 on the CPU accelerator.</summary>
    [Test]
    public void GlaChunkedStateEntriesPastTheGridAreRefused()
    {
        var rows = Filled(1, 1, 1, 1024);
        var e = Assert.Throws<NotSupportedException>(() => Engine.Gla.Forward(TestDevices.Of(Backend.Gpu), rows, rows, rows, null))!;
        Assert.That(e.Message, Does.StartWith("q, k, v: 1 heads, K = 1024, V = 1024: the GPU kernels would launch 1 groups in a grid's y and 65536 in its z"));
    }

    [Test]
    public void DeltaRuleHeadsPastTheGridAreRefused()
    {
        const int heads = 70000;
        var rows = Filled(1, 1, heads, 1);
        var e = Assert.Throws<NotSupportedException>(() => Engine.DeltaRule.Forward(TestDevices.Of(Backend.Gpu), rows, rows, rows, Filled(1, 1, heads), null,
            new DeltaRuleOptions { Mode = AttentionMode.Recurrent }))!;
        Assert.That(e.Message, Does.StartWith($"q, k, v: {heads} heads, K = 1, V = 1: the GPU kernels would launch {heads} groups in a grid's y"));
    }
}

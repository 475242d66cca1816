using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>Calls with no tokens: the state passes through unchanged and the (empty) output is written, on every path.</summary>
[TestFixture]
public sealed class EmptyCallTests
{
    /// <summary>
    /// fp16 device tensors with no tokens: the fp32 scratch views were one element long (the buffer pool's minimum), so the
    /// output's conversion wrote past the end of the empty fp16 tensor and the checks read a stale value.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void Fp16DeviceTensorsWithoutTokensKeepTheState(bool packed)
    {
        var gpu = TestDevices.Of(Backend.Gpu);
        var heads = new HeadLayout(2, 2, 16, 8);
        int sequences = 2;
        nint batch = packed ? 1 : sequences;
        var initial = new TestData(11).Normal(sequences * 2 * 16 * 8);
        using var q = gpu.Allocate<Half>(batch, 0, 2, 16);
        using var k = gpu.Allocate<Half>(batch, 0, 2, 16);
        using var v = gpu.Allocate<Half>(batch, 0, 2, 8);
        using var beta = gpu.Allocate<Half>(batch, 0, 2);
        using var g = gpu.Allocate<Half>(batch, 0, 2, 16);
        using var output = gpu.Allocate<Half>(batch, 0, 2, 8);
        using var init = gpu.Upload(new ReadOnlyTensorSpan<float>(initial, [sequences, 2, 16, 8]));
        using var final = gpu.Allocate<float>(sequences, 2, 16, 8);
        int[]? cu = packed ? [0, 0, 0] : null;
        foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
        {
            Engine.Gla.Forward(gpu, q, k, v, g, output, init, final, cu, new GlaOptions { Mode = mode });
            Assert.That(final.ToTensor().ToArray(), Is.EqualTo(initial), $"GLA {mode}");
            Engine.DeltaRule.Forward(gpu, q, k, v, beta, g, output, init, final, cu, new DeltaRuleOptions { Mode = mode });
            Assert.That(final.ToTensor().ToArray(), Is.EqualTo(initial), $"delta rule {mode}");
            Engine.Lightning.Forward(gpu, q, k, v, output, init, final, cu, new LightningOptions { Mode = mode });
            Assert.That(final.ToTensor().ToArray(), Is.EqualTo(initial), $"Lightning {mode}");
        }
        using var session = new GlaSession(gpu, sequences, heads, GateKind.PerKey);
        session.Prefill(q, k, v, g, output, cu);
        session.Step(q, k, v, g, output, cu);
    }

    /// <summary>
    /// A batch of B = 0 sequences runs on host tensors (an empty output and state); on device tensors, loading the empty final
    /// state threw ArgumentNullException ("view") from ILGPU's memset.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void DeviceTensorsOfAnEmptyBatchRunAsHostTensorsDo(bool withInitialState)
    {
        var gpu = TestDevices.Of(Backend.Gpu);
        using var q = gpu.Allocate<float>(0, 5, 2, 8);
        using var k = gpu.Allocate<float>(0, 5, 2, 8);
        using var v = gpu.Allocate<float>(0, 5, 2, 4);
        using var beta = gpu.Allocate<float>(0, 5, 2);
        using var gate = gpu.Allocate<float>(0, 5, 2);
        using var output = gpu.Allocate<float>(0, 5, 2, 4);
        using var init = withInitialState ? gpu.Allocate<float>(0, 2, 8, 4) : null;
        using var final = gpu.Allocate<float>(0, 2, 8, 4);
        Engine.Gla.Forward(gpu, q, k, v, gate, output, init, final);
        Engine.DeltaRule.Forward(gpu, q, k, v, beta, gate, output, init, final);
        Engine.Lightning.Forward(gpu, q, k, v, output, init, final);

        using var layer = Engine.Lssl.Parameters(LsslInitKind.Diagonal, 2, 4, 1).Layer();
        using var u = gpu.Allocate<float>(0, 5, 2);
        using var y = gpu.Allocate<float>(0, 5, 2);
        using var lsslInit = withInitialState ? gpu.Allocate<float>(0, 2, 4) : null;
        using var lsslFinal = gpu.Allocate<float>(0, 2, 4);
        layer.Forward(gpu, u, y, lsslInit, lsslFinal, LsslMode.Recurrent);
        layer.Forward(gpu, u, y, lsslInit, lsslFinal, LsslMode.Scan);
    }
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Gla;

/// <summary>
/// What a GPU call moves and launches, read from the device's counters (ILGPU's CPU accelerator here): a chunked GLA
/// call with a per-key gate launches its three kernels; a session's decode step launches one, uploads the token's rows and
/// downloads its output, and never moves the state, which stays on the device.
/// </summary>
[TestFixture]
public sealed class GpuTrafficTests
{
    private const int Heads = 2, Dim = 64, Tokens = 40;

    [Test]
    public void ChunkedCallLaunchesItsThreeKernelsAndDownloadsTheOutputAndState()
    {
        using var device = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        var (q, k, v, g) = Rows(Tokens, seed: 1);
        var output = Numerics.NaNs(Tokens * Heads * Dim);
        var state = Numerics.NaNs(Heads * Dim * Dim);
        var before = device.GpuTraffic;
        Engine.Gla.Forward<float>(device, Span(q, Tokens), Span(k, Tokens), Span(v, Tokens), Span(g, Tokens), new TensorSpan<float>(output, [1, Tokens, Heads, Dim], []),
            finalState: new TensorSpan<float>(state, [1, Heads, Dim, Dim], []), options: new GlaOptions { ChunkSize = 16, Mode = AttentionMode.Chunked });
        var call = device.GpuTraffic.Since(before);
        Assert.Multiple(() =>
        {
            Assert.That(call.Launches, Is.EqualTo(3), "cumulative gates, chunk states, output");
            Assert.That(call.BytesToHost, Is.EqualTo((output.Length + state.Length) * sizeof(float)), "the output and the final state");
            Assert.That(call.BytesToDevice, Is.GreaterThanOrEqualTo((q.Length + k.Length + v.Length + g.Length) * sizeof(float)), "q, k, v and g");
            Assert.That(output.All(float.IsFinite), "output written");
        });
    }

    [Test]
    public void DecodeStepMovesTheTokenNotTheState()
    {
        using var device = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        using var session = new GlaSession(device, 1, new HeadLayout(Heads, Heads, Dim, Dim), GateKind.PerKey, new GlaOptions { ChunkSize = 16 });
        var (q, k, v, g) = Rows(Tokens, seed: 2);
        session.Prefill(Span(q, Tokens), Span(k, Tokens), Span(v, Tokens), Span(g, Tokens), new TensorSpan<float>(new float[Tokens * Heads * Dim], [1, Tokens, Heads, Dim], []));
        var (q1, k1, v1, g1) = Rows(1, seed: 3);
        var output = Numerics.NaNs(Heads * Dim);
        var before = device.GpuTraffic;
        session.Step(Span(q1, 1), Span(k1, 1), Span(v1, 1), Span(g1, 1), new TensorSpan<float>(output, [1, 1, Heads, Dim], []));
        var step = device.GpuTraffic.Since(before);
        long stateBytes = (long)Heads * Dim * Dim * sizeof(float), tokenBytes = (long)4 * Heads * Dim * sizeof(float);
        Assert.Multiple(() =>
        {
            Assert.That(step.Launches, Is.EqualTo(1), "the recurrent kernel");
            Assert.That(step.BytesToHost, Is.EqualTo(output.Length * sizeof(float)), "the output only");
            Assert.That(step.BytesToDevice, Is.InRange(tokenBytes, tokenBytes + 1024), "the token's rows (and a sequence table), not the state");
            Assert.That(step.BytesToDevice, Is.LessThan(stateBytes));
            Assert.That(output.All(float.IsFinite), "output written");
        });
    }

    private static (float[] Q, float[] K, float[] V, float[] G) Rows(int tokens, int seed)
    {
        var data = new TestData(seed);
        return (data.Normal(tokens * Heads * Dim), data.UnitRows(tokens * Heads, Dim), data.Normal(tokens * Heads * Dim), data.LogGates(tokens * Heads * Dim, 1));
    }

    private static ReadOnlyTensorSpan<float> Span(float[] values, int tokens) => new(values, [1, tokens, Heads, Dim], []);
}

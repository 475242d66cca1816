using System.Numerics.Tensors;
using Engine.Kernels.Gating;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// The delta rule with its gated output norm (<see cref="DeltaRuleOptions.OutputNorm"/>). Expected: the float64 reference's
/// output without the norm, then the norm written out here per output head row (o / sqrt(mean(o²) + ε) · scale · act(z)).
/// Both head groupings (more value heads than query heads, and more query heads than value heads), both modes, both
/// activations, a value dim that is not a multiple of 16, the CPU kernels (which normalize before they store) and the
/// reference backend; a non-finite gate is named.
/// </summary>
[TestFixture]
public sealed class OutputNormTests
{
    private const int B = 2, T = 37;

    [Test]
    public void NormalizedOutputMatchesTheFormulaOnTheReferenceOutput([Values] AttentionMode mode, [Values] GateActivation activation,
        [Values(2, 4)] int qHeads, [Values] bool onReference)
        => NormalizedOutputMatches(mode, activation, qHeads, onReference ? TestDevices.Reference : TestDevices.Get(TestBackend.Cpu));

    /// <summary>The GPU backend normalizes its output on the host with the CPU kernel.</summary>
    [Test]
    public void TheGpuBackendNormalizesAfterItsRun([Values(TestBackend.GpuOnCpuAccelerator, TestBackend.GpuOnCuda)] TestBackend backend)
        => NormalizedOutputMatches(AttentionMode.Chunked, GateActivation.Silu, 2, TestDevices.Get(backend));

    private static void NormalizedOutputMatches(AttentionMode mode, GateActivation activation, int qHeads, EngineDevice device)
    {
        int kvHeads = 8 / qHeads, keyHeads = Math.Min(qHeads, kvHeads), outHeads = Math.Max(qHeads, kvHeads), k = 16, v = 24;
        var data = new TestData(qHeads + (int)activation);
        var q = new ReadOnlyTensorSpan<float>(data.Normal(B * T * qHeads * k, 0.5), [B, T, qHeads, k], []);
        var key = new ReadOnlyTensorSpan<float>(data.Normal(B * T * keyHeads * k, 0.5), [B, T, keyHeads, k], []);
        var value = new ReadOnlyTensorSpan<float>(data.Normal(B * T * kvHeads * v, 0.5), [B, T, kvHeads, v], []);
        var beta = new ReadOnlyTensorSpan<float>(data.Uniform(B * T * kvHeads, 0.1, 0.9), [B, T, kvHeads], []);
        var g = new ReadOnlyTensorSpan<float>(data.LogGates(B * T * kvHeads, 0.3), [B, T, kvHeads], []);
        var scale = data.Normal(v, 0.3).Select(x => 1 + x).ToArray();
        var gate = data.Normal(B * T * outHeads * v, 1.0);
        var options = new DeltaRuleOptions { Mode = mode, QkL2Norm = true, ChunkSize = 16 };

        var expected = Numerics.NaNs(B * T * outHeads * v);
        Engine.DeltaRule.Forward(TestDevices.Reference, q, key, value, beta, g, new TensorSpan<float>(expected, [B, T, outHeads, v], []), options: options);
        for (int row = 0; row < B * T * outHeads; row++)
        {
            double squares = 0;
            for (int i = 0; i < v; i++) squares += (double)expected[row * v + i] * expected[row * v + i];
            double inverse = 1 / Math.Sqrt(squares / v + 1e-6);
            for (int i = 0; i < v; i++)
            {
                double z = gate[row * v + i], sigmoid = 1 / (1 + Math.Exp(-z));
                expected[row * v + i] = (float)(expected[row * v + i] * inverse * scale[i] * (activation == GateActivation.Silu ? z * sigmoid : sigmoid));
            }
        }

        var actual = Numerics.NaNs(B * T * outHeads * v);
        var norm = new GatedOutputNorm { Scale = scale, Gate = gate, Epsilon = 1e-6f, Activation = activation };
        Engine.DeltaRule.Forward(device, q, key, value, beta, g,
            new TensorSpan<float>(actual, [B, T, outHeads, v], []), options: options with { OutputNorm = norm });
        Assert.That(Numerics.RelativeRms(actual, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    /// <summary>
    /// The gate or the scale in the memory of the output (the gate as the output's very tensor, a natural in-place gating) or
    /// of the final state: the reference and the GPU backend normalized the finished output with a gate and scale it had been
    /// written over, the CPU kernels stored rows over values they had still to read: wrong output, no error. Refused on every
    /// backend, naming the tensor written and the one read, before anything is written; apart, the call matches the reference.
    /// </summary>
    [Test]
    public void AGateOrScaleSharingMemoryWithTheOutputOrStateIsRefused([Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend,
        [Values("output/gate", "output/scale", "final_state/scale")] string overlap)
    {
        int h = 2, d = 16, n = B * T * h * d;
        var data = new TestData(12);
        var rows = Tensor.Create(data.Normal(n, 0.5), [B, T, h, d]);
        var beta = Tensor.Create(data.Uniform(B * T * h, 0.1, 0.9), [B, T, h]);
        var gate = data.Normal(n, 1.0);
        var scale = data.Uniform(d, 0.5, 1.5);
        var options = new DeltaRuleOptions { QkL2Norm = true, OutputNorm = new GatedOutputNorm { Scale = scale, Gate = gate } };
        var expected = Numerics.NaNs(n);
        Engine.DeltaRule.Forward<float>(TestDevices.Reference, rows, rows, rows, beta, default, new TensorSpan<float>(expected, [B, T, h, d], []), options: options);

        // The shared memory holds the gate's (or the scale's) values: only the overlap differs from the call above.
        var output = Numerics.NaNs(n);
        var state = Numerics.NaNs(B * h * d * d);
        var (written, writtenName, read) = overlap switch
        {
            "output/gate" => (output, "output", "gate"),
            "output/scale" => (output, "output", "scale"),
            _ => (state, "final_state", "scale"),
        };
        if (read == "gate") gate.CopyTo(written, 0);
        else scale.CopyTo(written, 5 * d);
        var shared = options with
        {
            OutputNorm = read == "gate" ? options.OutputNorm with { Gate = written } : options.OutputNorm with { Scale = new ReadOnlyMemory<float>(written, 5 * d, d) },
        };
        var before = (float[])written.Clone();
        var e = Assert.Throws<ArgumentException>(() => Engine.DeltaRule.Forward<float>(TestDevices.Of(backend), rows, rows, rows, beta, default,
            new TensorSpan<float>(output, [B, T, h, d], []), default, new TensorSpan<float>(state, [B, h, d, d], []), options: shared))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo(writtenName), e.Message);
            Assert.That(e.Message, Does.StartWith($"{writtenName}: shares memory with output norm {read}"));
            Assert.That(written, Is.EqualTo(before).Using<float>((a, b) => a.Equals(b)), "the refused call wrote nothing");
        });
        var apart = Numerics.NaNs(n);
        Engine.DeltaRule.Forward<float>(TestDevices.Of(backend), rows, rows, rows, beta, default, new TensorSpan<float>(apart, [B, T, h, d], []), options: options);
        Assert.That(Numerics.RelativeRms(apart, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "apart");
    }

    [Test]
    public void ANonFiniteGateIsNamed()
    {
        int h = 2, d = 16;
        var data = new TestData(9);
        var rows = data.Normal(B * T * h * d, 0.5);
        var betas = data.Uniform(B * T * h, 0.1, 0.9);
        var gate = data.Normal(B * T * h * d, 1.0);
        gate[123] = float.NaN;
        var output = Numerics.NaNs(B * T * h * d);
        var options = new DeltaRuleOptions { OutputNorm = new GatedOutputNorm { Scale = new float[d], Gate = gate } };
        var e = Assert.Throws<ArgumentException>(() =>
        {
            var q = new ReadOnlyTensorSpan<float>(rows, [B, T, h, d], []);
            Engine.DeltaRule.Forward(TestDevices.Get(TestBackend.Cpu), q, q, q, new ReadOnlyTensorSpan<float>(betas, [B, T, h], []), default,
                new TensorSpan<float>(output, [B, T, h, d], []), options: options);
        })!;
        Assert.That(e.ParamName, Is.EqualTo("output norm gate"), e.Message);
    }

    /// <summary>
    /// Epsilon 0 (was refused: a row of zeros came out as 0/0): a zero row gives 0 on every backend, the limit as epsilon goes
    /// to 0; a negative epsilon is refused.
    /// </summary>
    [Test]
    public void AZeroEpsilonGivesZeroForAZeroRowAndANegativeOneIsRefused([Values] Backend backend)
    {
        int h = 2, d = 16;
        var rows = new float[B * T * h * d];
        var gate = new TestData(8).Normal(B * T * h * d);
        var output = Numerics.NaNs(B * T * h * d);
        void Run(float epsilon)
        {
            var options = new DeltaRuleOptions { OutputNorm = new GatedOutputNorm { Scale = Enumerable.Repeat(1f, d).ToArray(), Gate = gate, Epsilon = epsilon } };
            var q = new ReadOnlyTensorSpan<float>(rows, [B, T, h, d], []);
            Engine.DeltaRule.Forward(TestDevices.Of(backend), q, q, q, new ReadOnlyTensorSpan<float>(new float[B * T * h], [B, T, h], []), default,
                new TensorSpan<float>(output, [B, T, h, d], []), options: options);
        }
        Run(0f);
        Assert.That(output, Is.All.Zero);
        var e = Assert.Throws<ArgumentException>(() => Run(-1e-6f))!;
        Assert.That(e.Message, Does.StartWith("output norm epsilon must be finite and >= 0"));
    }
}

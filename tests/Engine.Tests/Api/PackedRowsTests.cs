using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// q, k and v given as strided views of one packed projection output [B, T, Hq·K | Hk·K | Hv·V | spare]: the CPU kernels read
/// the rows where they lie. Each call is compared with the float64 reference run on dense copies of the same values, in both
/// modes, with grouped value heads, T not a multiple of the chunk and several sequences; a non-finite value in one part is
/// named by that part's tensor.
/// </summary>
[TestFixture]
public sealed class PackedRowsTests
{
    private const int B = 2, T = 45, Hk = 2, Hv = 4, K = 16, V = 8, Spare = 3;
    private const int Width = 2 * Hk * K + Hv * V + Spare;

    private sealed record Packed(float[] Rows, float[] DenseQ, float[] DenseK, float[] DenseV)
    {
        public ReadOnlyTensorSpan<float> View(int offset, int heads, int dim) =>
            new(Rows.AsSpan(offset), [B, T, heads, dim], [T * Width, Width, dim, 1]);

        public ReadOnlyTensorSpan<float> QView => View(0, Hk, K);
        public ReadOnlyTensorSpan<float> KView => View(Hk * K, Hk, K);
        public ReadOnlyTensorSpan<float> VView => View(2 * Hk * K, Hv, V);
    }

    /// <summary>The packed rows and dense copies of their q, k and v parts.</summary>
    private static Packed MakePacked(int seed)
    {
        var rows = new TestData(seed).Normal(B * T * Width, 0.5);
        float[] Part(int offset, int width)
        {
            var dense = new float[B * T * width];
            for (int r = 0; r < B * T; r++) Array.Copy(rows, r * Width + offset, dense, r * width, width);
            return dense;
        }
        return new Packed(rows, Part(0, Hk * K), Part(Hk * K, Hk * K), Part(2 * Hk * K, Hv * V));
    }

    private static ReadOnlyTensorSpan<float> Dense(float[] values, int heads, int dim) => new(values, [B, T, heads, dim], []);

    [Test]
    public void DeltaRuleReadsPackedRowsWhereTheyLie([Values] AttentionMode mode, [Values] bool perKeyGate)
    {
        var packed = MakePacked(11);
        var data = new TestData(12);
        var beta = data.Uniform(B * T * Hv, 0.1, 0.9);
        nint[] gateShape = perKeyGate ? [B, T, Hv, K] : [B, T, Hv];
        var g = data.LogGates(gateShape.Aggregate(1L, (a, d) => a * d), 0.3);
        var options = new DeltaRuleOptions { Mode = mode, QkL2Norm = true, L2NormEpsilon = float.Epsilon, Scale = 0.3f, ChunkSize = 16 };
        float[] Run(EngineDevice device, ReadOnlyTensorSpan<float> q, ReadOnlyTensorSpan<float> k, ReadOnlyTensorSpan<float> v, float[] finalState)
        {
            var output = Numerics.NaNs(B * T * Hv * V);
            Engine.DeltaRule.Forward(device, q, k, v, new ReadOnlyTensorSpan<float>(beta, [B, T, Hv], []), new ReadOnlyTensorSpan<float>(g, gateShape, []),
                new TensorSpan<float>(output, [B, T, Hv, V], []), finalState: new TensorSpan<float>(finalState, [B, Hv, K, V], []), options: options);
            return output;
        }
        var expectedState = Numerics.NaNs(B * Hv * K * V);
        var actualState = Numerics.NaNs(B * Hv * K * V);
        var expected = Run(TestDevices.Reference, Dense(packed.DenseQ, Hk, K), Dense(packed.DenseK, Hk, K), Dense(packed.DenseV, Hv, V), expectedState);
        var actual = Run(TestDevices.Get(TestBackend.Cpu), packed.QView, packed.KView, packed.VView, actualState);
        Assert.That(Numerics.RelativeRms(actual, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
        Assert.That(Numerics.RelativeRms(actualState, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
    }

    [Test]
    public void GlaReadsPackedRowsWhereTheyLie([Values] AttentionMode mode)
    {
        var packed = MakePacked(21);
        var g = new TestData(22).LogGates(B * T * Hv * K, 0.3);
        var options = new GlaOptions { Mode = mode, ChunkSize = 16 };
        float[] Run(EngineDevice device, ReadOnlyTensorSpan<float> q, ReadOnlyTensorSpan<float> k, ReadOnlyTensorSpan<float> v)
        {
            var output = Numerics.NaNs(B * T * Hv * V);
            Engine.Gla.Forward(device, q, k, v, new ReadOnlyTensorSpan<float>(g, [B, T, Hv, K], []), new TensorSpan<float>(output, [B, T, Hv, V], []), options: options);
            return output;
        }
        var expected = Run(TestDevices.Reference, Dense(packed.DenseQ, Hk, K), Dense(packed.DenseK, Hk, K), Dense(packed.DenseV, Hv, V));
        var actual = Run(TestDevices.Get(TestBackend.Cpu), packed.QView, packed.KView, packed.VView);
        Assert.That(Numerics.RelativeRms(actual, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [TestCase("q", 0)]
    [TestCase("k", Hk * K + 5)]
    [TestCase("v", 2 * Hk * K + 1)]
    public void ANonFiniteValueIsNamedByItsPart(string tensor, int column)
    {
        var packed = MakePacked(31);
        // The spare floats after v are never read: a NaN there changes nothing.
        packed.Rows[Width - 1] = float.NaN;
        packed.Rows[(T + 7) * Width + column] = float.PositiveInfinity;
        var beta = new float[B * T * Hv];
        Array.Fill(beta, 0.5f);
        var output = Numerics.NaNs(B * T * Hv * V);
        var e = Assert.Throws<ArgumentException>(() => Engine.DeltaRule.Forward(TestDevices.Get(TestBackend.Cpu), packed.QView, packed.KView, packed.VView,
            new ReadOnlyTensorSpan<float>(beta, [B, T, Hv], []), default, new TensorSpan<float>(output, [B, T, Hv, V], [])))!;
        Assert.That(e.ParamName, Is.EqualTo(tensor), e.Message);
    }

    [Test]
    public void SpareFloatsAreNeverRead()
    {
        var packed = MakePacked(41);
        var beta = new float[B * T * Hv];
        Array.Fill(beta, 0.5f);
        float[] Run()
        {
            var output = Numerics.NaNs(B * T * Hv * V);
            Engine.DeltaRule.Forward(TestDevices.Get(TestBackend.Cpu), packed.QView, packed.KView, packed.VView,
                new ReadOnlyTensorSpan<float>(beta, [B, T, Hv], []), default, new TensorSpan<float>(output, [B, T, Hv, V], []));
            return output;
        }
        var clean = Run();
        for (int r = 0; r < B * T; r++)
            for (int c = 2 * Hk * K + Hv * V; c < Width; c++) packed.Rows[r * Width + c] = float.NaN;
        Assert.That(Run(), Is.EqualTo(clean));
    }
}

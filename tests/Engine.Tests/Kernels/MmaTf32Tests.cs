using Engine.Kernels.Common;
using Engine.Tests.Harness;
using ILGPU;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// The tensor-core product's emulation on ILGPU's CPU accelerator with 32-lane warps: the tf32 rounding against an
/// independent float64 formula (ties, carries, subnormals, overflow, NaN), and D = A·B + C against float64 sums of the
/// rounded products for the fragment layouts the tiles use (row-major A and B at a padded stride, two k steps).
/// </summary>
[TestFixture]
public sealed class MmaTf32Tests : WarpProductFixture
{
    /// <summary>To nearest at 10 mantissa bits, ties away from zero (cvt.rna.tf32.f32).</summary>
    private static float Tf32Reference(float x) => RoundTo10Bits(x, -126, MidpointRounding.AwayFromZero, Math.ScaleB(1.0, 128));

    private static void RoundKernel(Index1D i, ArrayView<float> x, ArrayView<float> rounded) => rounded[i] = Interop.IntAsFloat(MmaTf32.RoundToTf32(x[i]));

    /// <summary>D (16 × 8) = A (16 × 16, stride 17) · B (16 × 8, stride 9) + C, in two k steps of 8, by one warp.</summary>
    private static void MultiplyKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> d)
    {
        var acc = new MmaAccumulator();
        var (r0, c0) = MmaTf32.AccumulatorEntry(0);
        var (r1, c1) = MmaTf32.AccumulatorEntry(1);
        var (r2, c2) = MmaTf32.AccumulatorEntry(2);
        var (r3, c3) = MmaTf32.AccumulatorEntry(3);
        acc.C0 = c[r0 * 8 + c0]; acc.C1 = c[r1 * 8 + c1]; acc.C2 = c[r2 * 8 + c2]; acc.C3 = c[r3 * 8 + c3];
        for (int k0 = 0; k0 < 16; k0 += 8) MmaTf32.Multiply(ref acc, MmaTf32.LoadA(a, k0, 17), MmaTf32.LoadB(b, k0 * 9, 9));
        d[r0 * 8 + c0] = acc.C0; d[r1 * 8 + c1] = acc.C1; d[r2 * 8 + c2] = acc.C2; d[r3 * 8 + c3] = acc.C3;
    }

    [Test]
    public void RoundingIsToNearestTiesAwayFromZero()
    {
        float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);
        var special = new[]
        {
            F(0x3F80_1000), F(0xBF80_1000), F(0x3F80_0FFF), F(0x3F80_1001), F(0x3F80_3000), F(0x3FFF_F000), F(0x0000_1000), F(0x8000_3000),
            float.MaxValue, -float.MaxValue, F(0x7F7F_DFFF), float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, float.Epsilon,
        };
        var values = special.Concat(new TestData(3).Normal(2000, 100)).Concat(new TestData(4).Normal(500, 1e-38)).ToArray();
        var rounded = Run1D(RoundKernel, values);
        for (int i = 0; i < values.Length; i++)
        {
            float expected = Tf32Reference(values[i]);
            Assert.That(BitConverter.SingleToUInt32Bits(rounded[i]), Is.EqualTo(BitConverter.SingleToUInt32Bits(expected)),
                $"tf32 of {values[i]:R} (0x{BitConverter.SingleToUInt32Bits(values[i]):X8})");
        }
        Assert.That(BitConverter.SingleToUInt32Bits(rounded[0]), Is.EqualTo(0x3F80_2000u), "a tie goes away from zero");
        Assert.That(rounded[8], Is.EqualTo(float.PositiveInfinity), "the largest float rounds past the largest tf32");
    }

    [Test]
    public void ProductMatchesFloat64SumsOfRoundedProducts([Values(1, 2)] int seed)
    {
        var data = new TestData(seed);
        var a = data.Normal(16 * 17);
        var b = data.Normal(16 * 9);
        var c = data.Normal(16 * 8);
        var (worstRounded, worstUnrounded) = ProductErrors(MultiplyKernel, a, b, c, depth: 16, Tf32Reference);
        // 17 fp32 additions of exact products: at most 17 · 2^-24 of the magnitude.
        Assert.That(worstRounded, Is.LessThanOrEqualTo(17 * Math.ScaleB(1.0, -24)), "D against float64 sums of the tf32 products");
        Assert.That(worstUnrounded, Is.GreaterThan(1e-5), "the inputs are rounded to tf32: fp32 products would be closer");
    }

    private float[] Run1D(Action<Index1D, ArrayView<float>, ArrayView<float>> kernel, float[] input)
    {
        var launch = Runtime.Accelerator.LoadAutoGroupedStreamKernel(kernel);
        using var x = Runtime.Accelerator.Allocate1D(input);
        using var y = Runtime.Accelerator.Allocate1D(Numerics.NaNs(input.Length));
        launch(input.Length, x.View, y.View);
        Runtime.Accelerator.Synchronize();
        return y.GetAsArray1D();
    }
}

using Engine.Kernels.Common;
using Engine.Tests.Harness;
using ILGPU;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// The fp16 tensor-core product's emulation on ILGPU's CPU accelerator with 32-lane warps: the fp16 rounding against an
/// independent float64 formula (ties, carries, subnormals, overflow, NaN, the order of a packed pair), and D = A·B + C against
/// float64 sums of the rounded products for the fragment layouts the tiles use (row-major A and B at a padded stride, two k steps).
/// </summary>
[TestFixture]
public sealed class MmaF16Tests : WarpProductFixture
{
    /// <summary>To nearest at 10 mantissa bits, ties to even, with fp16's exponent range (cvt.rn.f16.f32).</summary>
    private static float F16Reference(float x) => RoundTo10Bits(x, -14, MidpointRounding.ToEven, 65520);

    private static float Low(uint packed) => (float)BitConverter.UInt16BitsToHalf((ushort)packed);

    private static float High(uint packed) => (float)BitConverter.UInt16BitsToHalf((ushort)(packed >> 16));

    private static void PackKernel(Index1D i, ArrayView<float> x, ArrayView<float> y, ArrayView<uint> packed) => packed[i] = MmaF16.Pack(x[i], y[i]);

    /// <summary>D (16 × 8) = A (16 × 32, stride 33) · B (32 × 8, stride 9) + C, in two k steps of 16, by one warp.</summary>
    private static void MultiplyKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> d)
    {
        var acc = new MmaAccumulator();
        var (r0, c0) = MmaTf32.AccumulatorEntry(0);
        var (r1, c1) = MmaTf32.AccumulatorEntry(1);
        var (r2, c2) = MmaTf32.AccumulatorEntry(2);
        var (r3, c3) = MmaTf32.AccumulatorEntry(3);
        acc.C0 = c[r0 * 8 + c0]; acc.C1 = c[r1 * 8 + c1]; acc.C2 = c[r2 * 8 + c2]; acc.C3 = c[r3 * 8 + c3];
        for (int k0 = 0; k0 < 32; k0 += 16) MmaF16.Multiply(ref acc, MmaF16.LoadA(a, k0, 33), MmaF16.LoadB(b, k0 * 9, 9));
        d[r0 * 8 + c0] = acc.C0; d[r1 * 8 + c1] = acc.C1; d[r2 * 8 + c2] = acc.C2; d[r3 * 8 + c3] = acc.C3;
    }

    [Test]
    public void RoundingIsToNearestTiesToEvenInEachHalfOfThePair()
    {
        float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);
        var special = new[]
        {
            F(0x3F80_1000), F(0xBF80_1000), F(0x3F80_3000), F(0x3F80_0FFF), F(0x3F80_1001), F(0x3FFF_F000), 65504f, 65519.996f, 65520f, -65520f,
            6.1035156e-5f, 6.1e-5f, 2.9802322e-8f, 8.940697e-8f, -2.9802322e-8f, 2.9e-8f, float.Epsilon, float.MaxValue,
            float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f,
        };
        var x = special.Concat(new TestData(3).Normal(1000, 100)).Concat(new TestData(4).Normal(1000, 1e-5)).ToArray();
        var y = x.Reverse().ToArray();
        var launch = Runtime.Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<uint>>(PackKernel);
        using var dx = Runtime.Accelerator.Allocate1D(x);
        using var dy = Runtime.Accelerator.Allocate1D(y);
        using var dp = Runtime.Accelerator.Allocate1D<uint>(x.Length);
        launch(x.Length, dx.View, dy.View, dp.View);
        Runtime.Accelerator.Synchronize();
        var packed = dp.GetAsArray1D();
        for (int i = 0; i < x.Length; i++)
        {
            foreach (var (value, half, where) in new[] { (x[i], Low(packed[i]), "low"), (y[i], High(packed[i]), "high") })
            {
                float expected = F16Reference(value);
                if (float.IsNaN(expected)) Assert.That(half, Is.NaN, $"fp16 of NaN ({where} half)");
                else Assert.That(BitConverter.SingleToUInt32Bits(half), Is.EqualTo(BitConverter.SingleToUInt32Bits(expected)),
                    $"fp16 of {value:R} (0x{BitConverter.SingleToUInt32Bits(value):X8}) in the {where} half");
            }
        }
        Assert.That(Low(packed[0]), Is.EqualTo(1f), "a tie goes to the even neighbour (down)");
        Assert.That(Low(packed[2]), Is.EqualTo(1.001953125f), "a tie goes to the even neighbour (up)");
        Assert.That(Low(packed[8]), Is.EqualTo(float.PositiveInfinity), "65520 rounds past the largest fp16");
        Assert.That(Low(packed[13]), Is.EqualTo(Math.ScaleB(1f, -23)), "a subnormal tie goes to the even neighbour (up)");
    }

    [Test]
    public void ProductMatchesFloat64SumsOfRoundedProducts([Values(1, 2)] int seed, [Values(1.0, 1e-4)] double scale)
    {
        var data = new TestData(seed);
        var a = data.Normal(16 * 33, scale);
        var b = data.Normal(32 * 9);
        var c = data.Normal(16 * 8, scale);
        var (worstRounded, worstUnrounded) = ProductErrors(MultiplyKernel, a, b, c, depth: 32, F16Reference);
        // 33 fp32 additions of exact products: at most 33 · 2^-24 of the magnitude.
        Assert.That(worstRounded, Is.LessThanOrEqualTo(33 * Math.ScaleB(1.0, -24)), "D against float64 sums of the fp16 products");
        Assert.That(worstUnrounded, Is.GreaterThan(1e-5), "the inputs are rounded to fp16: fp32 products would be closer");
    }
}

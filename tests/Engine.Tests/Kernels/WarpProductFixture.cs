using Engine.Kernels.Common;
using Engine.Tests.Harness;
using ILGPU;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// What the tensor-core primitives' tests share: ILGPU's CPU accelerator with one warp of 32 lanes per group, and the
/// rounding of a value to a narrower format computed in float64 from the value (not its bits), the oracle of each format.
/// </summary>
public abstract class WarpProductFixture
{
    protected GpuRuntime Runtime { get; private set; } = null!;

    [OneTimeSetUp]
    public void CreateRuntime() => Runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: 32, cpuWarpSize: 32);

    [OneTimeTearDown]
    public void DisposeRuntime() => Runtime.Dispose();

    /// <summary>
    /// D (16 × 8) = A (16 × depth, row stride depth + 1) · B (depth × 8, row stride 9) + C by one warp running
    /// <paramref name="kernel"/>; returns D's worst error, relative to each entry's magnitude Σ|a·b| + |c|, against float64 sums of
    /// the products of the rounded operands (<paramref name="round"/>) and of the operands as given.
    /// </summary>
    protected (double Rounded, double Unrounded) ProductErrors(Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> kernel,
        float[] a, float[] b, float[] c, int depth, Func<float, float> round)
    {
        var d = Numerics.NaNs(16 * 8);
        var launch = Runtime.Accelerator.LoadStreamKernel(kernel);
        using var da = Runtime.Accelerator.Allocate1D(a);
        using var db = Runtime.Accelerator.Allocate1D(b);
        using var dc = Runtime.Accelerator.Allocate1D(c);
        using var dd = Runtime.Accelerator.Allocate1D(d);
        launch(new KernelConfig(1, 32), da.View, db.View, dc.View, dd.View);
        Runtime.Accelerator.Synchronize();
        dd.CopyToCPU(d);

        double worstRounded = 0, worstUnrounded = 0;
        for (int i = 0; i < 16; i++)
            for (int n = 0; n < 8; n++)
            {
                double sum = c[i * 8 + n], unrounded = sum, magnitude = Math.Abs(sum);
                for (int k = 0; k < depth; k++)
                {
                    float x = a[i * (depth + 1) + k], y = b[k * 9 + n];
                    sum += (double)round(x) * round(y);
                    unrounded += (double)x * y;
                    magnitude += Math.Abs((double)x * y);
                }
                worstRounded = Math.Max(worstRounded, Math.Abs(d[i * 8 + n] - sum) / magnitude);
                worstUnrounded = Math.Max(worstUnrounded, Math.Abs(d[i * 8 + n] - unrounded) / magnitude);
            }
        return (worstRounded, worstUnrounded);
    }

    /// <summary>
    /// x to nearest at 10 mantissa bits with <paramref name="ties"/>, exponents below <paramref name="minExponent"/> in subnormal
    /// units, and ±∞ once the rounded magnitude reaches <paramref name="overflow"/>.
    /// </summary>
    protected static float RoundTo10Bits(float x, int minExponent, MidpointRounding ties, double overflow)
    {
        if (!float.IsFinite(x) || x == 0) return x;
        int exponent = Math.Max(Math.ILogB((double)x), minExponent);
        double unit = Math.ScaleB(1.0, exponent - 10);
        double rounded = Math.CopySign(Math.Round(Math.Abs(x) / unit, ties) * unit, x);
        return Math.Abs(rounded) >= overflow ? (x > 0 ? float.PositiveInfinity : float.NegativeInfinity) : (float)rounded;
    }
}

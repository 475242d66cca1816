using Engine.Kernels.Common;
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

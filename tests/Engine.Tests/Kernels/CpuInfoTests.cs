using Engine.Kernels.Common;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>What `engine devices`, the bench legends and the device names say the CPU path runs on.</summary>
[TestFixture]
public sealed class CpuInfoTests
{
    [TestCase(true, true, true, "Vector512 (AVX-512)")]
    [TestCase(false, true, true, "Vector256 (no AVX-512: 256-bit register tiles)")]
    // ARM64 or x86 without AVX2: 128-bit SIMD, which was called the scalar fallback.
    [TestCase(false, false, true, "Vector128 (no 256/512-bit SIMD: wider vectors run as 128-bit halves)")]
    [TestCase(false, false, false, "scalar fallback (no SIMD)")]
    public void TheWidestAcceleratedVectorsAreNamed(bool vector512, bool vector256, bool vector128, string description) =>
        Assert.That(CpuInfo.Describe(vector512, vector256, vector128), Is.EqualTo(description));
}

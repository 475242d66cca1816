using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>What the CPU path can use on this machine.</summary>
public static class CpuInfo
{
    public static string SimdDescription =>
        Describe(Vector512.IsHardwareAccelerated, Vector256.IsHardwareAccelerated, Vector128.IsHardwareAccelerated);

    /// <summary>
    /// The widest accelerated vectors named: a machine with only 128-bit ones (ARM64, x86 without AVX2) runs the wider code
    /// as 128-bit halves, which is SIMD, not the scalar fallback.
    /// </summary>
    public static string Describe(bool vector512, bool vector256, bool vector128) =>
        vector512 ? "Vector512 (AVX-512)"
        : vector256 ? "Vector256 (no AVX-512: 256-bit register tiles)"
        : vector128 ? "Vector128 (no 256/512-bit SIMD: wider vectors run as 128-bit halves)"
        : "scalar fallback (no SIMD)";
}

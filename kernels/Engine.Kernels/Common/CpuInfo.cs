using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>What the CPU path can use on this machine.</summary>
public static class CpuInfo
{
    public static string SimdDescription =>
        Vector512.IsHardwareAccelerated ? "Vector512 (AVX-512)"
        : Vector256.IsHardwareAccelerated ? "Vector256 (no AVX-512: 256-bit register tiles)"
        : "scalar fallback (no 256/512-bit SIMD)";
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Common;

/// <summary>
/// 16 × 16 float transposes between strided rows: turning token-major rows [T, H] into channel-major rows
/// 16 channels at a time (and back) with 16 vector loads and 16 vector stores instead of 256 scattered
/// scalar stores. AVX-512: unpack pairs of rows, unpack pairs of 64-bit halves, then two rounds of 128-bit
/// lane shuffles; elsewhere a scalar loop.
/// </summary>
public static unsafe class SimdTranspose
{
    /// <summary>dst[j·dstStride + i] = src[i·srcStride + j] for i, j in [0, 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Transpose16(float* src, long srcStride, float* dst, long dstStride)
    {
        if (!Avx512F.IsSupported)
        {
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 16; j++) dst[j * dstStride + i] = src[i * srcStride + j];
            return;
        }
        // u[4g + k], lane l = column 4l + k of rows 4g .. 4g + 3.
        var u = stackalloc Vector512<float>[16];
        for (int g = 0; g < 4; g++)
        {
            float* r = src + 4 * g * srcStride;
            var r0 = Vector512.Load(r); var r1 = Vector512.Load(r + srcStride);
            var r2 = Vector512.Load(r + 2 * srcStride); var r3 = Vector512.Load(r + 3 * srcStride);
            var t0 = Avx512F.UnpackLow(r0, r1).AsDouble(); var t1 = Avx512F.UnpackHigh(r0, r1).AsDouble();
            var t2 = Avx512F.UnpackLow(r2, r3).AsDouble(); var t3 = Avx512F.UnpackHigh(r2, r3).AsDouble();
            u[4 * g] = Avx512F.UnpackLow(t0, t2).AsSingle();
            u[4 * g + 1] = Avx512F.UnpackHigh(t0, t2).AsSingle();
            u[4 * g + 2] = Avx512F.UnpackLow(t1, t3).AsSingle();
            u[4 * g + 3] = Avx512F.UnpackHigh(t1, t3).AsSingle();
        }
        for (int k = 0; k < 4; k++)
        {
            // Lanes (0, 2) and (1, 3) of row groups 0, 1 and 2, 3, then merged across the groups.
            var a = Avx512F.Shuffle4x128(u[k], u[4 + k], 0x88);
            var b = Avx512F.Shuffle4x128(u[k], u[4 + k], 0xDD);
            var c = Avx512F.Shuffle4x128(u[8 + k], u[12 + k], 0x88);
            var d = Avx512F.Shuffle4x128(u[8 + k], u[12 + k], 0xDD);
            Avx512F.Shuffle4x128(a, c, 0x88).Store(dst + k * dstStride);
            Avx512F.Shuffle4x128(a, c, 0xDD).Store(dst + (8 + k) * dstStride);
            Avx512F.Shuffle4x128(b, d, 0x88).Store(dst + (4 + k) * dstStride);
            Avx512F.Shuffle4x128(b, d, 0xDD).Store(dst + (12 + k) * dstStride);
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// Small dense products for the chunk math: C (+)= A · B (or Aᵀ · B) with row-major A, B [kd × n],
/// C [m × n] and row strides lda, ldb, ldc (in floats). n must be a multiple of 16 (one Vector512);
/// scratch is padded so it always is. The main tile keeps an 8 × 32 block of C in 16 Vector512
/// registers and streams one row of B per step: two vector loads and eight broadcasts feed 16 FMAs.
/// </summary>
public static unsafe class SimdGemm
{
    public const int Lanes = 16;

    /// <summary>C (+)= A · B, A row-major [m × kd] with row stride lda.</summary>
    public static void Multiply(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate)
        => Run(a, lda, 1, b, ldb, c, ldc, m, kd, n, accumulate, causalFrom: -1);

    /// <summary>
    /// C = A · B where row i of A is zero beyond column kd0 + i (a dense block then a lower triangle, as in
    /// [Q | scores] · [S; V]): each 8-row tile stops at the last column its rows use.
    /// </summary>
    public static void MultiplyCausal(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int kd0, int n)
        => Run(a, lda, 1, b, ldb, c, ldc, m, kd0 + m, n, accumulate: false, causalFrom: kd0);

    /// <summary>C (+)= Aᵀ · B, A stored row-major [kd × m] with row stride lda (no transposed copy needed).</summary>
    public static void MultiplyTransposedA(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate)
        => Run(a, 1, lda, b, ldb, c, ldc, m, kd, n, accumulate, causalFrom: -1);

    /// <summary>Element (i, p) of the left operand is a[i·rowStride + p·kStride].</summary>
    /// <remarks>causalFrom >= 0: rows [i, i + 8) contract over causalFrom + min(i + 8, m) columns only.</remarks>
    private static void Run(float* a, nint rowStride, nint kStride, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate,
        int causalFrom)
    {
        if ((n & (Lanes - 1)) != 0) throw new ArgumentException($"n = {n} must be a multiple of {Lanes}", nameof(n));
        if (m <= 0 || n <= 0) return;
        if (kd <= 0)
        {
            if (!accumulate)
                for (int i = 0; i < m; i++) new Span<float>(c + (nint)i * ldc, n).Clear();
            return;
        }
        int j = 0;
        for (; j + 32 <= n; j += 32)
        {
            int i = 0;
            for (; i + 8 <= m; i += 8)
                Tile8x32(a + i * rowStride, rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, ldc, Depth(i + 8), accumulate);
            for (; i < m; i++)
                Tile1x32(a + i * rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, Depth(i + 1), accumulate);
        }
        if (j < n)
        {
            int i = 0;
            for (; i + 8 <= m; i += 8)
                Tile8x16(a + i * rowStride, rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, ldc, Depth(i + 8), accumulate);
            for (; i < m; i++)
                Tile1x16(a + i * rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, Depth(i + 1), accumulate);
        }

        int Depth(int rowsEnd) => causalFrom < 0 ? kd : causalFrom + rowsEnd;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile8x32(float* a, nint rs, nint ks, float* b, nint ldb, float* c, nint ldc, int kd, bool accumulate)
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
        if (accumulate)
        {
            c00 = Vector512.Load(c); c01 = Vector512.Load(c + 16);
            c10 = Vector512.Load(c + ldc); c11 = Vector512.Load(c + ldc + 16);
            c20 = Vector512.Load(c + 2 * ldc); c21 = Vector512.Load(c + 2 * ldc + 16);
            c30 = Vector512.Load(c + 3 * ldc); c31 = Vector512.Load(c + 3 * ldc + 16);
            c40 = Vector512.Load(c + 4 * ldc); c41 = Vector512.Load(c + 4 * ldc + 16);
            c50 = Vector512.Load(c + 5 * ldc); c51 = Vector512.Load(c + 5 * ldc + 16);
            c60 = Vector512.Load(c + 6 * ldc); c61 = Vector512.Load(c + 6 * ldc + 16);
            c70 = Vector512.Load(c + 7 * ldc); c71 = Vector512.Load(c + 7 * ldc + 16);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = Vector512<float>.Zero;
            c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = Vector512<float>.Zero;
        }
        nint r2 = 2 * rs, r3 = 3 * rs, r4 = 4 * rs, r5 = 5 * rs, r6 = 6 * rs, r7 = 7 * rs;
        for (int p = 0; p < kd; p++, a += ks, b += ldb)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var x = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[rs]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[r2]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[r3]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[r4]);
            c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[r5]);
            c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[r6]);
            c60 = Vector512.FusedMultiplyAdd(x, b0, c60); c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[r7]);
            c70 = Vector512.FusedMultiplyAdd(x, b0, c70); c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
        }
        c00.Store(c); c01.Store(c + 16);
        c10.Store(c + ldc); c11.Store(c + ldc + 16);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 16);
        c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 16);
        c40.Store(c + 4 * ldc); c41.Store(c + 4 * ldc + 16);
        c50.Store(c + 5 * ldc); c51.Store(c + 5 * ldc + 16);
        c60.Store(c + 6 * ldc); c61.Store(c + 6 * ldc + 16);
        c70.Store(c + 7 * ldc); c71.Store(c + 7 * ldc + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile8x16(float* a, nint rs, nint ks, float* b, nint ldb, float* c, nint ldc, int kd, bool accumulate)
    {
        Vector512<float> c0, c1, c2, c3, c4, c5, c6, c7;
        if (accumulate)
        {
            c0 = Vector512.Load(c); c1 = Vector512.Load(c + ldc); c2 = Vector512.Load(c + 2 * ldc); c3 = Vector512.Load(c + 3 * ldc);
            c4 = Vector512.Load(c + 4 * ldc); c5 = Vector512.Load(c + 5 * ldc); c6 = Vector512.Load(c + 6 * ldc); c7 = Vector512.Load(c + 7 * ldc);
        }
        else
        {
            c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = Vector512<float>.Zero;
        }
        nint r2 = 2 * rs, r3 = 3 * rs, r4 = 4 * rs, r5 = 5 * rs, r6 = 6 * rs, r7 = 7 * rs;
        for (int p = 0; p < kd; p++, a += ks, b += ldb)
        {
            var b0 = Vector512.Load(b);
            c0 = Vector512.FusedMultiplyAdd(Vector512.Create(a[0]), b0, c0);
            c1 = Vector512.FusedMultiplyAdd(Vector512.Create(a[rs]), b0, c1);
            c2 = Vector512.FusedMultiplyAdd(Vector512.Create(a[r2]), b0, c2);
            c3 = Vector512.FusedMultiplyAdd(Vector512.Create(a[r3]), b0, c3);
            c4 = Vector512.FusedMultiplyAdd(Vector512.Create(a[r4]), b0, c4);
            c5 = Vector512.FusedMultiplyAdd(Vector512.Create(a[r5]), b0, c5);
            c6 = Vector512.FusedMultiplyAdd(Vector512.Create(a[r6]), b0, c6);
            c7 = Vector512.FusedMultiplyAdd(Vector512.Create(a[r7]), b0, c7);
        }
        c0.Store(c); c1.Store(c + ldc); c2.Store(c + 2 * ldc); c3.Store(c + 3 * ldc);
        c4.Store(c + 4 * ldc); c5.Store(c + 5 * ldc); c6.Store(c + 6 * ldc); c7.Store(c + 7 * ldc);
    }

    private static void Tile1x32(float* a, nint ks, float* b, nint ldb, float* c, int kd, bool accumulate)
    {
        var c0 = accumulate ? Vector512.Load(c) : Vector512<float>.Zero;
        var c1 = accumulate ? Vector512.Load(c + 16) : Vector512<float>.Zero;
        for (int p = 0; p < kd; p++)
        {
            var x = Vector512.Create(a[p * ks]);
            c0 = Vector512.FusedMultiplyAdd(x, Vector512.Load(b), c0);
            c1 = Vector512.FusedMultiplyAdd(x, Vector512.Load(b + 16), c1);
            b += ldb;
        }
        c0.Store(c); c1.Store(c + 16);
    }

    private static void Tile1x16(float* a, nint ks, float* b, nint ldb, float* c, int kd, bool accumulate)
    {
        var c0 = accumulate ? Vector512.Load(c) : Vector512<float>.Zero;
        for (int p = 0; p < kd; p++)
        {
            c0 = Vector512.FusedMultiplyAdd(Vector512.Create(a[p * ks]), Vector512.Load(b), c0);
            b += ldb;
        }
        c0.Store(c);
    }
}

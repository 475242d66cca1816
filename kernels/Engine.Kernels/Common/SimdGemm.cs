using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// Small dense products for the chunk math: C (+)= A · B (or Aᵀ · B) with row-major A, B [kd × n],
/// C [m × n] and row strides lda, ldb, ldc (in floats). n must be a multiple of 16 (one Vector512);
/// scratch is padded so it always is. Two register tilings, one per SIMD width (<see cref="SimdWidth"/>):
/// with AVX-512 an 8 × 32 block of C in 16 Vector512 registers (two vector loads and eight broadcasts feed
/// 16 FMAs); with 256-bit vectors (16 registers) a 6 × 16 block in 12 Vector256 registers (two loads and six
/// broadcasts feed 12 FMAs), rows left over in 4-row and single-row tiles. Accumulating, a block sums its product on its own
/// and adds C once: no term is added straight onto a large C (a state grown over a long sequence), one rounding at C's size per
/// call instead of one per term.
/// </summary>
public static unsafe class SimdGemm
{
    public const int Lanes = 16;

    /// <summary>C (+)= A · B, A row-major [m × kd] with row stride lda.</summary>
    public static void Multiply(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate,
        SimdWidth width = SimdWidth.Native)
        => Run(a, lda, 1, b, ldb, c, ldc, m, kd, n, accumulate, causalFrom: -1, width);

    /// <summary>
    /// C (+)= A · B where row i of A ends at column kd0 + i (a dense block then a lower triangle, as in
    /// [Q | scores] · [S; V]): row i reads columns 0..kd0 + i of A and rows 0..kd0 + i of B, nothing beyond, so a
    /// row of C never depends on later rows of B (a later token's NaN included) and A need not be zero beyond its
    /// end. A row tile contracts over its first row's columns together, then column by column over the triangle
    /// right of them, each column with the rows that reach it; every sum runs in the order of the dense product's.
    /// </summary>
    public static void MultiplyCausal(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int kd0, int n, bool accumulate,
        SimdWidth width = SimdWidth.Native)
        => Run(a, lda, 1, b, ldb, c, ldc, m, kd0 + m, n, accumulate, causalFrom: kd0, width);

    /// <summary>C (+)= Aᵀ · B, A stored row-major [kd × m] with row stride lda (no transposed copy needed).</summary>
    public static void MultiplyTransposedA(float* a, int lda, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate,
        SimdWidth width = SimdWidth.Native)
        => Run(a, 1, lda, b, ldb, c, ldc, m, kd, n, accumulate, causalFrom: -1, width);

    /// <summary>Element (i, p) of the left operand is a[i·rowStride + p·kStride].</summary>
    /// <remarks>causalFrom >= 0: row i contracts over causalFrom + i + 1 columns only.</remarks>
    private static void Run(float* a, nint rowStride, nint kStride, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate,
        int causalFrom, SimdWidth width)
    {
        if ((n & (Lanes - 1)) != 0) throw new ArgumentException($"n = {n} must be a multiple of {Lanes}", nameof(n));
        if (m <= 0 || n <= 0) return;
        if (kd <= 0)
        {
            if (!accumulate)
                for (int i = 0; i < m; i++) new Span<float>(c + (nint)i * ldc, n).Clear();
            return;
        }
        if (width.Resolve() == SimdWidth.W512) Run512(a, rowStride, kStride, b, ldb, c, ldc, m, kd, n, accumulate, causalFrom);
        else Run256(a, rowStride, kStride, b, ldb, c, ldc, m, kd, n, accumulate, causalFrom);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run512(float* a, nint rowStride, nint kStride, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate,
        int causalFrom)
    {
        bool causal = causalFrom >= 0;
        int j = 0;
        for (; j + 32 <= n; j += 32)
        {
            int i = 0;
            for (; i + 8 <= m; i += 8)
                Tile8x32(a + i * rowStride, rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, ldc, Depth(i), accumulate, causal);
            for (; i < m; i++)
                Tile1x32(a + i * rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, Depth(i), accumulate);
        }
        if (j < n)
        {
            int i = 0;
            for (; i + 8 <= m; i += 8)
                Tile8x16(a + i * rowStride, rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, ldc, Depth(i), accumulate, causal);
            for (; i < m; i++)
                Tile1x16(a + i * rowStride, kStride, b + j, ldb, c + (nint)i * ldc + j, Depth(i), accumulate);
        }

        int Depth(int first) => causal ? causalFrom + first + 1 : kd;
    }

    /// <summary>
    /// 6-row tiles, then the rows left over: one or two 4-row tiles when m mod 6 is 4 or 2 (one 6-row tile fewer
    /// in the latter), an odd row alone; single-row tiles run only for odd m and for m = 2.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run256(float* a, nint rowStride, nint kStride, float* b, int ldb, float* c, int ldc, int m, int kd, int n, bool accumulate,
        int causalFrom)
    {
        int even = m & ~1, rem = even % 6;
        int sixes = rem switch { 0 => even / 6, 4 => (even - 4) / 6, _ => even >= 8 ? (even - 8) / 6 : 0 };
        int fours = rem switch { 0 => 0, 4 => 1, _ => even >= 8 ? 2 : 0 };
        int end6 = 6 * sixes, end4 = end6 + 4 * fours;
        bool causal = causalFrom >= 0;
        for (int j = 0; j < n; j += 16)
        {
            float* bj = b + j;
            for (int i = 0; i < end6; i += 6)
                Tile6x16(a + i * rowStride, rowStride, kStride, bj, ldb, c + (nint)i * ldc + j, ldc, Depth(i), accumulate, causal);
            for (int i = end6; i < end4; i += 4)
                Tile4x16(a + i * rowStride, rowStride, kStride, bj, ldb, c + (nint)i * ldc + j, ldc, Depth(i), accumulate, causal);
            for (int i = end4; i < m; i++)
                Tile1x16x256(a + i * rowStride, kStride, bj, ldb, c + (nint)i * ldc + j, Depth(i), accumulate);
        }

        int Depth(int first) => causal ? causalFrom + first + 1 : kd;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile8x32(float* a, nint rs, nint ks, float* b, nint ldb, float* c, nint ldc, int kd, bool accumulate, bool causal)
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = Vector512<float>.Zero;
        c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = Vector512<float>.Zero;
        nint r2 = 2 * rs, r3 = 3 * rs, r4 = 4 * rs, r5 = 5 * rs, r6 = 6 * rs, r7 = 7 * rs;
        for (int p = 0; p < kd; p++, a += ks, b += ldb)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var x = Vector512.Create(a[0]);
            c00 = Vector512.MultiplyAddEstimate(x, b0, c00); c01 = Vector512.MultiplyAddEstimate(x, b1, c01);
            x = Vector512.Create(a[rs]);
            c10 = Vector512.MultiplyAddEstimate(x, b0, c10); c11 = Vector512.MultiplyAddEstimate(x, b1, c11);
            x = Vector512.Create(a[r2]);
            c20 = Vector512.MultiplyAddEstimate(x, b0, c20); c21 = Vector512.MultiplyAddEstimate(x, b1, c21);
            x = Vector512.Create(a[r3]);
            c30 = Vector512.MultiplyAddEstimate(x, b0, c30); c31 = Vector512.MultiplyAddEstimate(x, b1, c31);
            x = Vector512.Create(a[r4]);
            c40 = Vector512.MultiplyAddEstimate(x, b0, c40); c41 = Vector512.MultiplyAddEstimate(x, b1, c41);
            x = Vector512.Create(a[r5]);
            c50 = Vector512.MultiplyAddEstimate(x, b0, c50); c51 = Vector512.MultiplyAddEstimate(x, b1, c51);
            x = Vector512.Create(a[r6]);
            c60 = Vector512.MultiplyAddEstimate(x, b0, c60); c61 = Vector512.MultiplyAddEstimate(x, b1, c61);
            x = Vector512.Create(a[r7]);
            c70 = Vector512.MultiplyAddEstimate(x, b0, c70); c71 = Vector512.MultiplyAddEstimate(x, b1, c71);
        }
        // Causal: the triangle right of row 0's columns; column d − 1 of it goes to rows d and below.
        for (int d = 1; causal && d < 8; d++, a += ks, b += ldb)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            Vector512<float> x;
            switch (d)
            {
                case 1: x = Vector512.Create(a[rs]);
                    c10 = Vector512.MultiplyAddEstimate(x, b0, c10); c11 = Vector512.MultiplyAddEstimate(x, b1, c11); goto case 2;
                case 2: x = Vector512.Create(a[r2]);
                    c20 = Vector512.MultiplyAddEstimate(x, b0, c20); c21 = Vector512.MultiplyAddEstimate(x, b1, c21); goto case 3;
                case 3: x = Vector512.Create(a[r3]);
                    c30 = Vector512.MultiplyAddEstimate(x, b0, c30); c31 = Vector512.MultiplyAddEstimate(x, b1, c31); goto case 4;
                case 4: x = Vector512.Create(a[r4]);
                    c40 = Vector512.MultiplyAddEstimate(x, b0, c40); c41 = Vector512.MultiplyAddEstimate(x, b1, c41); goto case 5;
                case 5: x = Vector512.Create(a[r5]);
                    c50 = Vector512.MultiplyAddEstimate(x, b0, c50); c51 = Vector512.MultiplyAddEstimate(x, b1, c51); goto case 6;
                case 6: x = Vector512.Create(a[r6]);
                    c60 = Vector512.MultiplyAddEstimate(x, b0, c60); c61 = Vector512.MultiplyAddEstimate(x, b1, c61); goto case 7;
                case 7: x = Vector512.Create(a[r7]);
                    c70 = Vector512.MultiplyAddEstimate(x, b0, c70); c71 = Vector512.MultiplyAddEstimate(x, b1, c71); break;
            }
        }
        if (accumulate)
        {
            c00 += Vector512.Load(c); c01 += Vector512.Load(c + 16);
            c10 += Vector512.Load(c + ldc); c11 += Vector512.Load(c + ldc + 16);
            c20 += Vector512.Load(c + 2 * ldc); c21 += Vector512.Load(c + 2 * ldc + 16);
            c30 += Vector512.Load(c + 3 * ldc); c31 += Vector512.Load(c + 3 * ldc + 16);
            c40 += Vector512.Load(c + 4 * ldc); c41 += Vector512.Load(c + 4 * ldc + 16);
            c50 += Vector512.Load(c + 5 * ldc); c51 += Vector512.Load(c + 5 * ldc + 16);
            c60 += Vector512.Load(c + 6 * ldc); c61 += Vector512.Load(c + 6 * ldc + 16);
            c70 += Vector512.Load(c + 7 * ldc); c71 += Vector512.Load(c + 7 * ldc + 16);
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
    private static void Tile8x16(float* a, nint rs, nint ks, float* b, nint ldb, float* c, nint ldc, int kd, bool accumulate, bool causal)
    {
        Vector512<float> c0, c1, c2, c3, c4, c5, c6, c7;
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = Vector512<float>.Zero;
        nint r2 = 2 * rs, r3 = 3 * rs, r4 = 4 * rs, r5 = 5 * rs, r6 = 6 * rs, r7 = 7 * rs;
        for (int p = 0; p < kd; p++, a += ks, b += ldb)
        {
            var b0 = Vector512.Load(b);
            c0 = Vector512.MultiplyAddEstimate(Vector512.Create(a[0]), b0, c0);
            c1 = Vector512.MultiplyAddEstimate(Vector512.Create(a[rs]), b0, c1);
            c2 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r2]), b0, c2);
            c3 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r3]), b0, c3);
            c4 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r4]), b0, c4);
            c5 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r5]), b0, c5);
            c6 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r6]), b0, c6);
            c7 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r7]), b0, c7);
        }
        // Causal: the triangle right of row 0's columns; column d − 1 of it goes to rows d and below.
        for (int d = 1; causal && d < 8; d++, a += ks, b += ldb)
        {
            var b0 = Vector512.Load(b);
            switch (d)
            {
                case 1: c1 = Vector512.MultiplyAddEstimate(Vector512.Create(a[rs]), b0, c1); goto case 2;
                case 2: c2 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r2]), b0, c2); goto case 3;
                case 3: c3 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r3]), b0, c3); goto case 4;
                case 4: c4 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r4]), b0, c4); goto case 5;
                case 5: c5 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r5]), b0, c5); goto case 6;
                case 6: c6 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r6]), b0, c6); goto case 7;
                case 7: c7 = Vector512.MultiplyAddEstimate(Vector512.Create(a[r7]), b0, c7); break;
            }
        }
        if (accumulate)
        {
            c0 += Vector512.Load(c); c1 += Vector512.Load(c + ldc); c2 += Vector512.Load(c + 2 * ldc); c3 += Vector512.Load(c + 3 * ldc);
            c4 += Vector512.Load(c + 4 * ldc); c5 += Vector512.Load(c + 5 * ldc); c6 += Vector512.Load(c + 6 * ldc); c7 += Vector512.Load(c + 7 * ldc);
        }
        c0.Store(c); c1.Store(c + ldc); c2.Store(c + 2 * ldc); c3.Store(c + 3 * ldc);
        c4.Store(c + 4 * ldc); c5.Store(c + 5 * ldc); c6.Store(c + 6 * ldc); c7.Store(c + 7 * ldc);
    }

    private static void Tile1x32(float* a, nint ks, float* b, nint ldb, float* c, int kd, bool accumulate)
    {
        var c0 = Vector512<float>.Zero;
        var c1 = Vector512<float>.Zero;
        for (int p = 0; p < kd; p++)
        {
            var x = Vector512.Create(a[p * ks]);
            c0 = Vector512.MultiplyAddEstimate(x, Vector512.Load(b), c0);
            c1 = Vector512.MultiplyAddEstimate(x, Vector512.Load(b + 16), c1);
            b += ldb;
        }
        if (accumulate)
        {
            c0 += Vector512.Load(c);
            c1 += Vector512.Load(c + 16);
        }
        c0.Store(c); c1.Store(c + 16);
    }

    private static void Tile1x16(float* a, nint ks, float* b, nint ldb, float* c, int kd, bool accumulate)
    {
        var c0 = Vector512<float>.Zero;
        for (int p = 0; p < kd; p++)
        {
            c0 = Vector512.MultiplyAddEstimate(Vector512.Create(a[p * ks]), Vector512.Load(b), c0);
            b += ldb;
        }
        if (accumulate)
        {
            c0 += Vector512.Load(c);
        }
        c0.Store(c);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile6x16(float* a, nint rs, nint ks, float* b, nint ldb, float* c, nint ldc, int kd, bool accumulate, bool causal)
    {
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
        c00 = c01 = c10 = c11 = c20 = c21 = Vector256<float>.Zero;
        c30 = c31 = c40 = c41 = c50 = c51 = Vector256<float>.Zero;
        nint r2 = 2 * rs, r3 = 3 * rs, r4 = 4 * rs, r5 = 5 * rs;
        for (int p = 0; p < kd; p++, a += ks, b += ldb)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var x = Vector256.Create(a[0]);
            c00 = Vector256.MultiplyAddEstimate(x, b0, c00); c01 = Vector256.MultiplyAddEstimate(x, b1, c01);
            x = Vector256.Create(a[rs]);
            c10 = Vector256.MultiplyAddEstimate(x, b0, c10); c11 = Vector256.MultiplyAddEstimate(x, b1, c11);
            x = Vector256.Create(a[r2]);
            c20 = Vector256.MultiplyAddEstimate(x, b0, c20); c21 = Vector256.MultiplyAddEstimate(x, b1, c21);
            x = Vector256.Create(a[r3]);
            c30 = Vector256.MultiplyAddEstimate(x, b0, c30); c31 = Vector256.MultiplyAddEstimate(x, b1, c31);
            x = Vector256.Create(a[r4]);
            c40 = Vector256.MultiplyAddEstimate(x, b0, c40); c41 = Vector256.MultiplyAddEstimate(x, b1, c41);
            x = Vector256.Create(a[r5]);
            c50 = Vector256.MultiplyAddEstimate(x, b0, c50); c51 = Vector256.MultiplyAddEstimate(x, b1, c51);
        }
        // Causal: the triangle right of row 0's columns; column d − 1 of it goes to rows d and below.
        for (int d = 1; causal && d < 6; d++, a += ks, b += ldb)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            Vector256<float> x;
            switch (d)
            {
                case 1: x = Vector256.Create(a[rs]);
                    c10 = Vector256.MultiplyAddEstimate(x, b0, c10); c11 = Vector256.MultiplyAddEstimate(x, b1, c11); goto case 2;
                case 2: x = Vector256.Create(a[r2]);
                    c20 = Vector256.MultiplyAddEstimate(x, b0, c20); c21 = Vector256.MultiplyAddEstimate(x, b1, c21); goto case 3;
                case 3: x = Vector256.Create(a[r3]);
                    c30 = Vector256.MultiplyAddEstimate(x, b0, c30); c31 = Vector256.MultiplyAddEstimate(x, b1, c31); goto case 4;
                case 4: x = Vector256.Create(a[r4]);
                    c40 = Vector256.MultiplyAddEstimate(x, b0, c40); c41 = Vector256.MultiplyAddEstimate(x, b1, c41); goto case 5;
                case 5: x = Vector256.Create(a[r5]);
                    c50 = Vector256.MultiplyAddEstimate(x, b0, c50); c51 = Vector256.MultiplyAddEstimate(x, b1, c51); break;
            }
        }
        if (accumulate)
        {
            c00 += Vector256.Load(c); c01 += Vector256.Load(c + 8);
            c10 += Vector256.Load(c + ldc); c11 += Vector256.Load(c + ldc + 8);
            c20 += Vector256.Load(c + 2 * ldc); c21 += Vector256.Load(c + 2 * ldc + 8);
            c30 += Vector256.Load(c + 3 * ldc); c31 += Vector256.Load(c + 3 * ldc + 8);
            c40 += Vector256.Load(c + 4 * ldc); c41 += Vector256.Load(c + 4 * ldc + 8);
            c50 += Vector256.Load(c + 5 * ldc); c51 += Vector256.Load(c + 5 * ldc + 8);
        }
        c00.Store(c); c01.Store(c + 8);
        c10.Store(c + ldc); c11.Store(c + ldc + 8);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 8);
        c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 8);
        c40.Store(c + 4 * ldc); c41.Store(c + 4 * ldc + 8);
        c50.Store(c + 5 * ldc); c51.Store(c + 5 * ldc + 8);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x16(float* a, nint rs, nint ks, float* b, nint ldb, float* c, nint ldc, int kd, bool accumulate, bool causal)
    {
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31;
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = Vector256<float>.Zero;
        nint r2 = 2 * rs, r3 = 3 * rs;
        for (int p = 0; p < kd; p++, a += ks, b += ldb)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var x = Vector256.Create(a[0]);
            c00 = Vector256.MultiplyAddEstimate(x, b0, c00); c01 = Vector256.MultiplyAddEstimate(x, b1, c01);
            x = Vector256.Create(a[rs]);
            c10 = Vector256.MultiplyAddEstimate(x, b0, c10); c11 = Vector256.MultiplyAddEstimate(x, b1, c11);
            x = Vector256.Create(a[r2]);
            c20 = Vector256.MultiplyAddEstimate(x, b0, c20); c21 = Vector256.MultiplyAddEstimate(x, b1, c21);
            x = Vector256.Create(a[r3]);
            c30 = Vector256.MultiplyAddEstimate(x, b0, c30); c31 = Vector256.MultiplyAddEstimate(x, b1, c31);
        }
        // Causal: the triangle right of row 0's columns; column d − 1 of it goes to rows d and below.
        for (int d = 1; causal && d < 4; d++, a += ks, b += ldb)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            Vector256<float> x;
            switch (d)
            {
                case 1: x = Vector256.Create(a[rs]);
                    c10 = Vector256.MultiplyAddEstimate(x, b0, c10); c11 = Vector256.MultiplyAddEstimate(x, b1, c11); goto case 2;
                case 2: x = Vector256.Create(a[r2]);
                    c20 = Vector256.MultiplyAddEstimate(x, b0, c20); c21 = Vector256.MultiplyAddEstimate(x, b1, c21); goto case 3;
                case 3: x = Vector256.Create(a[r3]);
                    c30 = Vector256.MultiplyAddEstimate(x, b0, c30); c31 = Vector256.MultiplyAddEstimate(x, b1, c31); break;
            }
        }
        if (accumulate)
        {
            c00 += Vector256.Load(c); c01 += Vector256.Load(c + 8);
            c10 += Vector256.Load(c + ldc); c11 += Vector256.Load(c + ldc + 8);
            c20 += Vector256.Load(c + 2 * ldc); c21 += Vector256.Load(c + 2 * ldc + 8);
            c30 += Vector256.Load(c + 3 * ldc); c31 += Vector256.Load(c + 3 * ldc + 8);
        }
        c00.Store(c); c01.Store(c + 8);
        c10.Store(c + ldc); c11.Store(c + ldc + 8);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 8);
        c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 8);
    }

    private static void Tile1x16x256(float* a, nint ks, float* b, nint ldb, float* c, int kd, bool accumulate)
    {
        var c0 = Vector256<float>.Zero;
        var c1 = Vector256<float>.Zero;
        for (int p = 0; p < kd; p++)
        {
            var x = Vector256.Create(a[p * ks]);
            c0 = Vector256.MultiplyAddEstimate(x, Vector256.Load(b), c0);
            c1 = Vector256.MultiplyAddEstimate(x, Vector256.Load(b + 8), c1);
            b += ldb;
        }
        if (accumulate)
        {
            c0 += Vector256.Load(c);
            c1 += Vector256.Load(c + 8);
        }
        c0.Store(c); c1.Store(c + 8);
    }
}

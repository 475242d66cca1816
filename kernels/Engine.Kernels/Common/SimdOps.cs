using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Common;

/// <summary>Row helpers for the SIMD chunk math. Rows are padded to whole Vector512s.</summary>
public static unsafe class SimdOps
{
    /// <summary>dst[0..padded) = src[0..count) followed by zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CopyPadded(float* dst, float* src, int count, int padded)
    {
        Buffer.MemoryCopy(src, dst, (long)padded * sizeof(float), (long)count * sizeof(float));
        for (int i = count; i < padded; i++) dst[i] = 0f;
    }

    /// <summary>A dense [rows × cols] matrix into a zero-padded [rowsPadded × colsPadded] one (e.g. a state into scratch).</summary>
    public static void CopyToPadded(float* dst, int rowsPadded, int colsPadded, float* src, int rows, int cols)
    {
        for (int r = 0; r < rowsPadded; r++)
        {
            if (r < rows) CopyPadded(dst + (long)r * colsPadded, src + (long)r * cols, cols, colsPadded);
            else Fill(dst + (long)r * colsPadded, 0f, colsPadded);
        }
    }

    /// <summary>The first cols floats of rows rows of src (row stride ldSrc) into dst (row stride ldDst): padded rows back where they belong.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void CopyFromPadded(float* dst, long ldDst, float* src, int ldSrc, int rows, int cols)
    {
        long bytes = (long)cols * sizeof(float);
        for (int r = 0; r < rows; r++) Buffer.MemoryCopy(src + (long)r * ldSrc, dst + r * ldDst, bytes, bytes);
    }

    /// <summary>
    /// The transpose of a dense [rows × cols] matrix into a zero-padded [colsPadded × rowsPadded] one (a value-major
    /// state [V, K] into a key-major scratch slot): 16 × 16 blocks in registers, the edges element by element.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TransposeToPadded(float* dst, int colsPadded, int rowsPadded, float* src, int rows, int cols)
    {
        int r16 = rows & ~15, c16 = cols & ~15;
        if (r16 > 0 && c16 > 0) Transpose(src, cols, dst, rowsPadded, r16, c16);
        for (int c = 0; c < colsPadded; c++)
        {
            float* d = dst + (long)c * rowsPadded;
            for (int r = c < c16 ? r16 : 0; r < rowsPadded; r++) d[r] = c < cols && r < rows ? src[(long)r * cols + c] : 0f;
        }
    }

    /// <summary>
    /// The transpose of the first [rows × cols] of src (row stride ldSrc) into a dense [cols × rows] matrix: a key-major
    /// scratch slot back into a value-major state [V, K].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TransposeFromPadded(float* dst, float* src, int ldSrc, int rows, int cols)
    {
        int r16 = rows & ~15, c16 = cols & ~15;
        if (r16 > 0 && c16 > 0) Transpose(src, ldSrc, dst, rows, r16, c16);
        for (int c = 0; c < cols; c++)
        {
            float* d = dst + (long)c * rows;
            for (int r = c < c16 ? r16 : 0; r < rows; r++) d[r] = src[(long)r * ldSrc + c];
        }
    }

    /// <summary>dst[0..padded) = scale · src[0..count) followed by zeros.</summary>
    public static void CopyScaledPadded(float* dst, float* src, float scale, int count, int padded)
    {
        int i = 0;
        var s = Vector512.Create(scale);
        for (; i + 16 <= count; i += 16) (Vector512.Load(src + i) * s).Store(dst + i);
        for (; i < count; i++) dst[i] = scale * src[i];
        for (; i < padded; i++) dst[i] = 0f;
    }

    /// <summary>dst[0..padded) = scale · src / sqrt(‖src‖² + epsilon) followed by zeros.</summary>
    public static void CopyNormalizedPadded(float* dst, float* src, float scale, float epsilon, int count, int padded)
    {
        CopyPadded(dst, src, count, padded);
        float sumOfSquares = Dot(dst, dst, padded);
        // The kernels' hot path: one pass from src; a row whose sum overflowed goes the careful way.
        if (float.IsFinite(sumOfSquares)) CopyScaledPadded(dst, src, scale / MathF.Sqrt(sumOfSquares + epsilon), count, padded);
        else Normalize(new Span<float>(dst, count), scale, epsilon);
    }

    /// <summary>
    /// row = scale · row / sqrt(‖row‖² + epsilon). Where ‖row‖² overflows fp32 (an element past about 1.8e19) the row is
    /// divided by its largest magnitude first, so it is normalized rather than zeroed.
    /// </summary>
    public static void Normalize(Span<float> row, float scale, float epsilon)
    {
        float sumOfSquares = TensorPrimitives.SumOfSquares<float>(row);
        if (!float.IsFinite(sumOfSquares))
        {
            float largest = MathF.Abs(TensorPrimitives.MaxMagnitude<float>(row));
            TensorPrimitives.Divide(row, largest, row);
            sumOfSquares = TensorPrimitives.SumOfSquares<float>(row);
            epsilon = epsilon / largest / largest;
        }
        TensorPrimitives.Multiply(row, scale / MathF.Sqrt(sumOfSquares + epsilon), row);
    }

    public static void Fill(float* dst, float value, int count)
    {
        new Span<float>(dst, count).Fill(value);
    }

    /// <summary>Horizontal dot product of two padded rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* a, float* b, int padded)
    {
        var acc = Vector512<float>.Zero;
        for (int i = 0; i < padded; i += 16) acc = Vector512.MultiplyAddEstimate(Vector512.Load(a + i), Vector512.Load(b + i), acc);
        return Vector512.Sum(acc);
    }

    /// <summary>dst[0..padded) = a[0..padded) * b[0..padded); dst may be a or b.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Multiply(float* dst, float* a, float* b, int padded)
    {
        for (int i = 0; i < padded; i += 16) (Vector512.Load(a + i) * Vector512.Load(b + i)).Store(dst + i);
    }

    /// <summary>row[0..padded) *= factor.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaleInPlace(float* row, float factor, int padded)
    {
        var f = Vector512.Create(factor);
        for (int i = 0; i < padded; i += 16) (Vector512.Load(row + i) * f).Store(row + i);
    }

    /// <summary>row[0..padded) += near · row + far · row: decayed by 1 + near + far (<see cref="SimdMath.DecayParts"/>) without rounding that factor to fp32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void DecayInPlace(float* row, float near, float far, int padded)
    {
        Vector512<float> m = Vector512.Create(near), f = Vector512.Create(far);
        for (int i = 0; i < padded; i += 16)
        {
            var x = Vector512.Load(row + i);
            Vector512.MultiplyAddEstimate(f, x, Vector512.MultiplyAddEstimate(m, x, x)).Store(row + i);
        }
    }

    /// <summary>dst[c·ldDst + r] = src[r·ldSrc + c] for a [rows × cols] block, both multiples of 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Transpose(float* src, int ldSrc, float* dst, int ldDst, int rows, int cols)
    {
        for (int r = 0; r < rows; r += 16)
            for (int c = 0; c < cols; c += 16)
            {
                float* s = src + (nint)r * ldSrc + c, d = dst + (nint)c * ldDst + r;
                if (Avx512F.IsSupported) Transpose16(s, ldSrc, d, ldDst);
                else if (Avx.IsSupported)
                {
                    Transpose8(s, ldSrc, d, ldDst);
                    Transpose8(s + 8, ldSrc, d + 8 * (nint)ldDst, ldDst);
                    Transpose8(s + 8 * (nint)ldSrc, ldSrc, d + 8, ldDst);
                    Transpose8(s + 8 * (nint)ldSrc + 8, ldSrc, d + 8 * (nint)ldDst + 8, ldDst);
                }
                else
                    for (int i = 0; i < 16; i++)
                        for (int j = 0; j < 16; j++) d[(nint)j * ldDst + i] = s[(nint)i * ldSrc + j];
            }
    }

    /// <summary>One 8 × 8 block in registers (AVX): unpack pairs, shuffle quads, then swap 128-bit lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(float* s, nint ls, float* d, nint ld)
    {
        var r0 = Vector256.Load(s); var r1 = Vector256.Load(s + ls); var r2 = Vector256.Load(s + 2 * ls); var r3 = Vector256.Load(s + 3 * ls);
        var r4 = Vector256.Load(s + 4 * ls); var r5 = Vector256.Load(s + 5 * ls); var r6 = Vector256.Load(s + 6 * ls); var r7 = Vector256.Load(s + 7 * ls);

        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);

        r0 = Avx.Shuffle(t0, t2, 0x44); r1 = Avx.Shuffle(t0, t2, 0xee);
        r2 = Avx.Shuffle(t1, t3, 0x44); r3 = Avx.Shuffle(t1, t3, 0xee);
        r4 = Avx.Shuffle(t4, t6, 0x44); r5 = Avx.Shuffle(t4, t6, 0xee);
        r6 = Avx.Shuffle(t5, t7, 0x44); r7 = Avx.Shuffle(t5, t7, 0xee);

        Avx.Permute2x128(r0, r4, 0x20).Store(d); Avx.Permute2x128(r1, r5, 0x20).Store(d + ld);
        Avx.Permute2x128(r2, r6, 0x20).Store(d + 2 * ld); Avx.Permute2x128(r3, r7, 0x20).Store(d + 3 * ld);
        Avx.Permute2x128(r0, r4, 0x31).Store(d + 4 * ld); Avx.Permute2x128(r1, r5, 0x31).Store(d + 5 * ld);
        Avx.Permute2x128(r2, r6, 0x31).Store(d + 6 * ld); Avx.Permute2x128(r3, r7, 0x31).Store(d + 7 * ld);
    }

    /// <summary>One 16 × 16 block in registers: unpack pairs, unpack quads, then swap 128-bit lanes twice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose16(float* s, nint ls, float* d, nint ld)
    {
        var r0 = Vector512.Load(s); var r1 = Vector512.Load(s + ls); var r2 = Vector512.Load(s + 2 * ls); var r3 = Vector512.Load(s + 3 * ls);
        var r4 = Vector512.Load(s + 4 * ls); var r5 = Vector512.Load(s + 5 * ls); var r6 = Vector512.Load(s + 6 * ls); var r7 = Vector512.Load(s + 7 * ls);
        var r8 = Vector512.Load(s + 8 * ls); var r9 = Vector512.Load(s + 9 * ls); var r10 = Vector512.Load(s + 10 * ls); var r11 = Vector512.Load(s + 11 * ls);
        var r12 = Vector512.Load(s + 12 * ls); var r13 = Vector512.Load(s + 13 * ls); var r14 = Vector512.Load(s + 14 * ls); var r15 = Vector512.Load(s + 15 * ls);

        var t0 = Avx512F.UnpackLow(r0, r1); var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3); var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5); var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7); var t7 = Avx512F.UnpackHigh(r6, r7);
        var t8 = Avx512F.UnpackLow(r8, r9); var t9 = Avx512F.UnpackHigh(r8, r9);
        var t10 = Avx512F.UnpackLow(r10, r11); var t11 = Avx512F.UnpackHigh(r10, r11);
        var t12 = Avx512F.UnpackLow(r12, r13); var t13 = Avx512F.UnpackHigh(r12, r13);
        var t14 = Avx512F.UnpackLow(r14, r15); var t15 = Avx512F.UnpackHigh(r14, r15);

        r0 = Lo(t0, t2); r1 = Hi(t0, t2); r2 = Lo(t1, t3); r3 = Hi(t1, t3);
        r4 = Lo(t4, t6); r5 = Hi(t4, t6); r6 = Lo(t5, t7); r7 = Hi(t5, t7);
        r8 = Lo(t8, t10); r9 = Hi(t8, t10); r10 = Lo(t9, t11); r11 = Hi(t9, t11);
        r12 = Lo(t12, t14); r13 = Hi(t12, t14); r14 = Lo(t13, t15); r15 = Hi(t13, t15);

        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88); t1 = Avx512F.Shuffle4x128(r1, r5, 0x88);
        t2 = Avx512F.Shuffle4x128(r2, r6, 0x88); t3 = Avx512F.Shuffle4x128(r3, r7, 0x88);
        t4 = Avx512F.Shuffle4x128(r0, r4, 0xdd); t5 = Avx512F.Shuffle4x128(r1, r5, 0xdd);
        t6 = Avx512F.Shuffle4x128(r2, r6, 0xdd); t7 = Avx512F.Shuffle4x128(r3, r7, 0xdd);
        t8 = Avx512F.Shuffle4x128(r8, r12, 0x88); t9 = Avx512F.Shuffle4x128(r9, r13, 0x88);
        t10 = Avx512F.Shuffle4x128(r10, r14, 0x88); t11 = Avx512F.Shuffle4x128(r11, r15, 0x88);
        t12 = Avx512F.Shuffle4x128(r8, r12, 0xdd); t13 = Avx512F.Shuffle4x128(r9, r13, 0xdd);
        t14 = Avx512F.Shuffle4x128(r10, r14, 0xdd); t15 = Avx512F.Shuffle4x128(r11, r15, 0xdd);

        Avx512F.Shuffle4x128(t0, t8, 0x88).Store(d); Avx512F.Shuffle4x128(t1, t9, 0x88).Store(d + ld);
        Avx512F.Shuffle4x128(t2, t10, 0x88).Store(d + 2 * ld); Avx512F.Shuffle4x128(t3, t11, 0x88).Store(d + 3 * ld);
        Avx512F.Shuffle4x128(t4, t12, 0x88).Store(d + 4 * ld); Avx512F.Shuffle4x128(t5, t13, 0x88).Store(d + 5 * ld);
        Avx512F.Shuffle4x128(t6, t14, 0x88).Store(d + 6 * ld); Avx512F.Shuffle4x128(t7, t15, 0x88).Store(d + 7 * ld);
        Avx512F.Shuffle4x128(t0, t8, 0xdd).Store(d + 8 * ld); Avx512F.Shuffle4x128(t1, t9, 0xdd).Store(d + 9 * ld);
        Avx512F.Shuffle4x128(t2, t10, 0xdd).Store(d + 10 * ld); Avx512F.Shuffle4x128(t3, t11, 0xdd).Store(d + 11 * ld);
        Avx512F.Shuffle4x128(t4, t12, 0xdd).Store(d + 12 * ld); Avx512F.Shuffle4x128(t5, t13, 0xdd).Store(d + 13 * ld);
        Avx512F.Shuffle4x128(t6, t14, 0xdd).Store(d + 14 * ld); Avx512F.Shuffle4x128(t7, t15, 0xdd).Store(d + 15 * ld);

        static Vector512<float> Lo(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackLow(a.AsDouble(), b.AsDouble()).AsSingle();
        static Vector512<float> Hi(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackHigh(a.AsDouble(), b.AsDouble()).AsSingle();
    }
}

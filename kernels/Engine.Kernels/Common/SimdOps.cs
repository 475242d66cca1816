using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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

    /// <summary>dst[0..padded) = scale · src[0..count) followed by zeros.</summary>
    public static void CopyScaledPadded(float* dst, float* src, float scale, int count, int padded)
    {
        int i = 0;
        var s = Vector512.Create(scale);
        for (; i + 16 <= count; i += 16) (Vector512.Load(src + i) * s).Store(dst + i);
        for (; i < count; i++) dst[i] = scale * src[i];
        for (; i < padded; i++) dst[i] = 0f;
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
        for (int i = 0; i < padded; i += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), acc);
        return Vector512.Sum(acc);
    }

    /// <summary>row[0..padded) *= factor[0..padded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MultiplyInPlace(float* row, float* factor, int padded)
    {
        for (int i = 0; i < padded; i += 16) (Vector512.Load(row + i) * Vector512.Load(factor + i)).Store(row + i);
    }

    /// <summary>row[0..padded) *= factor.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaleInPlace(float* row, float factor, int padded)
    {
        var f = Vector512.Create(factor);
        for (int i = 0; i < padded; i += 16) (Vector512.Load(row + i) * f).Store(row + i);
    }

    /// <summary>Writes row · exp(a − b) into the column <paramref name="column"/> of a transposed
    /// [padded × ld] block: dst[c·ld + column] for c in [0, padded). a − b must be <= 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScatterColumnDecayed(float* dst, int ld, int column, float* row, float* a, float* b, int padded)
    {
        float* col = dst + column;
        for (int c = 0; c < padded; c += 16)
        {
            var x = Vector512.Load(row + c) * Vector512.Exp(Vector512.Load(a + c) - Vector512.Load(b + c));
            for (int l = 0; l < 16; l++) col[(nint)(c + l) * ld] = x.GetElement(l);
        }
    }

    /// <summary>Writes row into column <paramref name="column"/> of a transposed [padded × ld] block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScatterColumn(float* dst, int ld, int column, float* row, int padded)
    {
        float* col = dst + column;
        for (int c = 0; c < padded; c++) col[(nint)c * ld] = row[c];
    }
}

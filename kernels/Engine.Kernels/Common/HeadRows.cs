using System.Runtime.CompilerServices;

namespace Engine.Kernels.Common;

/// <summary>
/// The rows of one head over consecutive tokens of a [tokens, heads, dim] tensor whose token rows are
/// <paramref name="rowStride"/> floats apart (row i at <see cref="Row"/>), and
/// their copies in scratch rows padded to whole vectors. A copy also zeroes the scratch rows up to the next multiple
/// of 16, so whole 16-row blocks can be transposed and multiplied.
/// </summary>
public readonly unsafe struct HeadRows(float* tensor, int rowStride, int dim, int head, int start)
{
    private readonly float* _first = tensor + (long)start * rowStride + (long)head * dim;

    /// <summary>Floats from one row to the next.</summary>
    public int Stride { get; } = rowStride;

    public int Dim { get; } = dim;

    public float* Row(int i) => _first + (long)i * Stride;

    /// <summary>dst row i (stride padded) = row i, padded with zeros, for i in 0..len.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void CopyTo(float* dst, int padded, int len)
    {
        for (int i = 0; i < len; i++) SimdOps.CopyPadded(dst + (long)i * padded, Row(i), Dim, padded);
        ZeroToBlockEnd(dst, padded, len);
    }

    /// <summary>dst row i = scale · row i, padded with zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void CopyScaledTo(float* dst, int padded, int len, float scale)
    {
        for (int i = 0; i < len; i++) SimdOps.CopyScaledPadded(dst + (long)i * padded, Row(i), scale, Dim, padded);
        ZeroToBlockEnd(dst, padded, len);
    }

    /// <summary>dst row i = scale · row i / sqrt(‖row i‖² + epsilon), padded with zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void CopyNormalizedTo(float* dst, int padded, int len, float scale, float epsilon)
    {
        for (int i = 0; i < len; i++) SimdOps.CopyNormalizedPadded(dst + (long)i * padded, Row(i), scale, epsilon, Dim, padded);
        ZeroToBlockEnd(dst, padded, len);
    }

    /// <summary>Rows 0..len back from scratch rows (stride ldSrc): their first dim floats.</summary>
    public void CopyFrom(float* src, int ldSrc, int len) => SimdOps.CopyFromPadded(_first, Stride, src, ldSrc, len, Dim);

    /// <summary>Zeroes scratch rows len.. up to the next multiple of 16 (stride padded).</summary>
    public static void ZeroToBlockEnd(float* dst, int padded, int len) =>
        new Span<float>(dst + (long)len * padded, (HeadLayout.RoundUp16(len) - len) * padded).Clear();
}

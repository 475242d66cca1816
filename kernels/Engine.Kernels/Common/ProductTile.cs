using ILGPU;

namespace Engine.Kernels.Common;

/// <summary>A group's tile of a product: <see cref="Rows"/> × <see cref="Cols"/> entries split over the group, and this thread's index in it.</summary>
public readonly struct TileLayout(int rows, int cols, int thread)
{
    public int Rows { get; } = rows;
    public int Cols { get; } = cols;
    public int Thread { get; } = thread;
}

/// <summary>
/// One thread's share of a group's tile of C += L · R, L and R staged in shared memory (row-major, given strides). Kernels
/// are written once over it: <see cref="RegisterTile4x4"/> in exact fp32, <see cref="MmaTile{TMma}"/> on tensor cores in tf32 or fp16.
/// Every thread of the group calls each method together.
/// </summary>
public interface IProductTile
{
    /// <summary>Adds Σ_u L[r][u] · R[u][c] over u in [0, depth) for the owned entries; L and R hold zeros from depth to the next multiple of 16.</summary>
    void Accumulate(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth, TileLayout layout);

    /// <summary>
    /// <see cref="Accumulate"/> with L causally masked: row r takes only the terms with u &lt;= r + <paramref name="diagonal"/>, selected,
    /// never multiplied by zero, so a non-finite value in a row of R that r may not read never reaches r.
    /// </summary>
    void AccumulateCausal(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth, TileLayout layout, int diagonal);

    /// <summary>Multiplies tile row r by factors[r].</summary>
    void ScaleRows(ArrayView<float> factors, TileLayout layout);

    /// <summary>Sets the tile from source[offset + r·stride + c]; entries at r >= rows or c >= cols are zero.</summary>
    void Load(ArrayView<float> source, long offset, int stride, int rows, int cols, TileLayout layout);

    /// <summary>Writes the entries with r &lt; rows and c &lt; cols to target[offset + r·stride + c].</summary>
    void Store(ArrayView<float> target, long offset, int stride, int rows, int cols, TileLayout layout);
}

/// <summary>One tensor-core instruction as <see cref="MmaTile{TMma}"/> runs it: its reduction depth and one step of a warp's 16 × 32 block.</summary>
public interface IWarpMma
{
    /// <summary>Terms of the reduction one instruction takes (k of m16n8k).</summary>
    int Depth { get; }

    /// <summary>The four 16 × 8 blocks at columns n0, n0 + 8, n0 + 16, n0 + 24 += L[r0.., k0..k0 + Depth) · R[k0.., n0..n0 + 32).</summary>
    void Step(ref MmaAccumulator n0Block, ref MmaAccumulator n1Block, ref MmaAccumulator n2Block, ref MmaAccumulator n3Block,
        ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int r0, int n0, int k0);
}

/// <summary><see cref="MmaTf32"/>: m16n8k8, operands rounded to tf32.</summary>
public struct Tf32Mma : IWarpMma
{
    public readonly int Depth => 8;

    public readonly void Step(ref MmaAccumulator n0Block, ref MmaAccumulator n1Block, ref MmaAccumulator n2Block, ref MmaAccumulator n3Block,
        ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int r0, int n0, int k0)
    {
        var a = MmaTf32.LoadA(left, r0 * leftStride + k0, leftStride);
        int b = k0 * rightStride + n0;
        MmaTf32.Multiply(ref n0Block, a, MmaTf32.LoadB(right, b, rightStride));
        MmaTf32.Multiply(ref n1Block, a, MmaTf32.LoadB(right, b + 8, rightStride));
        MmaTf32.Multiply(ref n2Block, a, MmaTf32.LoadB(right, b + 16, rightStride));
        MmaTf32.Multiply(ref n3Block, a, MmaTf32.LoadB(right, b + 24, rightStride));
    }
}

/// <summary><see cref="MmaF16"/>: m16n8k16, operands rounded to fp16.</summary>
public struct F16Mma : IWarpMma
{
    public readonly int Depth => 16;

    public readonly void Step(ref MmaAccumulator n0Block, ref MmaAccumulator n1Block, ref MmaAccumulator n2Block, ref MmaAccumulator n3Block,
        ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int r0, int n0, int k0)
    {
        var a = MmaF16.LoadA(left, r0 * leftStride + k0, leftStride);
        int b = k0 * rightStride + n0;
        MmaF16.Multiply(ref n0Block, a, MmaF16.LoadB(right, b, rightStride));
        MmaF16.Multiply(ref n1Block, a, MmaF16.LoadB(right, b + 8, rightStride));
        MmaF16.Multiply(ref n2Block, a, MmaF16.LoadB(right, b + 16, rightStride));
        MmaF16.Multiply(ref n3Block, a, MmaF16.LoadB(right, b + 24, rightStride));
    }
}

/// <summary>
/// A warp's 16 × 32 block of a group's tile on tensor cores (four 16 × 8 fp32 accumulators, <see cref="MmaAccumulator"/>), warps
/// laid over the tile row-major; the tile's rows a multiple of 16, its columns of 32, and Rows · Cols = 16 · group size. The
/// reduction runs in steps of <typeparamref name="TMma"/>'s depth (operands rounded to tf32 or fp16, sums in fp32). A causal step
/// whose terms some of the warp's rows may not all read is summed per entry in exact fp32 with selects, as
/// <see cref="RegisterTile4x4"/> does.
/// </summary>
public struct MmaTile<TMma> : IProductTile where TMma : struct, IWarpMma
{
    private MmaAccumulator _n0, _n1, _n2, _n3;

    private static (int Row, int Col) Origin(TileLayout layout)
    {
        int warp = layout.Thread / MmaTf32.WarpSize, warpCols = layout.Cols / 32;
        return (warp / warpCols * 16, warp % warpCols * 32);
    }

    public void Accumulate(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth, TileLayout layout)
    {
        var (r0, n0) = Origin(layout);
        int step = default(TMma).Depth;
        for (int k0 = 0; k0 < depth; k0 += step) default(TMma).Step(ref _n0, ref _n1, ref _n2, ref _n3, left, leftStride, right, rightStride, r0, n0, k0);
    }

    public void AccumulateCausal(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth, TileLayout layout, int diagonal)
    {
        var (r0, n0) = Origin(layout);
        int step = default(TMma).Depth;
        for (int k0 = 0; k0 < depth; k0 += step)
        {
            if (k0 + step - 1 - diagonal <= r0) default(TMma).Step(ref _n0, ref _n1, ref _n2, ref _n3, left, leftStride, right, rightStride, r0, n0, k0);
            else
            {
                int end = Math.Min(k0 + step, depth);
                _n0 = MaskedStep(_n0, left, leftStride, right, rightStride, r0, n0, k0, end, diagonal);
                _n1 = MaskedStep(_n1, left, leftStride, right, rightStride, r0, n0 + 8, k0, end, diagonal);
                _n2 = MaskedStep(_n2, left, leftStride, right, rightStride, r0, n0 + 16, k0, end, diagonal);
                _n3 = MaskedStep(_n3, left, leftStride, right, rightStride, r0, n0 + 24, k0, end, diagonal);
            }
        }
    }

    /// <summary>Terms u in [k0, end) of the lane's four entries of the 16 × 8 block at (r0, n0), each row taking u &lt;= row + diagonal only.</summary>
    private static MmaAccumulator MaskedStep(MmaAccumulator acc, ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride,
        int r0, int n0, int k0, int end, int diagonal)
    {
        var (rowLow, col) = MmaTf32.AccumulatorEntry(0);
        int low = r0 + rowLow, high = low + 8;
        for (int u = k0; u < end; u++)
        {
            float aLow = left[low * leftStride + u], aHigh = left[high * leftStride + u];
            float bEven = right[u * rightStride + n0 + col], bOdd = right[u * rightStride + n0 + col + 1];
            bool lowReads = u - diagonal <= low, highReads = u - diagonal <= high;
            acc.C0 += lowReads ? aLow * bEven : 0f;
            acc.C1 += lowReads ? aLow * bOdd : 0f;
            acc.C2 += highReads ? aHigh * bEven : 0f;
            acc.C3 += highReads ? aHigh * bOdd : 0f;
        }
        return acc;
    }

    /// <summary>The same accumulators, to be summed on with <typeparamref name="TOther"/>'s instruction (the fragment layout of C and D is one).</summary>
    public readonly MmaTile<TOther> SummedOnWith<TOther>() where TOther : struct, IWarpMma =>
        new() { _n0 = _n0, _n1 = _n1, _n2 = _n2, _n3 = _n3 };

    public void ScaleRows(ArrayView<float> factors, TileLayout layout)
    {
        var (r0, _) = Origin(layout);
        var (row, _) = MmaTf32.AccumulatorEntry(0);
        float low = factors[r0 + row], high = factors[r0 + row + 8];
        _n0 = Scale(_n0, low, high);
        _n1 = Scale(_n1, low, high);
        _n2 = Scale(_n2, low, high);
        _n3 = Scale(_n3, low, high);
    }

    private static MmaAccumulator Scale(MmaAccumulator acc, float low, float high) =>
        new() { C0 = acc.C0 * low, C1 = acc.C1 * low, C2 = acc.C2 * high, C3 = acc.C3 * high };

    public void Load(ArrayView<float> source, long offset, int stride, int rows, int cols, TileLayout layout)
    {
        var (r0, n0) = Origin(layout);
        _n0 = LoadBlock(source, offset, stride, rows, cols, r0, n0);
        _n1 = LoadBlock(source, offset, stride, rows, cols, r0, n0 + 8);
        _n2 = LoadBlock(source, offset, stride, rows, cols, r0, n0 + 16);
        _n3 = LoadBlock(source, offset, stride, rows, cols, r0, n0 + 24);
    }

    private static MmaAccumulator LoadBlock(ArrayView<float> source, long offset, int stride, int rows, int cols, int r0, int n0)
    {
        var (row, col) = MmaTf32.AccumulatorEntry(0);
        int low = r0 + row, high = low + 8, even = n0 + col, odd = even + 1;
        long lowAt = offset + (long)low * stride, highAt = offset + (long)high * stride;
        return new MmaAccumulator
        {
            C0 = low < rows && even < cols ? source[lowAt + even] : 0f,
            C1 = low < rows && odd < cols ? source[lowAt + odd] : 0f,
            C2 = high < rows && even < cols ? source[highAt + even] : 0f,
            C3 = high < rows && odd < cols ? source[highAt + odd] : 0f,
        };
    }

    public readonly void Store(ArrayView<float> target, long offset, int stride, int rows, int cols, TileLayout layout)
    {
        var (r0, n0) = Origin(layout);
        StoreBlock(_n0, target, offset, stride, rows, cols, r0, n0);
        StoreBlock(_n1, target, offset, stride, rows, cols, r0, n0 + 8);
        StoreBlock(_n2, target, offset, stride, rows, cols, r0, n0 + 16);
        StoreBlock(_n3, target, offset, stride, rows, cols, r0, n0 + 24);
    }

    private static void StoreBlock(MmaAccumulator acc, ArrayView<float> target, long offset, int stride, int rows, int cols, int r0, int n0)
    {
        var (row, col) = MmaTf32.AccumulatorEntry(0);
        int low = r0 + row, high = low + 8, even = n0 + col, odd = even + 1;
        long lowAt = offset + (long)low * stride, highAt = offset + (long)high * stride;
        if (low < rows && even < cols) target[lowAt + even] = acc.C0;
        if (low < rows && odd < cols) target[lowAt + odd] = acc.C1;
        if (high < rows && even < cols) target[highAt + even] = acc.C2;
        if (high < rows && odd < cols) target[highAt + odd] = acc.C3;
    }
}

using ILGPU;

namespace Engine.Kernels.Common;

/// <summary>
/// One GPU thread's 4 × 4 block of a group's tile of C += L · R in exact fp32, held in scalar fields so the compiler keeps
/// it in registers (ILGPU 1.5.3 puts indexed local arrays in slow local memory and does not unroll loops). With the tile
/// split over (Rows / 4) × (Cols / 4) threads, thread (row, col) owns rows row + rowStep·m and columns col + colStep·n
/// (m, n in 0..3): neighbouring threads take neighbouring columns, so their reads of R from shared memory fall on distinct
/// banks while the reads of L are broadcasts. Each step of the reduction reads 8 values from shared memory for 16
/// multiply-adds.
/// </summary>
public struct RegisterTile4x4 : IProductTile
{
    private float _c00, _c01, _c02, _c03;
    private float _c10, _c11, _c12, _c13;
    private float _c20, _c21, _c22, _c23;
    private float _c30, _c31, _c32, _c33;

    public void Accumulate(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth, TileLayout layout) =>
        Product(left, leftStride, right, rightStride, depth, layout, 0, masked: false);

    public void AccumulateCausal(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth, TileLayout layout, int diagonal) =>
        Product(left, leftStride, right, rightStride, depth, layout, diagonal, masked: true);

    /// <summary>Both products in one loop: the compiler inlines it with <paramref name="masked"/> a constant, so the plain product has no selects.</summary>
    private void Product(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth, TileLayout layout, int diagonal, bool masked)
    {
        int colStep = layout.Cols / 4, rowStep = layout.Rows / 4, row = layout.Thread / colStep, col = layout.Thread % colStep;
        int rowJump = rowStep * leftStride;
        for (int u = 0; u < depth; u++)
        {
            int a = row * leftStride + u;
            float l0 = left[a], l1 = left[a + rowJump], l2 = left[a + 2 * rowJump], l3 = left[a + 3 * rowJump];
            int b = u * rightStride + col;
            float r0 = right[b], r1 = right[b + colStep], r2 = right[b + 2 * colStep], r3 = right[b + 3 * colStep];
            // The masked terms are selected away, not multiplied by zero, so a non-finite value in a row of R that a row may not read never reaches it.
            int first = u - diagonal;
            bool k0 = !masked || first <= row, k1 = !masked || first <= row + rowStep, k2 = !masked || first <= row + 2 * rowStep, k3 = !masked || first <= row + 3 * rowStep;
            _c00 += k0 ? l0 * r0 : 0f; _c01 += k0 ? l0 * r1 : 0f; _c02 += k0 ? l0 * r2 : 0f; _c03 += k0 ? l0 * r3 : 0f;
            _c10 += k1 ? l1 * r0 : 0f; _c11 += k1 ? l1 * r1 : 0f; _c12 += k1 ? l1 * r2 : 0f; _c13 += k1 ? l1 * r3 : 0f;
            _c20 += k2 ? l2 * r0 : 0f; _c21 += k2 ? l2 * r1 : 0f; _c22 += k2 ? l2 * r2 : 0f; _c23 += k2 ? l2 * r3 : 0f;
            _c30 += k3 ? l3 * r0 : 0f; _c31 += k3 ? l3 * r1 : 0f; _c32 += k3 ? l3 * r2 : 0f; _c33 += k3 ? l3 * r3 : 0f;
        }
    }

    public void ScaleRows(ArrayView<float> factors, TileLayout layout)
    {
        int colStep = layout.Cols / 4, rowStep = layout.Rows / 4, row = layout.Thread / colStep;
        float f0 = factors[row], f1 = factors[row + rowStep], f2 = factors[row + 2 * rowStep], f3 = factors[row + 3 * rowStep];
        _c00 *= f0; _c01 *= f0; _c02 *= f0; _c03 *= f0;
        _c10 *= f1; _c11 *= f1; _c12 *= f1; _c13 *= f1;
        _c20 *= f2; _c21 *= f2; _c22 *= f2; _c23 *= f2;
        _c30 *= f3; _c31 *= f3; _c32 *= f3; _c33 *= f3;
    }

    public void Load(ArrayView<float> source, long offset, int stride, int rows, int cols, TileLayout layout)
    {
        int colStep = layout.Cols / 4, rowStep = layout.Rows / 4, row = layout.Thread / colStep, col = layout.Thread % colStep;
        for (int m = 0; m < 4; m++)
        {
            int r = row + m * rowStep;
            long at = offset + (long)r * stride + col;
            bool inside = r < rows;
            float x0 = inside && col < cols ? source[at] : 0f;
            float x1 = inside && col + colStep < cols ? source[at + colStep] : 0f;
            float x2 = inside && col + 2 * colStep < cols ? source[at + 2 * colStep] : 0f;
            float x3 = inside && col + 3 * colStep < cols ? source[at + 3 * colStep] : 0f;
            if (m == 0) { _c00 = x0; _c01 = x1; _c02 = x2; _c03 = x3; }
            else if (m == 1) { _c10 = x0; _c11 = x1; _c12 = x2; _c13 = x3; }
            else if (m == 2) { _c20 = x0; _c21 = x1; _c22 = x2; _c23 = x3; }
            else { _c30 = x0; _c31 = x1; _c32 = x2; _c33 = x3; }
        }
    }

    public readonly void Store(ArrayView<float> target, long offset, int stride, int rows, int cols, TileLayout layout)
    {
        int colStep = layout.Cols / 4, rowStep = layout.Rows / 4, row = layout.Thread / colStep, col = layout.Thread % colStep;
        for (int m = 0; m < 4; m++)
        {
            int r = row + m * rowStep;
            if (r >= rows) continue;
            float x0, x1, x2, x3;
            if (m == 0) { x0 = _c00; x1 = _c01; x2 = _c02; x3 = _c03; }
            else if (m == 1) { x0 = _c10; x1 = _c11; x2 = _c12; x3 = _c13; }
            else if (m == 2) { x0 = _c20; x1 = _c21; x2 = _c22; x3 = _c23; }
            else { x0 = _c30; x1 = _c31; x2 = _c32; x3 = _c33; }
            long at = offset + (long)r * stride + col;
            if (col < cols) target[at] = x0;
            if (col + colStep < cols) target[at + colStep] = x1;
            if (col + 2 * colStep < cols) target[at + 2 * colStep] = x2;
            if (col + 3 * colStep < cols) target[at + 3 * colStep] = x3;
        }
    }
}

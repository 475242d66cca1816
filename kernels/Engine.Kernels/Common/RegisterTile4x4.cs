using ILGPU;

namespace Engine.Kernels.Common;

/// <summary>
/// One GPU thread's 4 × 4 block of a tiled matrix product C += L · R, held in scalar fields so the
/// compiler keeps it in registers (ILGPU 1.5.3 puts indexed local arrays in slow local memory and does
/// not unroll loops). The thread owns rows row + rowStep·m and columns col + colStep·n (m, n in 0..3):
/// neighbouring threads take neighbouring columns, so their reads of R from shared memory fall on
/// distinct banks while the reads of L are broadcasts. Each step of the reduction reads 8 values from
/// shared memory for 16 multiply-adds.
/// </summary>
public struct RegisterTile4x4
{
    private float _c00, _c01, _c02, _c03;
    private float _c10, _c11, _c12, _c13;
    private float _c20, _c21, _c22, _c23;
    private float _c30, _c31, _c32, _c33;

    /// <summary>
    /// Adds Σ_u L[r][u] · R[u][c] over u in [0, depth) for the owned rows r and columns c.
    /// L is row-major with <paramref name="leftStride"/>, R row-major with <paramref name="rightStride"/>.
    /// </summary>
    public void Accumulate(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth,
        int row, int rowStep, int col, int colStep)
    {
        int rowJump = rowStep * leftStride;
        for (int u = 0; u < depth; u++)
        {
            int a = row * leftStride + u;
            float l0 = left[a], l1 = left[a + rowJump], l2 = left[a + 2 * rowJump], l3 = left[a + 3 * rowJump];
            int b = u * rightStride + col;
            float r0 = right[b], r1 = right[b + colStep], r2 = right[b + 2 * colStep], r3 = right[b + 3 * colStep];
            _c00 += l0 * r0; _c01 += l0 * r1; _c02 += l0 * r2; _c03 += l0 * r3;
            _c10 += l1 * r0; _c11 += l1 * r1; _c12 += l1 * r2; _c13 += l1 * r3;
            _c20 += l2 * r0; _c21 += l2 * r1; _c22 += l2 * r2; _c23 += l2 * r3;
            _c30 += l3 * r0; _c31 += l3 * r1; _c32 += l3 * r2; _c33 += l3 * r3;
        }
    }

    /// <summary>
    /// <see cref="Accumulate"/> for a product whose left operand is causally masked: row r takes only the terms with
    /// u <= r + <paramref name="diagonal"/>. The masked terms are selected away, not multiplied by zero, so a non-finite
    /// value in a row of R that r may not read never reaches row r.
    /// </summary>
    public void AccumulateCausal(ArrayView<float> left, int leftStride, ArrayView<float> right, int rightStride, int depth,
        int row, int rowStep, int col, int colStep, int diagonal)
    {
        int rowJump = rowStep * leftStride;
        for (int u = 0; u < depth; u++)
        {
            int a = row * leftStride + u;
            float l0 = left[a], l1 = left[a + rowJump], l2 = left[a + 2 * rowJump], l3 = left[a + 3 * rowJump];
            int b = u * rightStride + col;
            float r0 = right[b], r1 = right[b + colStep], r2 = right[b + 2 * colStep], r3 = right[b + 3 * colStep];
            int first = u - diagonal;
            bool k0 = first <= row, k1 = first <= row + rowStep, k2 = first <= row + 2 * rowStep, k3 = first <= row + 3 * rowStep;
            _c00 += k0 ? l0 * r0 : 0f; _c01 += k0 ? l0 * r1 : 0f; _c02 += k0 ? l0 * r2 : 0f; _c03 += k0 ? l0 * r3 : 0f;
            _c10 += k1 ? l1 * r0 : 0f; _c11 += k1 ? l1 * r1 : 0f; _c12 += k1 ? l1 * r2 : 0f; _c13 += k1 ? l1 * r3 : 0f;
            _c20 += k2 ? l2 * r0 : 0f; _c21 += k2 ? l2 * r1 : 0f; _c22 += k2 ? l2 * r2 : 0f; _c23 += k2 ? l2 * r3 : 0f;
            _c30 += k3 ? l3 * r0 : 0f; _c31 += k3 ? l3 * r1 : 0f; _c32 += k3 ? l3 * r2 : 0f; _c33 += k3 ? l3 * r3 : 0f;
        }
    }

    /// <summary>
    /// Writes owned row <paramref name="m"/> to target[rowOffset + col + colStep·n] for every n whose
    /// column col + colStep·n is below <paramref name="columns"/>.
    /// </summary>
    public readonly void StoreRow(int m, ArrayView<float> target, long rowOffset, int col, int colStep, int columns)
    {
        float x0, x1, x2, x3;
        if (m == 0) { x0 = _c00; x1 = _c01; x2 = _c02; x3 = _c03; }
        else if (m == 1) { x0 = _c10; x1 = _c11; x2 = _c12; x3 = _c13; }
        else if (m == 2) { x0 = _c20; x1 = _c21; x2 = _c22; x3 = _c23; }
        else { x0 = _c30; x1 = _c31; x2 = _c32; x3 = _c33; }
        if (col < columns) target[rowOffset + col] = x0;
        if (col + colStep < columns) target[rowOffset + col + colStep] = x1;
        if (col + 2 * colStep < columns) target[rowOffset + col + 2 * colStep] = x2;
        if (col + 3 * colStep < columns) target[rowOffset + col + 3 * colStep] = x3;
    }
}

using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Engine.Kernels.Common;

/// <summary>A warp's 16 × 8 fp32 accumulator of <see cref="MmaTf32"/> and <see cref="MmaF16"/>: this lane's c0..c3 (PTX's fragment layout for C and D).</summary>
public struct MmaAccumulator
{
    public float C0, C1, C2, C3;
}

/// <summary>A warp's 16 × 8 tf32 A operand (row-major): this lane's a0..a3 as tf32 bit patterns.</summary>
public struct MmaFragmentA
{
    public uint A0, A1, A2, A3;
}

/// <summary>A warp's 8 × 8 tf32 B operand (column-major): this lane's b0, b1 as tf32 bit patterns.</summary>
public struct MmaFragmentB
{
    public uint B0, B1;
}

/// <summary>
/// The tensor-core product D = A·B + C of one warp, <c>mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32</c>: A 16 × 8 and
/// B 8 × 8 in tf32 (8-bit exponent, 10-bit mantissa), C and D 16 × 8 in fp32. All 32 lanes of a warp call it together.
/// On CUDA it is the instruction itself (inline PTX); elsewhere (ILGPU's CPU accelerator, which must be configured with
/// 32-lane warps) the same product is emulated: every lane gathers the A rows and B columns of its D entries from the
/// lanes that hold them, with warp shuffles, in PTX's documented fragment layouts (PTX ISA, "Matrix Fragments for
/// mma.m16n8k8", .tf32). With groupID = lane / 4 and t = lane % 4:
///   A: a0 = A[g][t], a1 = A[g + 8][t], a2 = A[g][t + 4], a3 = A[g + 8][t + 4];
///   B: b0 = B[t][g], b1 = B[t + 4][g];
///   C, D: c0 = C[g][2t], c1 = C[g][2t + 1], c2 = C[g + 8][2t], c3 = C[g + 8][2t + 1].
/// Operands are rounded to tf32 when a fragment is loaded (<see cref="RoundToTf32"/>), once, not per product: a product of
/// two tf32 values is exact in fp32, so the emulation's only other rounding is its fp32 sum.
/// </summary>
public static class MmaTf32
{
    /// <summary>Lanes of the warp the instruction is defined over.</summary>
    public const int WarpSize = 32;

    /// <summary>
    /// x rounded to tf32, to nearest with ties away from zero: PTX's <c>cvt.rna.tf32.f32</c>, the one rounding the conversion
    /// offers on sm_80 (what NVIDIA's libraries use to feed fp32 data to tf32 tensor cores). The result keeps fp32's layout
    /// with the low 13 mantissa bits zero. NaN and infinity pass unchanged; values that round past the largest finite tf32
    /// become infinity, as in the instruction.
    /// </summary>
    public static uint RoundToTf32(float x)
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cvt.rna.tf32.f32 %0, %1;", out uint rounded, x);
            return rounded;
        }
        uint bits = Interop.FloatAsInt(x);
        if ((bits & 0x7F80_0000u) == 0x7F80_0000u) return bits;
        // Half a tf32 unit added to the magnitude, then truncation: to nearest, ties away from zero (a carry moves the exponent).
        return (bits + 0x1000u) & 0xFFFF_E000u;
    }

    /// <summary>A from a row-major 16 × 8 block at <paramref name="offset"/> of <paramref name="source"/> with row stride <paramref name="stride"/>, rounded to tf32.</summary>
    public static MmaFragmentA LoadA(ArrayView<float> source, int offset, int stride)
    {
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        int at = offset + g * stride + t;
        return new MmaFragmentA
        {
            A0 = RoundToTf32(source[at]),
            A1 = RoundToTf32(source[at + 8 * stride]),
            A2 = RoundToTf32(source[at + 4]),
            A3 = RoundToTf32(source[at + 8 * stride + 4]),
        };
    }

    /// <summary>B from a row-major 8 × 8 block (k rows, n columns) at <paramref name="offset"/> with row stride <paramref name="stride"/>, rounded to tf32.</summary>
    public static MmaFragmentB LoadB(ArrayView<float> source, int offset, int stride)
    {
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        int at = offset + t * stride + g;
        return new MmaFragmentB { B0 = RoundToTf32(source[at]), B1 = RoundToTf32(source[at + 4 * stride]) };
    }

    /// <summary>Local row (0..15) and column (0..7) of accumulator entry <paramref name="entry"/> (0..3) of this lane.</summary>
    public static (int Row, int Col) AccumulatorEntry(int entry)
    {
        int lane = Warp.LaneIdx;
        return ((lane >> 2) + 8 * (entry >> 1), 2 * (lane & 3) + (entry & 1));
    }

    /// <summary>D = A·B + D for the warp's 16 × 8 accumulator.</summary>
    public static void Multiply(ref MmaAccumulator d, MmaFragmentA a, MmaFragmentB b)
    {
        if (CudaAsm.IsSupported)
        {
            Ref<float> c0 = d.C0, c1 = d.C1, c2 = d.C2, c3 = d.C3;
            Input<uint> a0 = a.A0, a1 = a.A1, a2 = a.A2, a3 = a.A3, b0 = b.B0, b1 = b.B1;
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
                ref c0, ref c1, ref c2, ref c3, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1);
            d.C0 = c0.Value; d.C1 = c1.Value; d.C2 = c2.Value; d.C3 = c3.Value;
            return;
        }
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        // Lane (g, t) needs A rows g and g + 8 and B columns 2t and 2t + 1, for k = 0..7 in order:
        // A[r][k] lives in lane 4·(r mod 8) + k mod 4, B[k][n] in lane 4n + k mod 4.
        float d0 = d.C0, d1 = d.C1, d2 = d.C2, d3 = d.C3;
        for (int half = 0; half < 2; half++)
        {
            uint rowLow = half == 0 ? a.A0 : a.A2, rowHigh = half == 0 ? a.A1 : a.A3, column = half == 0 ? b.B0 : b.B1;
            for (int k = 0; k < 4; k++)
            {
                float aLow = Interop.IntAsFloat(Warp.Shuffle(rowLow, 4 * g + k));
                float aHigh = Interop.IntAsFloat(Warp.Shuffle(rowHigh, 4 * g + k));
                float bEven = Interop.IntAsFloat(Warp.Shuffle(column, 4 * (2 * t) + k));
                float bOdd = Interop.IntAsFloat(Warp.Shuffle(column, 4 * (2 * t + 1) + k));
                d0 += aLow * bEven;
                d1 += aLow * bOdd;
                d2 += aHigh * bEven;
                d3 += aHigh * bOdd;
            }
        }
        d.C0 = d0; d.C1 = d1; d.C2 = d2; d.C3 = d3;
    }
}

using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Engine.Kernels.Common;

/// <summary>A warp's 16 × 16 fp16 A operand of <see cref="MmaF16"/> (row-major): this lane's a0..a7 as four pairs, the lower-indexed element in the low 16 bits.</summary>
public struct MmaF16FragmentA
{
    public uint A01, A23, A45, A67;
}

/// <summary>A warp's 16 × 8 fp16 B operand of <see cref="MmaF16"/> (column-major): this lane's b0..b3 as two pairs, the lower-indexed element in the low 16 bits.</summary>
public struct MmaF16FragmentB
{
    public uint B01, B23;
}

/// <summary>
/// The tensor-core product D = A·B + C of one warp, <c>mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32</c>: A 16 × 16 and
/// B 16 × 8 in fp16 (5-bit exponent, 10-bit mantissa), C and D 16 × 8 in fp32 (<see cref="MmaAccumulator"/>, entries placed as
/// <see cref="MmaTf32.AccumulatorEntry"/> gives). All 32 lanes of a warp call it together. On CUDA it is the instruction itself
/// (inline PTX); elsewhere (ILGPU's CPU accelerator configured with 32-lane warps) the same product is emulated with warp shuffles
/// in PTX's documented fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type", .f16). With
/// groupID g = lane / 4 and t = lane % 4:
///   A: a0, a1 = A[g][2t], A[g][2t + 1]; a2, a3 = A[g + 8][2t], A[g + 8][2t + 1]; a4, a5 = A[g][2t + 8], A[g][2t + 9]; a6, a7 = A[g + 8][2t + 8], A[g + 8][2t + 9];
///   B: b0, b1 = B[2t][g], B[2t + 1][g]; b2, b3 = B[2t + 8][g], B[2t + 9][g];
///   C, D: c0 = C[g][2t], c1 = C[g][2t + 1], c2 = C[g + 8][2t], c3 = C[g + 8][2t + 1].
/// Operands are rounded to fp16 to nearest, ties to even, when a fragment is loaded (<see cref="Pack"/>); a product of two fp16
/// values is exact in fp32, so the emulation's only other rounding is its fp32 sum. fp16 holds magnitudes up to 65504: a larger
/// operand becomes infinity and so does every output it reaches.
/// </summary>
public static class MmaF16
{
    /// <summary>Lanes of the warp the instruction is defined over.</summary>
    public const int WarpSize = 32;

    /// <summary>
    /// x and y rounded to fp16, to nearest with ties to even, packed as one f16x2 word (x in the low 16 bits): PTX's
    /// <c>cvt.rn.f16x2.f32</c>, element by element what <c>cvt.rn.f16.f32</c> gives. Magnitudes from 65520 up become infinity,
    /// those below fp16's smallest normal 2^-14 are rounded to its subnormals (units of 2^-24), NaN becomes a NaN.
    /// </summary>
    public static uint Pack(float x, float y)
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("cvt.rn.f16x2.f32 %0, %1, %2;", out uint packed, y, x);
            return packed;
        }
        return RoundToF16(x) | RoundToF16(y) << 16;
    }

    /// <summary>The fp16 bit pattern of x, to nearest with ties to even (the emulation of <see cref="Pack"/>).</summary>
    private static uint RoundToF16(float x)
    {
        uint bits = Interop.FloatAsInt(x), sign = (bits >> 16) & 0x8000u, magnitude = bits & 0x7FFF_FFFFu;
        if (magnitude > 0x7F80_0000u) return 0x7FFFu;
        if (magnitude >= 0x477F_F000u) return sign | 0x7C00u;   // 65520 (a tie above 65504, whose last bit is odd) and beyond
        if (magnitude >= 0x3880_0000u)
        {
            // Rebiased from fp32's exponent to fp16's; half a unit less one plus the kept last bit, then truncation: ties to even.
            uint rounded = magnitude + 0x0FFFu + ((magnitude >> 13) & 1u);
            return sign | ((rounded - 0x3800_0000u) >> 13);
        }
        // Below 2^-14 fp16 counts units of 2^-24, the unit of fp32 in [0.5, 1): adding 0.5 rounds to it (ties to even), and the
        // sum's low bits are the count (1024 when it rounds up to the smallest normal, whose pattern that is).
        return sign | (Interop.FloatAsInt(Interop.IntAsFloat(magnitude) + 0.5f) - 0x3F00_0000u);
    }

    /// <summary>The fp32 value of an fp16 bit pattern (exact).</summary>
    private static float ToFloat(uint half)
    {
        uint sign = (half & 0x8000u) << 16, exponent = (half >> 10) & 0x1Fu, mantissa = half & 0x3FFu;
        if (exponent == 0) return Interop.IntAsFloat(sign | Interop.FloatAsInt(mantissa * (1f / 16_777_216f)));
        if (exponent == 0x1F) return Interop.IntAsFloat(sign | 0x7F80_0000u | mantissa << 13);
        return Interop.IntAsFloat(sign | (exponent + 112) << 23 | mantissa << 13);
    }

    /// <summary>A from a row-major 16 × 16 block at <paramref name="offset"/> of <paramref name="source"/> with row stride <paramref name="stride"/>, rounded to fp16.</summary>
    public static MmaF16FragmentA LoadA(ArrayView<float> source, int offset, int stride)
    {
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        int low = offset + g * stride + 2 * t, high = low + 8 * stride;
        return new MmaF16FragmentA
        {
            A01 = Pack(source[low], source[low + 1]),
            A23 = Pack(source[high], source[high + 1]),
            A45 = Pack(source[low + 8], source[low + 9]),
            A67 = Pack(source[high + 8], source[high + 9]),
        };
    }

    /// <summary>B from a row-major 16 × 8 block (k rows, n columns) at <paramref name="offset"/> with row stride <paramref name="stride"/>, rounded to fp16.</summary>
    public static MmaF16FragmentB LoadB(ArrayView<float> source, int offset, int stride)
    {
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        int at = offset + 2 * t * stride + g;
        return new MmaF16FragmentB
        {
            B01 = Pack(source[at], source[at + stride]),
            B23 = Pack(source[at + 8 * stride], source[at + 9 * stride]),
        };
    }

    /// <summary>D = A·B + D for the warp's 16 × 8 accumulator.</summary>
    public static void Multiply(ref MmaAccumulator d, MmaF16FragmentA a, MmaF16FragmentB b)
    {
        if (CudaAsm.IsSupported)
        {
            Ref<float> c0 = d.C0, c1 = d.C1, c2 = d.C2, c3 = d.C3;
            Input<uint> a0 = a.A01, a1 = a.A23, a2 = a.A45, a3 = a.A67, b0 = b.B01, b1 = b.B23;
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};",
                ref c0, ref c1, ref c2, ref c3, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1);
            d.C0 = c0.Value; d.C1 = c1.Value; d.C2 = c2.Value; d.C3 = c3.Value;
            return;
        }
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        // Lane (g, t) needs A rows g and g + 8 and B columns 2t and 2t + 1, for k = 0..15 in order: the pair holding k = 8h + 2p + e
        // (e = 0 low, 1 high) is A[r] in lane 4·(r mod 8) + p, word h of the row's half, and B[·][n] in lane 4n + p, word h.
        float d0 = d.C0, d1 = d.C1, d2 = d.C2, d3 = d.C3;
        for (int h = 0; h < 2; h++)
        {
            uint rowLow = h == 0 ? a.A01 : a.A45, rowHigh = h == 0 ? a.A23 : a.A67, column = h == 0 ? b.B01 : b.B23;
            for (int p = 0; p < 4; p++)
            {
                uint aLow = Warp.Shuffle(rowLow, 4 * g + p), aHigh = Warp.Shuffle(rowHigh, 4 * g + p);
                uint bEven = Warp.Shuffle(column, 4 * (2 * t) + p), bOdd = Warp.Shuffle(column, 4 * (2 * t + 1) + p);
                for (int e = 0; e < 32; e += 16)
                {
                    float al = ToFloat((aLow >> e) & 0xFFFFu), ah = ToFloat((aHigh >> e) & 0xFFFFu);
                    float be = ToFloat((bEven >> e) & 0xFFFFu), bo = ToFloat((bOdd >> e) & 0xFFFFu);
                    d0 += al * be;
                    d1 += al * bo;
                    d2 += ah * be;
                    d3 += ah * bo;
                }
            }
        }
        d.C0 = d0; d.C1 = d1; d.C2 = d2; d.C3 = d3;
    }
}

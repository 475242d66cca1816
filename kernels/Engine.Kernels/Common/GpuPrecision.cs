using Engine.Kernels.Common;

namespace Engine;

/// <summary>How the GPU kernels multiply the chunk products (state and accumulation are fp32 either way).</summary>
public enum GpuPrecision
{
    /// <summary>fp32 multiply-adds on the CUDA cores: within 1e-5 relative RMS of the float64 reference.</summary>
    Fp32,

    /// <summary>
    /// Tensor cores (<see cref="MmaTf32"/>): operands rounded to tf32 (10-bit mantissa, fp32's range), products summed in fp32.
    /// Needs 32-lane warps. Stated bound: 2e-3 relative RMS against the float64 reference (the rounding alone gives about
    /// 2^-11 / sqrt(3) per operand).
    /// </summary>
    Tf32,

    /// <summary>
    /// Tensor cores: the chunk's own products (scores, A·V) on <see cref="MmaF16"/>, operands rounded to fp16 (10-bit mantissa,
    /// magnitudes up to 65504, subnormal below 2^-14); the products with the state, which may outgrow fp16's range, as
    /// <see cref="Tf32"/>. Sums in fp32. Needs 32-lane warps. Stated bound: 2e-3 relative RMS against the float64 reference
    /// while the scaled queries, decayed keys, scores and values stay below 65520 in magnitude; past that the outputs they
    /// reach are not finite (and the facades refuse the call).
    /// </summary>
    Fp16,
}

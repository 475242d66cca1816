namespace Engine.Kernels.Common;

/// <summary>How the GPU kernels multiply the chunk products (state and accumulation are fp32 either way).</summary>
public enum GpuPrecision
{
    /// <summary>fp32 multiply-adds on the CUDA cores: within 1e-5 relative RMS of the float64 reference.</summary>
    Fp32,

    /// <summary>
    /// Tensor cores (<see cref="MmaTf32"/>): operands rounded to tf32 (10-bit mantissa), products summed in fp32. Needs 32-lane
    /// warps. Stated bound: 2e-3 relative RMS against the float64 reference (the rounding alone gives about 2^-11 / sqrt(3)
    /// per operand).
    /// </summary>
    Tf32,
}

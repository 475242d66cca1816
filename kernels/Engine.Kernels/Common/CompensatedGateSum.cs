using ILGPU.Algorithms;

namespace Engine.Kernels.Common;

/// <summary>
/// The GPU kernels' in-chunk cumulative log gate b as an unevaluated sum of two floats, b = High + Low: High the fp32 running
/// sum, Low the rounding its additions left (Knuth's TwoSum, exact in fp32). After strong gates take High into the hundreds,
/// a weak gate lies below its ulp; with Low the sum keeps it, and a difference b_i − b_j between later tokens is as precise
/// as its own size allows (the CPU kernels keep b in double). Adds and subtracts only, so nothing can contract into an FMA.
/// The two floats lie side by side, one address for both.
/// </summary>
public struct CompensatedGateSum(float high, float low)
{
    public float High = high, Low = low;

    /// <summary>Adds a log gate (<see cref="LogGates.Summand"/>) to the running sum.</summary>
    public void Add(float gate)
    {
        float sum = High + gate, addend = sum - High;
        Low += (High - (sum - addend)) + (gate - addend);
        High = sum;
    }

    /// <summary>b itself, the exponent of the decay from the chunk's start: &lt;= 0 by construction.</summary>
    public readonly float Value => XMath.Min(0f, High + Low);

    /// <summary>b_i − b_j for j before i: &lt;= 0 by construction, where rounding could leave a zero difference a hair above.</summary>
    public static float Difference(CompensatedGateSum i, CompensatedGateSum j) => XMath.Min(0f, i.High - j.High + (i.Low - j.Low));
}

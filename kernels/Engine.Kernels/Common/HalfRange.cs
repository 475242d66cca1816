using System.Numerics.Tensors;

namespace Engine.Kernels.Common;

/// <summary>The values float16 can hold: what an fp32 result must fit before it is written to a float16 tensor.</summary>
public static class HalfRange
{
    /// <summary>Smallest magnitude float16 rounds to infinity (65504 + half a unit in its last place).</summary>
    public const float Overflow = 65520f;

    /// <summary>Every value finite and small enough to stay finite in float16.</summary>
    public static void Require(ReadOnlySpan<float> values, string name)
    {
        if (values.IsEmpty || TensorPrimitives.MaxMagnitude(values) is float max && MathF.Abs(max) < Overflow) return;
        int i = 0;
        while (MathF.Abs(values[i]) < Overflow) i++;
        throw ValueRules.Refusal(ValueRule.HalfRange, name, values[i], i);
    }
}

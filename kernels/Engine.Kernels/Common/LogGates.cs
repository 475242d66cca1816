using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// Log gates (log-space decays) must be finite and <= 0: every decay factor is then at most 1 and no exponent a
/// kernel evaluates is positive. The CPU kernels check the gates as they load them, at no extra pass over the
/// tensor, and then name the first offender with <see cref="Require"/>.
/// </summary>
public static class LogGates
{
    /// <summary>Throws an ArgumentException naming the first value that is NaN, positive or −∞.</summary>
    public static void Require(ReadOnlySpan<float> values, string name)
    {
        int i = 0;
        ref float start = ref MemoryMarshal.GetReference(values);
        for (; i + 16 <= values.Length; i += 16)
            if (!All(ValidLanes(Vector512.LoadUnsafe(ref start, (nuint)i)))) break;
        for (; i < values.Length; i++)
            if (!IsValid(values[i]))
                throw ValueRules.Refusal(ValueRule.LogGate, name, values[i], i);
    }

    /// <summary>
    /// Throws for gates a kernel found invalid while it ran: names the first offender, or, when there is none left
    /// (the tensor changed during the call), says so; never returns.
    /// </summary>
    public static void Refuse(ReadOnlySpan<float> values, string name)
    {
        Require(values, name);
        throw new ArgumentException($"{name}: a log gate was not finite and <= 0 while the call ran (was {name} written during the call?)", name);
    }

    /// <summary>All bits set in the lanes that hold a valid log gate (−∞ < x <= 0; NaN is not).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ValidLanes(Vector512<float> x) =>
        Vector512.LessThanOrEqual(x, Vector512<float>.Zero) & Vector512.GreaterThan(x, Vector512.Create(float.NegativeInfinity));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsValid(float x) => x <= 0f && x > float.NegativeInfinity;

    /// <summary>dst = exp(g) over one row of kd gates, padded with ones to kp (a multiple of 16); false when a gate is not valid.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe bool ExpRow(float* dst, float* g, int kd, int kp)
    {
        SimdOps.CopyPadded(dst, g, kd, kp);
        var valid = Vector512<float>.AllBitsSet;
        for (int c = 0; c < kp; c += 16)
        {
            var x = Vector512.Load(dst + c);
            valid &= ValidLanes(x);
            SimdMath.ExpNonPositive(x).Store(dst + c);
        }
        return All(valid);
    }

    /// <summary>Whether every lane of a <see cref="ValidLanes"/> mask (or their conjunction) is set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool All(Vector512<float> validLanes) => Vector512.EqualsAll(validLanes.AsInt32(), Vector512<int>.AllBitsSet);
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// Log gates (log-space decays) must be finite and &lt;= 0: every decay factor is then at most 1 and no exponent a
/// kernel evaluates is positive. A call checks them before its kernels run (<see cref="AllValid"/>), the CPU kernels
/// again as they load them, and a refusal names the first offender (<see cref="Refuse"/>).
/// </summary>
public static class LogGates
{
    /// <summary>True when every value is a valid log gate: a pass with no branch but the loop's, four vectors at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool AllValid(ReadOnlySpan<float> values)
    {
        ref float start = ref MemoryMarshal.GetReference(values);
        var valid = Vector512<float>.AllBitsSet;
        int i = 0;
        for (; i + 64 <= values.Length; i += 64)
            valid &= ValidLanes(Vector512.LoadUnsafe(ref start, (nuint)i)) & ValidLanes(Vector512.LoadUnsafe(ref start, (nuint)(i + 16)))
                & ValidLanes(Vector512.LoadUnsafe(ref start, (nuint)(i + 32))) & ValidLanes(Vector512.LoadUnsafe(ref start, (nuint)(i + 48)));
        for (; i + 16 <= values.Length; i += 16) valid &= ValidLanes(Vector512.LoadUnsafe(ref start, (nuint)i));
        bool all = All(valid);
        for (; i < values.Length; i++) all &= IsValid(Unsafe.Add(ref start, i));
        return all;
    }

    /// <summary>
    /// Throws for gates found invalid: an ArgumentException naming the first value that is NaN, positive or −∞, or, when
    /// there is none left (the tensor changed during the call), saying so; never returns.
    /// </summary>
    public static void Refuse(ReadOnlySpan<float> values, string name)
    {
        for (int i = 0; i < values.Length; i++)
            if (!IsValid(values[i]))
                throw ValueRules.Refusal(ValueRule.LogGate, name, values[i], i);
        throw new ArgumentException($"{name}: a log gate was not finite and <= 0 while the call ran (was {name} written during the call?)", name);
    }

    /// <summary>All bits set in the lanes that hold a valid log gate (−∞ &lt; x &lt;= 0; NaN is not).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ValidLanes(Vector512<float> x) =>
        Vector512.LessThanOrEqual(x, Vector512<float>.Zero) & Vector512.GreaterThan(x, Vector512.Create(float.NegativeInfinity));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsValid(float x) => x <= 0f && x > float.NegativeInfinity;

    /// <summary>
    /// The chunked forms' running sums of log gates add each gate no lower than this. exp(g) of a gate this low is 0 in
    /// fp32 (below half the smallest subnormal), and so is every factor across its token either way, since the sum drops by
    /// at least 110 there; but a gate of, say, −1e30 would absorb every later gate of the chunk into the sum (−1e30 − 1 is
    /// −1e30 in fp32) and make the factors between later tokens 1, and 64 gates of −1e37 would sum to −∞.
    /// </summary>
    public const float SumFloor = -110f;

    /// <summary>A valid log gate as a running sum adds it: no lower than <see cref="SumFloor"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Summand(float gate) => gate < SumFloor ? SumFloor : gate;

    /// <summary>
    /// The decay e^g over one row of kd gates in <see cref="SimdMath.DecayParts"/>' two parts, near and far, each padded with
    /// zeros to kp (a multiple of 16); false when a gate is not valid.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe bool DecayRow(float* near, float* far, float* g, int kd, int kp)
    {
        SimdOps.CopyPadded(near, g, kd, kp);
        var valid = Vector512<float>.AllBitsSet;
        for (int c = 0; c < kp; c += 16)
        {
            var x = Vector512.Load(near + c);
            valid &= ValidLanes(x);
            SimdMath.DecayParts(x, out var farPart).Store(near + c);
            farPart.Store(far + c);
        }
        return All(valid);
    }

    /// <summary>Whether every lane of a <see cref="ValidLanes"/> mask (or their conjunction) is set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool All(Vector512<float> validLanes) => Vector512.EqualsAll(validLanes.AsInt32(), Vector512<int>.AllBitsSet);
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Common;

/// <summary>Vector math for the kernels' decay factors.</summary>
public static class SimdMath
{
    /// <summary>
    /// exp(x) for x &lt;= 0, as the kernels only ever evaluate: n = round(x·log2 e), r = x − n·ln 2 (two-part ln 2, so r
    /// is exact to a few ulp), exp(r) by its degree-7 Taylor polynomial on |r| &lt;= ln2/2, times 2^n (relative error
    /// about 2e-7). Arguments below −87.3, whose exp is under the smallest normal float, give 0 (an absolute error
    /// under 1.2e-38), so no denormal reaches the products. Several times faster than Vector512.Exp on .NET 10.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ExpNonPositive(Vector512<float> x)
    {
        var p = Reduce(x, out var r, out var n, out var inRange);
        return Vector512.ConditionalSelect(inRange, Vector512.MultiplyAddEstimate(p, r, Vector512<float>.One) * PowerOfTwo(n), Vector512<float>.Zero);
    }

    /// <summary>
    /// The decay e^x (x &lt;= 0) in two parts, so that S e^x = S + near S + far S keeps its digits at both ends: near = e^x − 1
    /// and far = 0 where e^x &gt;= 1/2, near = −1 and far = e^x below. e^x − 1 alone keeps a decay near 1 but rounds one below
    /// 3e-8 to exactly −1 (the decayed state dropped); e^x alone rounds a decay near 1 to 1 or its neighbour.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> DecayParts(Vector512<float> x, out Vector512<float> far)
    {
        var p = Reduce(x, out var r, out var n, out var inRange);
        var power = PowerOfTwo(n);
        var pr = p * r;
        var nearOne = Vector512.GreaterThanOrEqual(x, Vector512.Create(-Ln2));
        far = Vector512.ConditionalSelect(nearOne | ~inRange, Vector512<float>.Zero, Vector512.MultiplyAddEstimate(power, pr, power));
        return Vector512.ConditionalSelect(nearOne, Vector512.MultiplyAddEstimate(power, pr, power - Vector512<float>.One), Vector512.Create(-1f));
    }

    /// <summary><see cref="DecayParts(Vector512{float}, out Vector512{float})"/>'s near part of one value: e^x − 1 where e^x &gt;= 1/2, else −1.</summary>
    public static float DecayNear(float x) => x >= -Ln2 ? ExpM1NonPositive(x) : -1f;

    /// <summary><see cref="DecayParts(Vector512{float}, out Vector512{float})"/>'s far part of one value: e^x where e^x &lt; 1/2, else 0.</summary>
    public static float DecayFar(float x) => x >= -Ln2 ? 0f : MathF.Exp(x);

    /// <summary>
    /// x = n ln 2 + r with |r| &lt;= ln2/2 (x raised to −87.3 first; <paramref name="inRange"/> marks the lanes that were not),
    /// and p with e^r = 1 + r p: the Taylor polynomial of degree 7 but its last step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Reduce(Vector512<float> x, out Vector512<float> r, out Vector512<float> n, out Vector512<float> inRange)
    {
        inRange = Vector512.GreaterThanOrEqual(x, Vector512.Create(ExpFloor));
        x = Vector512.Max(x, Vector512.Create(ExpFloor));
        n = Vector512.Round(x * Vector512.Create(Log2E));
        r = Vector512.MultiplyAddEstimate(n, Vector512.Create(Ln2High), x);
        r = Vector512.MultiplyAddEstimate(n, Vector512.Create(Ln2Low), r);
        var p = Vector512.Create(T7);
        p = Vector512.MultiplyAddEstimate(p, r, Vector512.Create(T6));
        p = Vector512.MultiplyAddEstimate(p, r, Vector512.Create(T5));
        p = Vector512.MultiplyAddEstimate(p, r, Vector512.Create(T4));
        p = Vector512.MultiplyAddEstimate(p, r, Vector512.Create(T3));
        p = Vector512.MultiplyAddEstimate(p, r, Vector512.Create(T2));
        return Vector512.MultiplyAddEstimate(p, r, Vector512<float>.One);
    }

    /// <summary>
    /// e^x − 1 for x &lt;= 0, one value, on the CPU and in the GPU kernels: exp's Taylor polynomial without its 1 above −0.35
    /// (truncated at degree 7, within 2e-8 of the value there), e^x − 1 below, where it cannot cancel.
    /// </summary>
    public static float ExpM1NonPositive(float x) =>
        x > -0.35f ? x * (1f + x * (T2 + x * (T3 + x * (T4 + x * (T5 + x * (T6 + x * T7)))))) : MathF.Exp(x) - 1f;

    private const float Ln2 = 0.693147180559945309f, ExpFloor = -87.3f, Log2E = 1.44269504088896341f, Ln2High = -0.693145751953125f, Ln2Low = -1.428606765330187e-06f;

    /// <summary>exp(r)'s Taylor coefficients 1/j! of degree j = 2..7 (those of degree 0 and 1 are 1).</summary>
    private const float T7 = 1f / 5040, T6 = 1f / 720, T5 = 1f / 120, T4 = 1f / 24, T3 = 1f / 6, T2 = 0.5f;

    /// <summary>2^n for whole n in [−126, 127] (the exponent field set directly; no saturating conversion needed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> PowerOfTwo(Vector512<float> n) =>
        ((Vector512.ConvertToInt32Native(n) + Vector512.Create(127)) << 23).AsSingle();

    /// <summary>
    /// 1 / (1 + e^−x), its exponent e^−|x| kept &lt;= 1: r = 1 / (1 + e^−|x|) for x >= 0, e^−|x| · r below. With AVX-512 the
    /// reciprocal of 1 + e^−|x| (in [1, 2]) is the 14-bit estimate refined by one Newton step (within 2 ulp), which issues
    /// several times faster than a division.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Sigmoid(Vector512<float> x)
    {
        var e = ExpNonPositive(-Vector512.Abs(x));
        var r = Reciprocal(Vector512<float>.One + e);
        return Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x, Vector512<float>.Zero), r, e * r);
    }

    /// <summary>x · sigmoid(x) (SiLU, Swish).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Silu(Vector512<float> x) => x * Sigmoid(x);

    /// <summary>
    /// y = sigmoid(x), or x · sigmoid(x) with <paramref name="silu"/>, for <paramref name="count"/> floats (y may be x); each
    /// vector exactly as <see cref="Sigmoid(Vector512{float})"/> gives it. One sigmoid is a chain of some thirty dependent
    /// operations, longer than the core's out-of-order window can overlap with the next one's, so four vectors go through
    /// the same steps side by side: about 1.5× the throughput of one at a time (Zen 5).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Sigmoid(float* x, float* y, int count, bool silu)
    {
        int i = 0;
        // The steps of ExpNonPositive and Sigmoid(Vector512) on four vectors, interleaved.
        for (; i + 64 <= count; i += 64)
        {
            Vector512<float> x0 = Vector512.Load(x + i), x1 = Vector512.Load(x + i + 16), x2 = Vector512.Load(x + i + 32), x3 = Vector512.Load(x + i + 48);
            Vector512<float> a0 = -Vector512.Abs(x0), a1 = -Vector512.Abs(x1), a2 = -Vector512.Abs(x2), a3 = -Vector512.Abs(x3);
            var low = Vector512.Create(ExpFloor);
            Vector512<float> in0 = Vector512.GreaterThanOrEqual(a0, low), in1 = Vector512.GreaterThanOrEqual(a1, low);
            Vector512<float> in2 = Vector512.GreaterThanOrEqual(a2, low), in3 = Vector512.GreaterThanOrEqual(a3, low);
            a0 = Vector512.Max(a0, low); a1 = Vector512.Max(a1, low); a2 = Vector512.Max(a2, low); a3 = Vector512.Max(a3, low);
            var log2e = Vector512.Create(Log2E);
            Vector512<float> n0 = Vector512.Round(a0 * log2e), n1 = Vector512.Round(a1 * log2e), n2 = Vector512.Round(a2 * log2e), n3 = Vector512.Round(a3 * log2e);
            var ln2High = Vector512.Create(Ln2High);
            var ln2Low = Vector512.Create(Ln2Low);
            Vector512<float> r0 = Vector512.MultiplyAddEstimate(n0, ln2High, a0), r1 = Vector512.MultiplyAddEstimate(n1, ln2High, a1);
            Vector512<float> r2 = Vector512.MultiplyAddEstimate(n2, ln2High, a2), r3 = Vector512.MultiplyAddEstimate(n3, ln2High, a3);
            r0 = Vector512.MultiplyAddEstimate(n0, ln2Low, r0); r1 = Vector512.MultiplyAddEstimate(n1, ln2Low, r1);
            r2 = Vector512.MultiplyAddEstimate(n2, ln2Low, r2); r3 = Vector512.MultiplyAddEstimate(n3, ln2Low, r3);
            Vector512<float> p0 = Vector512.Create(T7), p1 = p0, p2 = p0, p3 = p0, c = Vector512.Create(T6);
            p0 = Vector512.MultiplyAddEstimate(p0, r0, c); p1 = Vector512.MultiplyAddEstimate(p1, r1, c); p2 = Vector512.MultiplyAddEstimate(p2, r2, c); p3 = Vector512.MultiplyAddEstimate(p3, r3, c);
            c = Vector512.Create(T5);
            p0 = Vector512.MultiplyAddEstimate(p0, r0, c); p1 = Vector512.MultiplyAddEstimate(p1, r1, c); p2 = Vector512.MultiplyAddEstimate(p2, r2, c); p3 = Vector512.MultiplyAddEstimate(p3, r3, c);
            c = Vector512.Create(T4);
            p0 = Vector512.MultiplyAddEstimate(p0, r0, c); p1 = Vector512.MultiplyAddEstimate(p1, r1, c); p2 = Vector512.MultiplyAddEstimate(p2, r2, c); p3 = Vector512.MultiplyAddEstimate(p3, r3, c);
            c = Vector512.Create(T3);
            p0 = Vector512.MultiplyAddEstimate(p0, r0, c); p1 = Vector512.MultiplyAddEstimate(p1, r1, c); p2 = Vector512.MultiplyAddEstimate(p2, r2, c); p3 = Vector512.MultiplyAddEstimate(p3, r3, c);
            c = Vector512.Create(T2);
            p0 = Vector512.MultiplyAddEstimate(p0, r0, c); p1 = Vector512.MultiplyAddEstimate(p1, r1, c); p2 = Vector512.MultiplyAddEstimate(p2, r2, c); p3 = Vector512.MultiplyAddEstimate(p3, r3, c);
            c = Vector512<float>.One;
            p0 = Vector512.MultiplyAddEstimate(p0, r0, c); p1 = Vector512.MultiplyAddEstimate(p1, r1, c); p2 = Vector512.MultiplyAddEstimate(p2, r2, c); p3 = Vector512.MultiplyAddEstimate(p3, r3, c);
            p0 = Vector512.MultiplyAddEstimate(p0, r0, c); p1 = Vector512.MultiplyAddEstimate(p1, r1, c); p2 = Vector512.MultiplyAddEstimate(p2, r2, c); p3 = Vector512.MultiplyAddEstimate(p3, r3, c);
            var zero = Vector512<float>.Zero;
            Vector512<float> e0 = Vector512.ConditionalSelect(in0, p0 * PowerOfTwo(n0), zero), e1 = Vector512.ConditionalSelect(in1, p1 * PowerOfTwo(n1), zero);
            Vector512<float> e2 = Vector512.ConditionalSelect(in2, p2 * PowerOfTwo(n2), zero), e3 = Vector512.ConditionalSelect(in3, p3 * PowerOfTwo(n3), zero);
            Vector512<float> q0 = Reciprocal(Vector512<float>.One + e0), q1 = Reciprocal(Vector512<float>.One + e1);
            Vector512<float> q2 = Reciprocal(Vector512<float>.One + e2), q3 = Reciprocal(Vector512<float>.One + e3);
            q0 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x0, zero), q0, e0 * q0);
            q1 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x1, zero), q1, e1 * q1);
            q2 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x2, zero), q2, e2 * q2);
            q3 = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x3, zero), q3, e3 * q3);
            (silu ? x0 * q0 : q0).Store(y + i);
            (silu ? x1 * q1 : q1).Store(y + i + 16);
            (silu ? x2 * q2 : q2).Store(y + i + 32);
            (silu ? x3 * q3 : q3).Store(y + i + 48);
        }
        for (; i + 16 <= count; i += 16)
        {
            var v = Vector512.Load(x + i);
            (silu ? v * Sigmoid(v) : Sigmoid(v)).Store(y + i);
        }
        for (; i < count; i++) y[i] = silu ? Silu(x[i]) : Sigmoid(x[i]);
    }

    /// <summary>1 / d for d in [1, 2]: with AVX-512 the 14-bit estimate refined by one Newton step (within 2 ulp).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Reciprocal(Vector512<float> d)
    {
        if (!Avx512F.IsSupported) return Vector512<float>.One / d;
        var r = Avx512F.Reciprocal14(d);
        return Vector512.MultiplyAddEstimate(r, Vector512.MultiplyAddEstimate(-d, r, Vector512<float>.One), r);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sigmoid(float x)
    {
        float e = MathF.Exp(-MathF.Abs(x)), r = 1f / (1f + e);
        return x >= 0 ? r : e * r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Silu(float x) => x * Sigmoid(x);

    /// <summary>ln(1 + e^x) = max(x, 0) + ln(1 + e^−|x|), the exponent &lt;= 0.</summary>
    public static float Softplus(float x)
    {
        float e = MathF.Exp(-MathF.Abs(x)), u = 1f + e;
        // ln(1 + e) with e's digits kept (Kahan): ln(u) · e / (u − 1) cancels the rounding of u = 1 + e.
        return MathF.Max(x, 0f) + (u == 1f ? e : MathF.Log(u) * (e / (u - 1f)));
    }
}

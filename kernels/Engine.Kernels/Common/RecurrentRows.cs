using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// The decode step every recurrent kernel shares, on a slice of the state S [kd × ld] (row c at s + c·ld):
///   S_c = src_c + (m_c · src_c + k_c · x) where e^g >= 1/2,   S_c = f_c · src_c + k_c · x below (m_c = −1),   acc = Σ_c q_c · S_c
/// one pass, the slice's accumulators in registers. src is the state before the step: S itself, or another
/// buffer with the same layout (a call's initial state, so it need not be copied first). m and f are the decay's near and
/// far parts (<see cref="SimdMath.DecayParts"/>), per row (decayStride 1) or one value (decayStride 0): a decay near 1
/// multiplied in as e^g rounded to fp32 would drift the state by that rounding at every token, and e^g − 1 alone would
/// drop a state decayed below 3e-8. The near part joins the token's write before the state is added: src + m · src rounded
/// on its own drops a decay below half an ulp of the state (g above about −6e-8), at every token, the same way.
/// x is read before acc is written, so they may share memory.
/// Slices are four vectors of the machine's width (<see cref="ILanes{TSelf}"/>), then single vectors.
/// </summary>
public static unsafe class RecurrentRows
{
    /// <summary>Runs the step over every column of a padded row (vp a multiple of 16).</summary>
    public static void UpdateAndRead(float* src, float* s, int vp, int kd, float* x, float* near, float* far, int decayStride, float* k, float* q, float* acc)
    {
        if (SimdWidths.Wide) UpdateAndRead<Lanes512>(src, s, vp, kd, x, near, far, decayStride, k, q, acc);
        else UpdateAndRead<Lanes256>(src, s, vp, kd, x, near, far, decayStride, k, q, acc);
    }

    /// <summary>
    /// Whether a token's write k xᵀ may pass half fp32's range: the near form's m · S + k x (|m| &lt;= 1/2) can then overflow
    /// although S + m S + k x fits, where a state near fp32's range meets a write that cancels it.
    /// </summary>
    public static bool WriteMayOverflowNearForm(float* k, int kd, float* x, int xd) =>
        MathF.Abs(TensorPrimitives.MaxMagnitude(new ReadOnlySpan<float>(k, kd))) * MathF.Abs(TensorPrimitives.MaxMagnitude(new ReadOnlySpan<float>(x, xd)))
            > float.MaxValue / 2;

    /// <summary>Puts every row's decay in the far form, one factor e^g = 1 + m + f with m = −1: m · S + k x is not formed.</summary>
    public static void UseOneFactor(float* near, float* far, int kd)
    {
        for (int c = 0; c < kd; c++)
        {
            far[c] = 1f + near[c] + far[c];
            near[c] = -1f;
        }
    }

    /// <summary>acc = Σ_c q_c · S_c over every column: further query heads reading a state already updated.</summary>
    public static void Read(float* s, int vp, int kd, float* q, float* acc)
    {
        if (SimdWidths.Wide) Read<Lanes512>(s, vp, kd, q, acc);
        else Read<Lanes256>(s, vp, kd, q, acc);
    }

    /// <summary>
    /// The step on a value-major state [vd, kd] (kd a multiple of 16), row by row, each row of Sᵀ (value dim j) updated and
    /// read while it is in L1: decayed by the decay's parts <paramref name="near"/> and <paramref name="far"/> (or the per-key ones
    /// <paramref name="keyNear"/>, <paramref name="keyFar"/>) and added u_j k as row + (m row + u_j k), or f row + u_j k where m is −1
    /// (as <see cref="UpdateAndRead"/>), with u_j = x_j, or, given
    /// <paramref name="predictKey"/>, the delta rule's u_j = β (x_j − e · row · predictKey) from the old row (e = 1 + near + far,
    /// or 1 with per-key factors, which predictKey then carries); each query head's acc_j = row · q. x is acc[0..vd), read before acc[j] is written; query head gi reads
    /// queries + gi·kd and writes acc + gi·ldo.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void UpdateValueRows(float* source, float* state, int kd, int vd, float near, float far, float* keyNear, float* keyFar, float* key,
        float* predictKey, float beta, float* queries, int group, float* acc, int ldo)
    {
        Vector512<float> scalarNear = Vector512.Create(near), scalarFar = Vector512.Create(far);
        for (int j = 0; j < vd; j++)
        {
            float* src = source + (long)j * kd, dst = state + (long)j * kd;
            float u = acc[j];
            if (predictKey != null)
            {
                var dot = Vector512<float>.Zero;
                for (int c = 0; c < kd; c += 16) dot = Vector512.MultiplyAddEstimate(Vector512.Load(src + c), Vector512.Load(predictKey + c), dot);
                float predicted = Vector512.Sum(dot);
                u = beta * (u - (keyNear == null ? float.MultiplyAddEstimate(far, predicted, float.MultiplyAddEstimate(near, predicted, predicted)) : predicted));
            }
            var uv = Vector512.Create(u);
            for (int c = 0; c < kd; c += 16)
            {
                var old = Vector512.Load(src + c);
                var write = uv * Vector512.Load(key + c);
                // A per-head decay takes one form for the whole row; per-key factors choose theirs lane by lane.
                var next = keyNear != null ? Decayed(Vector512.Load(keyNear + c), Vector512.Load(keyFar + c), old, write)
                    : near == -1f ? Vector512.MultiplyAddEstimate(scalarFar, old, write)
                    : old + Vector512.MultiplyAddEstimate(scalarNear, old, write);
                next.Store(dst + c);
            }
            for (int gi = 0; gi < group; gi++)
            {
                float* q = queries + (long)gi * kd;
                var read = Vector512<float>.Zero;
                for (int c = 0; c < kd; c += 16) read = Vector512.MultiplyAddEstimate(Vector512.Load(dst + c), Vector512.Load(q + c), read);
                acc[(long)gi * ldo + j] = Vector512.Sum(read);
            }
        }
    }

    /// <summary>old decayed by its parts plus write: f old + write where m is −1, else old + (m old + write).</summary>
    private static Vector512<float> Decayed(Vector512<float> m, Vector512<float> f, Vector512<float> old, Vector512<float> write) =>
        Vector512.ConditionalSelect(Vector512.Equals(m, Vector512.Create(-1f)), Vector512.MultiplyAddEstimate(f, old, write),
            old + Vector512.MultiplyAddEstimate(m, old, write));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void UpdateAndRead<TV>(float* src, float* s, int vp, int kd, float* x, float* near, float* far, int decayStride, float* k, float* q, float* acc)
        where TV : unmanaged, ILanes<TV>
    {
        int d = 0, n = TV.Count;
        for (; d + 4 * n <= vp; d += 4 * n) UpdateAndRead4<TV>(src + d, s + d, vp, kd, x + d, near, far, decayStride, k, q, acc + d);
        for (; d < vp; d += n) UpdateAndRead1<TV>(src + d, s + d, vp, kd, x + d, near, far, decayStride, k, q, acc + d);
    }

    /// <summary>A slice of four vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void UpdateAndRead4<TV>(float* src, float* s, int ld, int kd, float* x, float* near, float* far, int decayStride, float* k, float* q, float* acc)
        where TV : unmanaged, ILanes<TV>
    {
        int n = TV.Count;
        var x0 = TV.Load(x); var x1 = TV.Load(x + n); var x2 = TV.Load(x + 2 * n); var x3 = TV.Load(x + 3 * n);
        TV a0 = TV.Zero, a1 = TV.Zero, a2 = TV.Zero, a3 = TV.Zero;
        for (int c = 0; c < kd; c++, s += ld, src += ld)
        {
            var mc = TV.Broadcast(near[c * decayStride]);
            var fc = TV.Broadcast(far[c * decayStride]);
            var kc = TV.Broadcast(k[c]);
            var qc = TV.Broadcast(q[c]);
            TV o0 = TV.Load(src), o1 = TV.Load(src + n), o2 = TV.Load(src + 2 * n), o3 = TV.Load(src + 3 * n);
            TV s0, s1, s2, s3;
            if (near[c * decayStride] == -1f)
            {
                s0 = TV.Fma(fc, o0, kc * x0); s1 = TV.Fma(fc, o1, kc * x1);
                s2 = TV.Fma(fc, o2, kc * x2); s3 = TV.Fma(fc, o3, kc * x3);
            }
            else
            {
                s0 = o0 + TV.Fma(mc, o0, kc * x0); s1 = o1 + TV.Fma(mc, o1, kc * x1);
                s2 = o2 + TV.Fma(mc, o2, kc * x2); s3 = o3 + TV.Fma(mc, o3, kc * x3);
            }
            s0.Store(s); s1.Store(s + n); s2.Store(s + 2 * n); s3.Store(s + 3 * n);
            a0 = TV.Fma(qc, s0, a0); a1 = TV.Fma(qc, s1, a1);
            a2 = TV.Fma(qc, s2, a2); a3 = TV.Fma(qc, s3, a3);
        }
        a0.Store(acc); a1.Store(acc + n); a2.Store(acc + 2 * n); a3.Store(acc + 3 * n);
    }

    /// <summary>A slice of one vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void UpdateAndRead1<TV>(float* src, float* s, int ld, int kd, float* x, float* near, float* far, int decayStride, float* k, float* q, float* acc)
        where TV : unmanaged, ILanes<TV>
    {
        var x0 = TV.Load(x);
        var a0 = TV.Zero;
        for (int c = 0; c < kd; c++, s += ld, src += ld)
        {
            var o0 = TV.Load(src);
            var kx = TV.Broadcast(k[c]) * x0;
            float m = near[c * decayStride];
            var s0 = m == -1f ? TV.Fma(TV.Broadcast(far[c * decayStride]), o0, kx) : o0 + TV.Fma(TV.Broadcast(m), o0, kx);
            s0.Store(s);
            a0 = TV.Fma(TV.Broadcast(q[c]), s0, a0);
        }
        a0.Store(acc);
    }

    /// <summary>Four vectors of columns at a time: four independent sums rather than one chain per column block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Read<TV>(float* s, int vp, int kd, float* q, float* acc) where TV : unmanaged, ILanes<TV>
    {
        int d = 0, n = TV.Count;
        for (; d + 4 * n <= vp; d += 4 * n)
        {
            TV a0 = TV.Zero, a1 = TV.Zero, a2 = TV.Zero, a3 = TV.Zero;
            float* row = s + d;
            for (int c = 0; c < kd; c++, row += vp)
            {
                var qc = TV.Broadcast(q[c]);
                a0 = TV.Fma(qc, TV.Load(row), a0); a1 = TV.Fma(qc, TV.Load(row + n), a1);
                a2 = TV.Fma(qc, TV.Load(row + 2 * n), a2); a3 = TV.Fma(qc, TV.Load(row + 3 * n), a3);
            }
            a0.Store(acc + d); a1.Store(acc + d + n); a2.Store(acc + d + 2 * n); a3.Store(acc + d + 3 * n);
        }
        for (; d < vp; d += n)
        {
            var sum = TV.Zero;
            for (int c = 0; c < kd; c++) sum = TV.Fma(TV.Broadcast(q[c]), TV.Load(s + (long)c * vp + d), sum);
            sum.Store(acc + d);
        }
    }
}

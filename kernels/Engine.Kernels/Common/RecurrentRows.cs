using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// The decode step every recurrent kernel shares, on a slice of the state S [kd × ld] (row c at s + c·ld):
///   S_c = decay_c · src_c + k_c · x,   acc = Σ_c q_c · S_c
/// one pass, the slice's accumulators in registers. src is the state before the step: S itself, or another
/// buffer with the same layout (a call's initial state, so it need not be copied first). The decay is per row
/// (decayStride 1) or one value (decayStride 0). x is read before acc is written, so they may share memory.
/// </summary>
public static unsafe class RecurrentRows
{
    /// <summary>A 64-column slice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void UpdateAndRead4(float* src, float* s, int ld, int kd, float* x, float* decay, int decayStride, float* k, float* q, float* acc)
    {
        var x0 = Vector512.Load(x); var x1 = Vector512.Load(x + 16); var x2 = Vector512.Load(x + 32); var x3 = Vector512.Load(x + 48);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int c = 0; c < kd; c++, s += ld, src += ld)
        {
            var dc = Vector512.Create(decay[c * decayStride]);
            var kc = Vector512.Create(k[c]);
            var qc = Vector512.Create(q[c]);
            var s0 = Vector512.FusedMultiplyAdd(kc, x0, dc * Vector512.Load(src));
            var s1 = Vector512.FusedMultiplyAdd(kc, x1, dc * Vector512.Load(src + 16));
            var s2 = Vector512.FusedMultiplyAdd(kc, x2, dc * Vector512.Load(src + 32));
            var s3 = Vector512.FusedMultiplyAdd(kc, x3, dc * Vector512.Load(src + 48));
            s0.Store(s); s1.Store(s + 16); s2.Store(s + 32); s3.Store(s + 48);
            a0 = Vector512.FusedMultiplyAdd(qc, s0, a0); a1 = Vector512.FusedMultiplyAdd(qc, s1, a1);
            a2 = Vector512.FusedMultiplyAdd(qc, s2, a2); a3 = Vector512.FusedMultiplyAdd(qc, s3, a3);
        }
        a0.Store(acc); a1.Store(acc + 16); a2.Store(acc + 32); a3.Store(acc + 48);
    }

    /// <summary>A 16-column slice.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void UpdateAndRead1(float* src, float* s, int ld, int kd, float* x, float* decay, int decayStride, float* k, float* q, float* acc)
    {
        var x0 = Vector512.Load(x);
        var a0 = Vector512<float>.Zero;
        for (int c = 0; c < kd; c++, s += ld, src += ld)
        {
            var s0 = Vector512.FusedMultiplyAdd(Vector512.Create(k[c]), x0, Vector512.Create(decay[c * decayStride]) * Vector512.Load(src));
            s0.Store(s);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[c]), s0, a0);
        }
        a0.Store(acc);
    }

    /// <summary>Runs the step over every column of a padded row (vp a multiple of 16), 64 columns at a time.</summary>
    public static void UpdateAndRead(float* src, float* s, int vp, int kd, float* x, float* decay, int decayStride, float* k, float* q, float* acc)
    {
        int d = 0;
        for (; d + 64 <= vp; d += 64) UpdateAndRead4(src + d, s + d, vp, kd, x + d, decay, decayStride, k, q, acc + d);
        for (; d < vp; d += 16) UpdateAndRead1(src + d, s + d, vp, kd, x + d, decay, decayStride, k, q, acc + d);
    }

    /// <summary>acc = Σ_c q_c · S_c over every column: further query heads reading a state already updated.</summary>
    public static void Read(float* s, int vp, int kd, float* q, float* acc)
    {
        for (int d = 0; d < vp; d += 16)
        {
            var sum = Vector512<float>.Zero;
            for (int c = 0; c < kd; c++) sum = Vector512.FusedMultiplyAdd(Vector512.Create(q[c]), Vector512.Load(s + (long)c * vp + d), sum);
            sum.Store(acc + d);
        }
    }
}

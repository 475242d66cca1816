using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// T = (I + A)⁻¹ for a strictly lower A of at most 64 rows (the WY/UT form of a chunk of Householder-like updates).
/// </summary>
public static unsafe class UnitLowerInverse
{
    /// <summary>
    /// T = (I + A)⁻¹ for strictly lower A [len × len] (row stride lda; its diagonal and above are not read) by forward
    /// substitution: T_i = e_i − Σ_{m&lt;i} A_im T_m, into t (row stride ldt), each row zero right of its diagonal up
    /// to the next multiple of 16. A row's sums stay in registers (at most 4 vectors wide), two sets of them so
    /// consecutive m do not wait on each other.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Invert(float* lower, int lda, float* t, int ldt, int len)
    {
        int lenPadded = HeadLayout.RoundUp16(len);
        for (int i = 0; i < len; i++)
        {
            float* ti = t + (long)i * ldt, a = lower + (long)i * lda;
            Vector512<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
            int m = 0;
            for (; m + 2 <= i; m += 2)
            {
                float* tm = t + (long)m * ldt;
                var fe = Vector512.Create(a[m]);
                var fo = Vector512.Create(a[m + 1]);
                e0 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm), e0);
                o0 = Vector512.MultiplyAddEstimate(fo, Vector512.Load(tm + ldt), o0);
                if (m + 1 < 16) continue;
                e1 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm + 16), e1);
                o1 = Vector512.MultiplyAddEstimate(fo, Vector512.Load(tm + ldt + 16), o1);
                if (m + 1 < 32) continue;
                e2 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm + 32), e2);
                o2 = Vector512.MultiplyAddEstimate(fo, Vector512.Load(tm + ldt + 32), o2);
                if (m + 1 < 48) continue;
                e3 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm + 48), e3);
                o3 = Vector512.MultiplyAddEstimate(fo, Vector512.Load(tm + ldt + 48), o3);
            }
            if (m < i)
            {
                float* tm = t + (long)m * ldt;
                var fe = Vector512.Create(a[m]);
                e0 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm), e0);
                if (m >= 16) e1 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm + 16), e1);
                if (m >= 32) e2 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm + 32), e2);
                if (m >= 48) e3 = Vector512.MultiplyAddEstimate(fe, Vector512.Load(tm + 48), e3);
            }
            (-(e0 + o0)).Store(ti);
            if (lenPadded > 16) (-(e1 + o1)).Store(ti + 16);
            if (lenPadded > 32) (-(e2 + o2)).Store(ti + 32);
            if (lenPadded > 48) (-(e3 + o3)).Store(ti + 48);
            ti[i] = 1f;
        }
    }
}

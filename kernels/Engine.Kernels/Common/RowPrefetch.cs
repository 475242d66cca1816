using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Common;

/// <summary>
/// Asks for rows of a [tokens, heads, dim] tensor ahead of time, into L2. The rows of one head are a token row
/// (heads · dim floats or more) apart, each in its own 4 KB page at the usual sizes, which the hardware prefetcher does not cross;
/// a kernel asks for the rows of its next unit of work a share at a time while it computes the current one.
/// </summary>
public static unsafe class RowPrefetch
{
    /// <summary>
    /// Share <paramref name="step"/> of <paramref name="steps"/> of the next unit's rows of q (the query heads of the value
    /// head's output heads), k (its key head), v and, when not null, a per-key-dim gate g; all [tokens, heads, dim], q, k
    /// and v with the token rows <paramref name="rows"/>.
    /// </summary>
    public static void NextUnit(HeadLayout heads, ChunkUnit chunk, int step, int steps, TokenRows rows, float* q, float* k, float* v, float* keyGate)
    {
        int kd = heads.KeyDim, vd = heads.ValueDim, h = chunk.NextHead;
        var (from, to) = chunk.NextShare(step, steps);
        long token = chunk.NextStart + from;
        Rows(k + token * rows.K + (long)heads.KeyHeadOf(h) * kd, rows.K, to - from, kd);
        Rows(v + token * rows.V + (long)h * vd, rows.V, to - from, vd);
        if (keyGate != null) Rows(keyGate + (token * heads.ValueHeads + h) * kd, heads.ValueHeads * kd, to - from, kd);
        Rows(q + token * rows.Q + (long)heads.QueryHeadOf(h * heads.Group) * kd, rows.Q, to - from, kd * heads.Group);
    }

    /// <summary><paramref name="count"/> rows of <paramref name="floats"/> floats, <paramref name="stride"/> floats apart.</summary>
    private static void Rows(float* first, long stride, int count, int floats)
    {
        if (!Sse.IsSupported) return;
        for (int r = 0; r < count; r++, first += stride)
            for (int f = 0; f < floats; f += 16) Sse.Prefetch1(first + f);
    }
}

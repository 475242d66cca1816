using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Common;

/// <summary>
/// Asks for rows of a [tokens, heads, dim] tensor ahead of time, into L2. The rows of one head are heads · dim
/// floats apart, each in its own 4 KB page at the usual sizes, which the hardware prefetcher does not cross;
/// a kernel asks for the rows of its next unit of work a share at a time while it computes the current one.
/// </summary>
public static unsafe class RowPrefetch
{
    /// <summary>
    /// Share <paramref name="step"/> of <paramref name="steps"/> of the next unit's rows of q (the query heads of the value
    /// head's output heads), k (its key head), v and, when not null, a per-key-dim gate g; all [tokens, heads, dim].
    /// </summary>
    public static void NextUnit(HeadLayout heads, ChunkUnit chunk, int step, int steps, float* q, float* k, float* v, float* keyGate)
    {
        int kd = heads.KeyDim, vd = heads.ValueDim, h = chunk.NextHead;
        var (from, to) = chunk.NextShare(step, steps);
        long token = chunk.NextStart + from, valueRow = token * heads.ValueHeads + h;
        Rows(k + (token * heads.KeyHeads + heads.KeyHeadOf(h)) * kd, heads.KeyHeads * kd, to - from, kd);
        Rows(v + valueRow * vd, heads.ValueHeads * vd, to - from, vd);
        if (keyGate != null) Rows(keyGate + valueRow * kd, heads.ValueHeads * kd, to - from, kd);
        Rows(q + (token * heads.QHeads + heads.QueryHeadOf(h * heads.Group)) * kd, heads.QHeads * kd, to - from, kd * heads.Group);
    }

    /// <summary><paramref name="count"/> rows of <paramref name="floats"/> floats, <paramref name="stride"/> floats apart.</summary>
    private static void Rows(float* first, long stride, int count, int floats)
    {
        if (!Sse.IsSupported) return;
        for (int r = 0; r < count; r++, first += stride)
            for (int f = 0; f < floats; f += 16) Sse.Prefetch1(first + f);
    }
}

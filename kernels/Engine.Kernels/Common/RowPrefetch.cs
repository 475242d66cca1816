using System.Runtime.Intrinsics.X86;

namespace Engine.Kernels.Common;

/// <summary>
/// Asks for rows of a [tokens, heads, dim] tensor ahead of time, into L2. The rows of one head are heads · dim
/// floats apart, each in its own 4 KB page at the usual sizes, which the hardware prefetcher does not cross;
/// a kernel asks for the rows of its next unit of work a share at a time while it computes the current one.
/// </summary>
public static unsafe class RowPrefetch
{
    /// <summary><paramref name="count"/> rows of <paramref name="floats"/> floats, <paramref name="stride"/> floats apart.</summary>
    public static void Rows(float* first, long stride, int count, int floats)
    {
        if (!Sse.IsSupported) return;
        for (int r = 0; r < count; r++, first += stride)
            for (int f = 0; f < floats; f += 16) Sse.Prefetch1(first + f);
    }
}

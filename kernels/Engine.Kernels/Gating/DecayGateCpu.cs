using Engine.Kernels.Common;

namespace Engine.Kernels.Gating;

/// <summary>The gates on the CPU: blocks of tokens as work items; a few floats per token and head.</summary>
public static unsafe class DecayGateCpu
{
    private const int ItemElements = 16384;

    /// <param name="b">the beta projection (a's shape), or empty when <paramref name="beta"/> is not wanted.</param>
    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<float> dtBias, ReadOnlySpan<float> decayScale, ReadOnlySpan<float> b,
        Span<float> decay, Span<float> beta, IWorkScheduler scheduler)
    {
        int h = dtBias.Length;
        if (h < 1 || decayScale.Length != h || a.Length % h != 0 || decay.Length != a.Length || beta.Length != b.Length || !(b.IsEmpty || b.Length == a.Length))
            throw new ArgumentException("decay gate: a, b, decay and beta hold rows of the head count");
        int tokens = a.Length / h, perItem = Math.Max(1, ItemElements / h);
        fixed (float* ap = a, tp = dtBias, sp = decayScale, bp = b, dp = decay, ep = beta)
        {
            float* ax = ap, bias = tp, scale = sp, bx = b.IsEmpty ? null : bp, dx = dp, ex = ep;
            scheduler.Run((tokens + perItem - 1) / perItem, (item, _) =>
            {
                long start = (long)item * perItem * h, end = Math.Min(tokens, (item + 1) * perItem) * (long)h;
                for (long i = start; i < end; i++)
                {
                    int head = (int)(i % h);
                    dx[i] = scale[head] * SimdMath.Softplus(ax[i] + bias[head]);
                    if (bx is not null) ex[i] = SimdMath.Sigmoid(bx[i]);
                }
            });
        }
    }
}

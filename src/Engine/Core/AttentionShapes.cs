using Engine.Kernels.Common;

namespace Engine;

/// <summary>
/// The q, k, v, output and cu_seqlens checks every linear-attention facade makes: q [B, T, Hq, K], k [B, T, Hk, K],
/// v [B, T, Hv, V], output [B, T, max(Hq, Hv), V], the heads grouped one way or the other (<see cref="HeadLayout"/>:
/// Hk = Hv dividing Hq, or Hq = Hk dividing Hv), and where the sequences lie.
/// </summary>
internal readonly record struct AttentionShapes(int Batch, int Tokens, HeadLayout Heads, SequenceLayout Sequences)
{
    public static AttentionShapes Check(ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v,
        ReadOnlySpan<nint> output, ReadOnlySpan<int> cuSeqlens, bool checkOutput = true)
    {
        TensorArgs.RequireRank(q, "q", 4, "(B, T, Hq, K)");
        int b = TensorArgs.Dim(q, 0, "q"), t = TensorArgs.Dim(q, 1, "q"), hq = TensorArgs.Dim(q, 2, "q"), kd = TensorArgs.Dim(q, 3, "q");
        TensorArgs.RequireRank(k, "k", 4, "(B, T, Hk, K)");
        TensorArgs.RequireDims(k, "k", "(B, T, Hk, K) matching q", b, t, -1, kd);
        int hk = TensorArgs.Dim(k, 2, "k");
        TensorArgs.RequireRank(v, "v", 4, "(B, T, Hv, V)");
        TensorArgs.RequireDims(v, "v", "(B, T, Hv, V) matching q", b, t, -1, -1);
        int hv = TensorArgs.Dim(v, 2, "v"), vd = TensorArgs.Dim(v, 3, "v");
        if (kd < 1 || vd < 1) throw new ArgumentException($"q, v: head dims must be >= 1, got K = {kd}, V = {vd}", kd < 1 ? "q" : "v");
        CheckHeads(hq, hk, hv);
        if (checkOutput) TensorArgs.RequireShape(output, "output", "(B, T, max(Hq, Hv), V)", b, t, Math.Max(hq, hv), vd);
        SequenceLayout layout;
        if (cuSeqlens.IsEmpty)
        {
            layout = SequenceLayout.Dense(b, t);
        }
        else
        {
            if (b != 1) throw new ArgumentException($"cu_seqlens: packed sequences need batch B = 1, got B = {b}", "cu_seqlens");
            layout = SequenceLayout.Packed(cuSeqlens, t);
        }
        return new AttentionShapes(b, t, new HeadLayout(hq, hk, hv, kd, vd), layout);
    }

    /// <summary>The two groupings <see cref="HeadLayout"/> takes, refused naming the tensor whose heads do not fit.</summary>
    private static void CheckHeads(int hq, int hk, int hv)
    {
        if (hq < 1) throw new ArgumentException($"q: query heads must be >= 1, got {hq}", "q");
        if (hk < 1) throw new ArgumentException($"k: key heads must be >= 1, got {hk}", "k");
        if (hv < 1) throw new ArgumentException($"v: value heads must be >= 1, got {hv}", "v");
        if (hk == hv)
        {
            if (hq % hk != 0) throw new ArgumentException($"k: key/value heads ({hk}) must divide the query heads of q ({hq})", "k");
            return;
        }
        if (hv % hk != 0 || hv < hk || hq != hk)
            throw new ArgumentException($"v: value heads ({hv}) must equal the key heads of k ({hk}), or be a multiple of them with q's heads equal to k's (grouped value heads; q has {hq})", "v");
    }

    /// <summary>Shape of a per-token, per-value-head tensor (gates, beta): [B, T, Hv].</summary>
    public nint[] PerHeadShape => [Batch, Tokens, Heads.ValueHeads];
}

using Engine.Kernels.Common;

namespace Engine;

/// <summary>
/// The q, k, v, output and cu_seqlens checks every linear-attention facade makes: shapes [B, T, Hq, K],
/// [B, T, Hkv, K], [B, T, Hkv, V], [B, T, Hq, V], Hkv dividing Hq, and where the sequences lie.
/// </summary>
internal readonly record struct AttentionShapes(int Batch, int Tokens, HeadLayout Heads, SequenceLayout Sequences)
{
    public static AttentionShapes Check(ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v,
        ReadOnlySpan<nint> output, ReadOnlySpan<int> cuSeqlens)
    {
        TensorArgs.RequireRank(q, "q", 4, "(B, T, Hq, K)");
        int b = TensorArgs.Dim(q, 0, "q"), t = TensorArgs.Dim(q, 1, "q"), hq = TensorArgs.Dim(q, 2, "q"), kd = TensorArgs.Dim(q, 3, "q");
        TensorArgs.RequireRank(k, "k", 4, "(B, T, Hkv, K)");
        TensorArgs.RequireDims(k, "k", "(B, T, Hkv, K) matching q", b, t, -1, kd);
        int hkv = TensorArgs.Dim(k, 2, "k");
        if (hkv < 1 || hq % hkv != 0)
            throw new ArgumentException($"k: key/value heads ({hkv}) must divide the query heads of q ({hq})", "k");
        TensorArgs.RequireRank(v, "v", 4, "(B, T, Hkv, V)");
        TensorArgs.RequireDims(v, "v", "(B, T, Hkv, V) matching k", b, t, hkv, -1);
        int vd = TensorArgs.Dim(v, 3, "v");
        if (kd < 1 || vd < 1) throw new ArgumentException($"q, v: head dims must be >= 1, got K = {kd}, V = {vd}", kd < 1 ? "q" : "v");
        TensorArgs.RequireShape(output, "output", "(B, T, Hq, V)", b, t, hq, vd);

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
        return new AttentionShapes(b, t, new HeadLayout(hq, hkv, kd, vd), layout);
    }

    /// <summary>Shape of a per-token, per-key/value-head tensor (gates, beta): [B, T, Hkv].</summary>
    public nint[] PerHeadShape => [Batch, Tokens, Heads.KvHeads];

    /// <summary>State shape [N, Hkv, K, V].</summary>
    public nint[] StateShape => [Sequences.Count, Heads.KvHeads, Heads.KeyDim, Heads.ValueDim];
}

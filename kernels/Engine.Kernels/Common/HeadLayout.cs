namespace Engine;

/// <summary>
/// Heads and head dims of a linear-attention op. Query heads come in groups that share one key/value
/// head (grouped-query attention, as ONNX LinearAttention defines it): query head h reads key/value
/// head h / Group. The recurrent state is per key/value head: [sequences, KvHeads, KeyDim, ValueDim].
/// </summary>
public readonly record struct HeadLayout
{
    public HeadLayout(int qHeads, int kvHeads, int keyDim, int valueDim)
    {
        if (kvHeads < 1) throw new ArgumentOutOfRangeException(nameof(kvHeads), kvHeads, "key/value heads must be >= 1");
        if (qHeads < 1 || qHeads % kvHeads != 0)
            throw new ArgumentException($"query heads ({qHeads}) must be a positive multiple of key/value heads ({kvHeads})", nameof(qHeads));
        if (keyDim < 1) throw new ArgumentOutOfRangeException(nameof(keyDim), keyDim, "key dim must be >= 1");
        if (valueDim < 1) throw new ArgumentOutOfRangeException(nameof(valueDim), valueDim, "value dim must be >= 1");
        QHeads = qHeads; KvHeads = kvHeads; KeyDim = keyDim; ValueDim = valueDim;
    }

    public int QHeads { get; }
    public int KvHeads { get; }
    public int KeyDim { get; }
    public int ValueDim { get; }
    public int Group => QHeads / KvHeads;

    /// <summary>Floats of state per sequence.</summary>
    public long StatePerSequence => (long)KvHeads * KeyDim * ValueDim;

    /// <summary>Head dims padded to whole Vector512s, as the SIMD scratch holds them.</summary>
    public int KeyDimPadded => RoundUp16(KeyDim);
    public int ValueDimPadded => RoundUp16(ValueDim);

    public static int RoundUp16(int n) => (n + 15) & ~15;
}

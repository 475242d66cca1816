namespace Engine;

/// <summary>
/// Heads and head dims of a linear-attention op, grouped either way as ONNX Runtime's LinearAttention defines them:
/// <list type="bullet">
/// <item>grouped query heads: k and v share KeyHeads = ValueHeads heads, query head h reads key/value head h / Group;</item>
/// <item>grouped value heads (Qwen3-Next/3.5): q and k share QHeads = KeyHeads heads, value head h reads query/key head
/// h / ValueGroup.</item>
/// </list>
/// The recurrent state, the gates and beta are per value head: state [sequences, ValueHeads, KeyDim, ValueDim]. The output has
/// OutputHeads = max(QHeads, ValueHeads) heads; output head o reads the state of value head o / Group and query head o / ValueGroup.
/// </summary>
public readonly record struct HeadLayout
{
    /// <summary>Grouped query heads: k and v share <paramref name="kvHeads"/> heads, the query heads a multiple of them.</summary>
    public HeadLayout(int qHeads, int kvHeads, int keyDim, int valueDim)
        : this(qHeads, kvHeads, kvHeads, keyDim, valueDim)
    {
    }

    /// <summary>
    /// Either grouping: <paramref name="keyHeads"/> = <paramref name="valueHeads"/> with the query heads a multiple of them, or
    /// <paramref name="qHeads"/> = <paramref name="keyHeads"/> with the value heads a multiple of them.
    /// </summary>
    public HeadLayout(int qHeads, int keyHeads, int valueHeads, int keyDim, int valueDim)
    {
        if (qHeads < 1) throw new ArgumentOutOfRangeException(nameof(qHeads), qHeads, "query heads must be >= 1");
        if (keyHeads < 1) throw new ArgumentOutOfRangeException(nameof(keyHeads), keyHeads, "key heads must be >= 1");
        if (valueHeads < 1) throw new ArgumentOutOfRangeException(nameof(valueHeads), valueHeads, "value heads must be >= 1");
        if (keyDim < 1) throw new ArgumentOutOfRangeException(nameof(keyDim), keyDim, "key dim must be >= 1");
        if (valueDim < 1) throw new ArgumentOutOfRangeException(nameof(valueDim), valueDim, "value dim must be >= 1");
        if (keyHeads == valueHeads)
        {
            if (qHeads % keyHeads != 0)
                throw new ArgumentException($"query heads ({qHeads}) must be a multiple of key/value heads ({keyHeads})", nameof(qHeads));
        }
        else
        {
            if (valueHeads % keyHeads != 0 || valueHeads < keyHeads)
                throw new ArgumentException($"value heads ({valueHeads}) must equal the key heads ({keyHeads}) or be a multiple of them", nameof(valueHeads));
            if (qHeads != keyHeads)
                throw new ArgumentException($"with grouped value heads ({valueHeads} value heads over {keyHeads} key heads) the query heads must equal the key heads, got {qHeads}", nameof(qHeads));
        }
        QHeads = qHeads; KeyHeads = keyHeads; ValueHeads = valueHeads; KeyDim = keyDim; ValueDim = valueDim;
        // Kept, not derived per use: the kernels map heads with them on every token.
        OutputHeads = Math.Max(qHeads, valueHeads);
        Group = OutputHeads / valueHeads;
        ValueGroup = valueHeads / keyHeads;
    }

    public int QHeads { get; }
    public int KeyHeads { get; }

    /// <summary>Heads of v, of the gates, of beta and of the state.</summary>
    public int ValueHeads { get; }

    public int KeyDim { get; }
    public int ValueDim { get; }

    /// <summary>Heads of the output: max(QHeads, ValueHeads).</summary>
    public int OutputHeads { get; }

    /// <summary>Output (query) heads per value head: QHeads / ValueHeads, 1 with grouped value heads.</summary>
    public int Group { get; }

    /// <summary>Value heads per query/key head: ValueHeads / KeyHeads, 1 with grouped query heads.</summary>
    public int ValueGroup { get; }

    /// <summary>The key head value head <paramref name="valueHead"/> reads.</summary>
    public int KeyHeadOf(int valueHead) => valueHead / ValueGroup;

    /// <summary>The query head output head <paramref name="outputHead"/> reads.</summary>
    public int QueryHeadOf(int outputHead) => outputHead / ValueGroup;

    /// <summary>Floats of state per sequence.</summary>
    public long StatePerSequence => (long)ValueHeads * KeyDim * ValueDim;

    /// <summary>Head dims padded to whole Vector512s, as the SIMD scratch holds them.</summary>
    public int KeyDimPadded => RoundUp16(KeyDim);
    public int ValueDimPadded => RoundUp16(ValueDim);

    public static int RoundUp16(int n) => (n + 15) & ~15;

    /// <summary>"Hq 4, Hk 2, Hv 2, K 64, V 64", for messages.</summary>
    public override string ToString() => $"Hq {QHeads}, Hk {KeyHeads}, Hv {ValueHeads}, K {KeyDim}, V {ValueDim}";
}

namespace Engine.Kernels.Common;

/// <summary>
/// How the attention kernels split their work: an item is one sequence and a block of adjacent value (state)
/// heads. A token's rows for adjacent heads are adjacent in memory (with grouped value heads, adjacent value heads
/// share their query/key rows), which the hardware prefetcher follows,
/// while one head alone reads one row per 4 KB page. Blocks hold at most <see cref="MaxPerItem"/> heads (the
/// scratch keeps a state per head of an item) and are made small enough that every worker gets an item.
/// </summary>
public readonly struct HeadBlocks
{
    public const int MaxPerItem = 4;

    private readonly int _blocks, _perBlock, _kvHeads;

    public HeadBlocks(int sequences, int kvHeads, int workers)
    {
        int wanted = (workers + Math.Max(sequences, 1) - 1) / Math.Max(sequences, 1);
        int blocks = Math.Max((kvHeads + MaxPerItem - 1) / MaxPerItem, Math.Min(kvHeads, wanted));
        _perBlock = (kvHeads + blocks - 1) / blocks;
        _blocks = (kvHeads + _perBlock - 1) / _perBlock;
        _kvHeads = kvHeads;
        Items = sequences * _blocks;
    }

    public int Items { get; }

    /// <summary>Item i: its sequence and its heads [First, End).</summary>
    public (int Sequence, int First, int End) this[int item]
    {
        get
        {
            int first = item % _blocks * _perBlock;
            return (item / _blocks, first, Math.Min(_kvHeads, first + _perBlock));
        }
    }
}

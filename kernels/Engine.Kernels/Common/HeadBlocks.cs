namespace Engine.Kernels.Common;

/// <summary>
/// How the attention kernels split their work: an item is one sequence and a block of adjacent value (state)
/// heads. A token's rows for adjacent heads are adjacent in memory (with grouped value heads, adjacent value heads
/// share their query/key rows), which the hardware prefetcher follows,
/// while one head alone reads one row per 4 KB page. Blocks hold at most <see cref="MaxPerItem"/> heads (the
/// scratch keeps a state per head of an item) and are made small enough that every worker gets an item; where the
/// heads allow, their count makes the items a multiple of the workers, so that no worker waits alone on a last item
/// (12 heads on 2 workers: 4 blocks of 3, not 3 of 4). A sequence's heads are split as evenly as the count allows.
/// </summary>
public readonly struct HeadBlocks
{
    public const int MaxPerItem = 4;

    private readonly int _blocks, _kvHeads;

    public HeadBlocks(int sequences, int kvHeads, int workers)
    {
        int perSequence = Math.Max(sequences, 1), wanted = (workers + perSequence - 1) / perSequence;
        int blocks = Math.Max((kvHeads + MaxPerItem - 1) / MaxPerItem, Math.Min(kvHeads, wanted));
        for (int b = blocks; b <= Math.Min(kvHeads, blocks + workers); b++)
            if ((long)perSequence * b % workers == 0)
            {
                blocks = b;
                break;
            }
        _blocks = Math.Max(blocks, 1);
        _kvHeads = kvHeads;
        Items = sequences * _blocks;
    }

    public int Items { get; }

    /// <summary>Item i: its sequence and its heads [First, End).</summary>
    public (int Sequence, int First, int End) this[int item]
    {
        get
        {
            int block = item % _blocks;
            return (item / _blocks, (int)((long)block * _kvHeads / _blocks), (int)((long)(block + 1) * _kvHeads / _blocks));
        }
    }
}

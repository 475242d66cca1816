using Engine.Kernels.Common;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// How the CPU attention kernels split (sequence, value head) work: every pair exactly once, in blocks of adjacent heads no
/// larger than the scratch holds, every worker given an item, and the item count a multiple of the workers where the heads
/// allow it (stated per case, worked out by hand).
/// </summary>
[TestFixture]
public sealed class HeadBlocksTests
{
    [TestCase(1, 12, 2, 4)]   // 3 blocks of 4 would leave a worker alone on the last: 4 of 3
    [TestCase(1, 20, 2, 6)]   // 5 blocks of 4 → 6 blocks of 3 or 4
    [TestCase(1, 32, 2, 8)]
    [TestCase(1, 8, 2, 2)]
    [TestCase(1, 1, 2, 1)]    // one head: one item, whatever the workers
    [TestCase(3, 4, 2, 6)]    // 3 sequences × 1 block would be odd: 2 blocks each
    [TestCase(4, 4, 2, 4)]
    [TestCase(1, 7, 16, 7)]   // more workers than heads: a head an item
    [TestCase(2, 0, 2, 2)]    // no heads: an empty item per sequence
    public void EveryHeadOnceInBalancedBlocks(int sequences, int kvHeads, int workers, int items)
    {
        var blocks = new HeadBlocks(sequences, kvHeads, workers);
        Assert.That(blocks.Items, Is.EqualTo(items), "items");
        var seen = new int[sequences, kvHeads];
        for (int i = 0; i < blocks.Items; i++)
        {
            var (n, first, end) = blocks[i];
            Assert.That(end - first, Is.InRange(kvHeads == 0 ? 0 : 1, HeadBlocks.MaxPerItem), $"item {i}: heads [{first}, {end})");
            for (int h = first; h < end; h++) seen[n, h]++;
        }
        Assert.That(seen.Cast<int>(), Is.All.EqualTo(1), "every (sequence, head) exactly once");
    }
}

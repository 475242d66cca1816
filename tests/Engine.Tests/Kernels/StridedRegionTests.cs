using Engine.Kernels.Common;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// <see cref="StridedRegion.Overlap"/> against a brute-force statement of it: every byte of every element of one region
/// in a set, then any byte of the other's elements in it. Hand-built cases (the answer also stated), then a sweep of
/// small random shapes, strides and offsets.
/// </summary>
[TestFixture]
public sealed class StridedRegionTests
{
    /// <param name="a">start, element size, then (length, stride) pairs, outermost first.</param>
    [TestCase(new long[] { 0, 4, 8, 2 }, new long[] { 4, 4, 8, 2 }, false, TestName = "Interleaved columns of one buffer")]
    [TestCase(new long[] { 0, 4, 8, 2 }, new long[] { 8, 4, 8, 2 }, true, TestName = "One column moved by an element")]
    [TestCase(new long[] { 0, 4, 4, 1 }, new long[] { 4, 4, 4, 1 }, true, TestName = "Dense ranges offset by one element")]
    [TestCase(new long[] { 0, 4, 4, 1 }, new long[] { 16, 4, 4, 1 }, false, TestName = "Dense ranges back to back")]
    [TestCase(new long[] { 0, 4, 4, 2 }, new long[] { 2, 2, 4, 4 }, true, TestName = "A half element's bytes inside a float")]
    [TestCase(new long[] { 0, 4, 4, 2 }, new long[] { 4, 2, 8, 4 }, false, TestName = "Half elements in the floats' gaps")]
    [TestCase(new long[] { 0, 8, 3, 2 }, new long[] { 4, 4, 3, 4 }, true, TestName = "A float over the second half of a double")]
    [TestCase(new long[] { 0, 4, 0, 1 }, new long[] { 0, 4, 4, 1 }, false, TestName = "A view of no element")]
    [TestCase(new long[] { 0, 4, 2, 12, 3, 1 }, new long[] { 12, 4, 2, 12, 2, 1 }, false, TestName = "Rows of q and k in packed rows")]
    [TestCase(new long[] { 0, 4, 2, 12, 3, 1 }, new long[] { 8, 4, 2, 12, 2, 1 }, true, TestName = "Rows one element too wide")]
    [TestCase(new long[] { 0, 4, 2, 64, 3, 8, 2, 1 }, new long[] { 8, 4, 2, 64, 3, 8, 2, 1 }, false, TestName = "Rank 3 interleaved pairs")]
    [TestCase(new long[] { 0, 4, 2, 60, 2, 30, 3, 5, 2, 1 }, new long[] { 8, 4, 2, 60, 2, 30, 3, 5, 2, 1 }, false, TestName = "Rank 4 element in each gap")]
    [TestCase(new long[] { 0, 4, 2, 60, 2, 30, 3, 5, 2, 1 }, new long[] { 164, 4, 1, 1 }, true, TestName = "Rank 4 against one element it holds")]
    [TestCase(new long[] { 0, 4, 3, 0, 2, 1 }, new long[] { 8, 4, 3, 1 }, false, TestName = "A broadcast axis adds no byte")]
    public void HandBuiltCases(long[] a, long[] b, bool overlap)
    {
        Assert.That(BruteForce(a, b), Is.EqualTo(overlap), "brute force");
        Assert.That(Overlap(a, b), Is.EqualTo(overlap), "a against b");
        Assert.That(Overlap(b, a), Is.EqualTo(overlap), "b against a");
    }

    [Test]
    public void RandomRegionsAgreeWithBruteForce()
    {
        var random = new Random(20240611);
        int overlapping = 0, interleaved = 0;
        for (int trial = 0; trial < 4000; trial++)
        {
            long[] a = RandomRegion(random), b = RandomRegion(random);
            bool expected = BruteForce(a, b);
            Assert.That(Overlap(a, b), Is.EqualTo(expected), $"a = [{string.Join(", ", a)}], b = [{string.Join(", ", b)}]");
            Assert.That(Overlap(b, a), Is.EqualTo(expected), $"b = [{string.Join(", ", b)}], a = [{string.Join(", ", a)}]");
            if (expected) overlapping++;
            else if (ExtentsMeet(a, b)) interleaved++;
        }
        // The sweep reaches both answers where the extents meet, the case decided exactly.
        Assert.That(overlapping, Is.GreaterThan(100), "overlapping pairs");
        Assert.That(interleaved, Is.GreaterThan(100), "pairs whose extents meet without a shared byte");
    }

    /// <summary>Rank 1 to 4, element size 1, 2, 4 or 8, lengths 0 to 4, strides 0 to 9 (sometimes negative), start 0 to 31 bytes.</summary>
    private static long[] RandomRegion(Random random)
    {
        int rank = random.Next(1, 5);
        var region = new long[2 + 2 * rank];
        region[0] = random.Next(32);
        region[1] = 1 << random.Next(4);
        for (int d = 0; d < rank; d++)
        {
            region[2 + 2 * d] = random.Next(10) == 0 ? 0 : random.Next(1, 5);
            region[3 + 2 * d] = random.Next(10) * (random.Next(8) == 0 ? -1 : 1);
        }
        // A negative stride walks down from the start: move it up so that no byte lies below 0.
        for (int d = 0; d < rank; d++)
            if (region[3 + 2 * d] < 0) region[0] += (region[2 + 2 * d] - 1) * -region[3 + 2 * d] * region[1];
        return region;
    }

    private static bool Overlap(long[] a, long[] b) => StridedRegion.Overlap(Region(a), Region(b));

    private static StridedRegion Region(long[] r)
    {
        int rank = (r.Length - 2) / 2;
        var lengths = new nint[rank];
        var strides = new nint[rank];
        for (int d = 0; d < rank; d++)
        {
            lengths[d] = (nint)r[2 + 2 * d];
            strides[d] = (nint)r[3 + 2 * d];
        }
        return new StridedRegion(r[0], lengths, strides, (int)r[1]);
    }

    private static bool BruteForce(long[] a, long[] b)
    {
        var bytes = new HashSet<long>(Bytes(a));
        return Bytes(b).Any(bytes.Contains);
    }

    private static bool ExtentsMeet(long[] a, long[] b)
    {
        var bytesA = Bytes(a).ToList();
        var bytesB = Bytes(b).ToList();
        return bytesA.Count > 0 && bytesB.Count > 0 && bytesA.Min() <= bytesB.Max() && bytesB.Min() <= bytesA.Max();
    }

    /// <summary>Every byte of every element, by walking every index.</summary>
    private static IEnumerable<long> Bytes(long[] r)
    {
        int rank = (r.Length - 2) / 2;
        var index = new long[rank];
        for (int d = 0; d < rank; d++)
            if (r[2 + 2 * d] == 0) yield break;
        while (true)
        {
            long address = r[0];
            for (int d = 0; d < rank; d++) address += index[d] * r[3 + 2 * d] * r[1];
            for (long i = 0; i < r[1]; i++) yield return address + i;
            int axis = rank - 1;
            while (axis >= 0 && ++index[axis] == r[2 + 2 * axis]) index[axis--] = 0;
            if (axis < 0) yield break;
        }
    }
}

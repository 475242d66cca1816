using System.Buffers;

namespace Engine.Kernels.Common;

/// <summary>
/// The bytes a strided tensor's elements occupy: element (i₀, …, iₙ₋₁) lies at byte
/// <see cref="Start"/> + Σ i_d · Strides[d] · <see cref="ElementSize"/> and is <see cref="ElementSize"/> bytes long.
/// Strides are in elements; 0 repeats an element, a negative one walks down.
/// </summary>
public readonly ref struct StridedRegion(long start, ReadOnlySpan<nint> lengths, ReadOnlySpan<nint> strides, int elementSize)
{
    public long Start { get; } = start;
    public ReadOnlySpan<nint> Lengths { get; } = lengths;
    public ReadOnlySpan<nint> Strides { get; } = strides;
    public int ElementSize { get; } = elementSize;

    /// <summary>
    /// Whether some byte lies in an element of both regions. First their extents (first byte to last): apart, as tensors of
    /// their own are, the answer costs O(rank). Otherwise exact: the runs of contiguous elements of each that fall where the
    /// extents meet are counted, those of the one with fewer are listed and sorted, and each of the other's looked up among
    /// them: O(r log r) time and 8 bytes a listed run for r such runs, never more than in proportion to the elements of the
    /// two, which a call reads or writes anyway. A dense tensor is one run. Over more runs than one array holds, meeting
    /// extents count as an overlap.
    /// </summary>
    public static bool Overlap(StridedRegion a, StridedRegion b)
    {
        if (a.IsEmpty || b.IsEmpty) return false;
        Span<nint> aLengths = stackalloc nint[a.Lengths.Length], aSteps = stackalloc nint[a.Lengths.Length];
        Span<nint> bLengths = stackalloc nint[b.Lengths.Length], bSteps = stackalloc nint[b.Lengths.Length];
        var runsA = RunSet.Of(a, aLengths, aSteps);
        var runsB = RunSet.Of(b, bLengths, bSteps);
        long from = Math.Max(runsA.Start, runsB.Start), to = Math.Min(runsA.End, runsB.End);
        if (from >= to) return false;
        long countA = runsA.CountRuns(0, runsA.Start, from, to), countB = runsB.CountRuns(0, runsB.Start, from, to);
        if (countA == 0 || countB == 0) return false;
        // More runs than one array lists (beyond any tensor a call takes): the meeting extents decide.
        if (Math.Min(countA, countB) > Array.MaxLength) return true;
        return countA <= countB ? runsA.Meets(runsB, countA, from, to) : runsB.Meets(runsA, countB, from, to);
    }

    /// <summary>No element: a length of 0.</summary>
    public bool IsEmpty => Lengths.IndexOf(0) >= 0;

    /// <summary>
    /// A region as runs of contiguous bytes, all <see cref="Run"/> bytes long: the axes of length 1 or stride 0 dropped (they
    /// add no byte), strides made positive, sorted from the widest, contiguous neighbours merged, and the innermost axis
    /// folded into the run where its elements follow each other.
    /// </summary>
    private readonly ref struct RunSet
    {
        private readonly Span<nint> _lengths;
        private readonly Span<nint> _steps;

        private RunSet(long start, long run, Span<nint> lengths, Span<nint> steps)
        {
            Start = start;
            Run = run;
            _lengths = lengths;
            _steps = steps;
            long end = start + run;
            for (int d = 0; d < lengths.Length; d++) end += (long)(lengths[d] - 1) * steps[d];
            End = end;
        }

        /// <summary>The first byte.</summary>
        public long Start { get; }

        /// <summary>Past the last byte.</summary>
        public long End { get; }

        /// <summary>Bytes in each run.</summary>
        public long Run { get; }

        /// <param name="lengths">Scratch of the region's rank, which the set keeps.</param>
        /// <param name="steps">Scratch of the region's rank: the byte strides.</param>
        public static RunSet Of(StridedRegion r, Span<nint> lengths, Span<nint> steps)
        {
            long start = r.Start;
            int rank = 0;
            for (int d = 0; d < r.Lengths.Length; d++)
            {
                nint step = checked(r.Strides[d] * r.ElementSize);
                if (r.Lengths[d] == 1 || step == 0) continue;
                if (step < 0)
                {
                    start += (long)(r.Lengths[d] - 1) * step;
                    step = -step;
                }
                // Insertion by stride, widest first: a handful of axes.
                int at = rank++;
                for (; at > 0 && steps[at - 1] < step; at--)
                {
                    steps[at] = steps[at - 1];
                    lengths[at] = lengths[at - 1];
                }
                steps[at] = step;
                lengths[at] = r.Lengths[d];
            }
            int merged = 0;
            for (int d = 0; d < rank; d++)
            {
                if (merged > 0 && steps[merged - 1] == steps[d] * lengths[d])
                {
                    lengths[merged - 1] *= lengths[d];
                    steps[merged - 1] = steps[d];
                    continue;
                }
                lengths[merged] = lengths[d];
                steps[merged++] = steps[d];
            }
            long run = r.ElementSize;
            if (merged > 0 && steps[merged - 1] == r.ElementSize) run = (long)lengths[--merged] * r.ElementSize;
            return new RunSet(start, run, lengths[..merged], steps[..merged]);
        }

        /// <summary>The runs below axis d, starting at origin, that reach into [from, to).</summary>
        public long CountRuns(int d, long origin, long from, long to)
        {
            if (d == _lengths.Length) return origin < to && origin + Run > from ? 1 : 0;
            var (first, last) = Within(d, origin, from, to);
            if (d == _lengths.Length - 1) return Math.Max(0, last - first + 1);
            long count = 0;
            for (long i = first; i <= last; i++) count += CountRuns(d + 1, origin + i * _steps[d], from, to);
            return count;
        }

        /// <summary>Whether a run of <paramref name="other"/> meets one of these (<paramref name="count"/> of them), both within [from, to).</summary>
        public bool Meets(RunSet other, long count, long from, long to)
        {
            long[] starts = ArrayPool<long>.Shared.Rent((int)count);
            try
            {
                int listed = 0;
                ListRuns(0, Start, from, to, starts, ref listed);
                Array.Sort(starts, 0, listed);
                return other.AnyRunMeets(0, other.Start, from, to, starts.AsSpan(0, listed), Run);
            }
            finally
            {
                ArrayPool<long>.Shared.Return(starts);
            }
        }

        /// <summary>The first and last index along axis d whose block (starting at base) reaches into [from, to).</summary>
        private (long First, long Last) Within(int d, long origin, long from, long to)
        {
            long step = _steps[d], block = Run;
            for (int e = d + 1; e < _lengths.Length; e++) block += (long)(_lengths[e] - 1) * _steps[e];
            // Block i covers [origin + i·step, origin + i·step + block): it reaches into [from, to) when it ends after from and starts before to.
            long first = Math.Max(0, CeilDiv(from - block + 1 - origin, step));
            long last = Math.Min(_lengths[d] - 1, FloorDiv(to - 1 - origin, step));
            return (first, last);
        }

        private void ListRuns(int d, long origin, long from, long to, long[] starts, ref int count)
        {
            if (d == _lengths.Length)
            {
                if (origin < to && origin + Run > from) starts[count++] = origin;
                return;
            }
            var (first, last) = Within(d, origin, from, to);
            for (long i = first; i <= last; i++) ListRuns(d + 1, origin + i * _steps[d], from, to, starts, ref count);
        }

        private bool AnyRunMeets(int d, long origin, long from, long to, ReadOnlySpan<long> sorted, long sortedRun)
        {
            if (d == _lengths.Length)
            {
                if (origin >= to || origin + Run <= from) return false;
                // A sorted run [s, s + sortedRun) meets [origin, origin + Run) when origin − sortedRun < s < origin + Run.
                int at = LowerBound(sorted, origin - sortedRun + 1);
                return at < sorted.Length && sorted[at] < origin + Run;
            }
            var (first, last) = Within(d, origin, from, to);
            for (long i = first; i <= last; i++)
                if (AnyRunMeets(d + 1, origin + i * _steps[d], from, to, sorted, sortedRun)) return true;
            return false;
        }

        private static int LowerBound(ReadOnlySpan<long> sorted, long value)
        {
            int lo = 0, hi = sorted.Length;
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if (sorted[mid] < value) lo = mid + 1;
                else hi = mid;
            }
            return lo;
        }

        private static long FloorDiv(long a, long b) => a >= 0 ? a / b : -((-a + b - 1) / b);

        private static long CeilDiv(long a, long b) => -FloorDiv(-a, b);
    }
}

using System.Numerics;

namespace Engine.Workloads;

/// <summary>Sizes checked before a workload or sample model allocates: one array of more elements than .NET holds is refused by name.</summary>
public static class ArraySize
{
    /// <param name="what">the sizes and the array, e.g. "B 1, T 100000, H 64, K 128: q [B, T, H, K]".</param>
    public static void Require(string what, params long[] dims)
    {
        var elements = dims.Aggregate(BigInteger.One, (a, d) => a * d);
        if (elements > Array.MaxLength) throw new ArgumentException($"{what} would hold {elements} elements; an array holds at most {Array.MaxLength}");
    }

    /// <summary>A bench's sequence lengths as a message names them: all of a few, the first and last of many.</summary>
    public static string Lengths(IReadOnlyCollection<int> lengths) =>
        lengths.Count <= 3 ? string.Join(",", lengths) : $"{lengths.First()},...,{lengths.Last()} ({lengths.Count} lengths)";

    /// <summary>
    /// Refuses <paramref name="bytes"/> past what this process can still take (the machine's memory, or its container's
    /// limit, less the heap already in use): sizes that each fit an array can still together swap the machine to a halt.
    /// </summary>
    /// <param name="what">the sizes and what they make, e.g. "--H 256 --N 3000: the layer's tables".</param>
    public static void RequireMemory(string what, double bytes)
    {
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes - GC.GetTotalMemory(forceFullCollection: false);
        if (bytes > available)
            throw new InsufficientMemoryException($"{what} would take {bytes / 1e9:0.#} GB, more than the {available / 1e9:0.#} GB this machine has");
    }
}

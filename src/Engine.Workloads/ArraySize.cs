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
}

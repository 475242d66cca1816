namespace Engine.Kernels.Lssl;

/// <summary>
/// Krylov blocks v, M v, M² v, …, M^(count−1) v in float64, as the rows of a [count × n] array. Both
/// builders take Mᵀ (row-major), so every step is a row-block product: row_(j+k) = row_j · (Mᵀ)^k.
/// </summary>
public static class Krylov
{
    /// <summary>One mat-vec per row: n²·count work, count dependent steps. The cheaper choice for short blocks.</summary>
    public static double[] Sequential(ReadOnlySpan<double> mTransposed, int n, ReadOnlySpan<double> v, int count)
    {
        var rows = new double[count * n];
        if (count == 0) return rows;
        v[..n].CopyTo(rows);
        for (int j = 1; j < count; j++)
            Float64Matrix.Multiply(rows.AsSpan((j - 1) * n, n), mTransposed, rows.AsSpan(j * n, n), 1, n, n);
        return rows;
    }

    /// <summary>
    /// By doubling: the first k rows times (Mᵀ)^k give the next k, and Mᵀ is squared each round — log₂(count)
    /// rounds, each one matrix product, instead of count dependent mat-vec steps (n³ log₂(count) + n² count work).
    /// </summary>
    public static double[] Doubling(ReadOnlySpan<double> mTransposed, int n, ReadOnlySpan<double> v, int count)
    {
        var rows = new double[count * n];
        if (count == 0) return rows;
        v[..n].CopyTo(rows);
        int have = 1;
        var power = mTransposed[..(n * n)].ToArray();
        var squared = new double[n * n];
        while (have < count)
        {
            int take = Math.Min(have, count - have);
            Float64Matrix.Multiply(rows.AsSpan(0, take * n), power, rows.AsSpan(have * n, take * n), take, n, n);
            have += take;
            if (have < count)
            {
                Float64Matrix.Multiply(power, power, squared, n, n, n);
                (power, squared) = (squared, power);
            }
        }
        return rows;
    }
}

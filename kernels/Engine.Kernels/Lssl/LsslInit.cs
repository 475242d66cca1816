namespace Engine.Kernels.Lssl;

/// <summary>
/// The structured initializations of the LSSL paper (Gu et al. 2021) and its reference code: the HiPPO
/// state matrices and a log-uniform step Δ. Everything here is float64 and row-major.
/// </summary>
public static class LsslInit
{
    /// <summary>
    /// HiPPO-LegS: A_nk = −√(2n+1)√(2k+1) for n > k, −(n+1) for n = k, 0 for n &lt; k; B_n = √(2n+1).
    /// </summary>
    public static (double[] A, double[] B) HippoLegS(int n)
    {
        RequireSize(n);
        var a = new double[n * n];
        var b = new double[n];
        for (int i = 0; i < n; i++)
        {
            b[i] = Math.Sqrt(2 * i + 1);
            for (int k = 0; k < i; k++) a[i * n + k] = -Math.Sqrt(2 * i + 1) * Math.Sqrt(2 * k + 1);
            a[i * n + i] = -(i + 1);
        }
        return (a, b);
    }

    /// <summary>
    /// HiPPO-LegT: A_nk = −½√(2n+1)√(2k+1) · (1 if n >= k, else (−1)^(n−k)); B_n = ½√(2n+1).
    /// </summary>
    public static (double[] A, double[] B) HippoLegT(int n)
    {
        RequireSize(n);
        var a = new double[n * n];
        var b = new double[n];
        for (int i = 0; i < n; i++)
        {
            b[i] = 0.5 * Math.Sqrt(2 * i + 1);
            for (int k = 0; k < n; k++)
            {
                double sign = i >= k || ((k - i) & 1) == 0 ? 1.0 : -1.0;
                a[i * n + k] = -0.5 * Math.Sqrt(2 * i + 1) * Math.Sqrt(2 * k + 1) * sign;
            }
        }
        return (a, b);
    }

    /// <summary>
    /// One step per channel, log-uniform in [dtMin, dtMax]: log Δ_h = log dtMin + U_h (log dtMax − log dtMin),
    /// U_h uniform in [0, 1) from a generator seeded with <paramref name="seed"/> (the same values in every process).
    /// </summary>
    public static double[] LogUniformDt(int channels, int seed, double dtMin = 1e-3, double dtMax = 1e-1)
    {
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels), channels, "channels H must be >= 1");
        if (!(dtMin > 0.0) || !double.IsFinite(dtMin))
            throw new ArgumentOutOfRangeException(nameof(dtMin), dtMin, "dt_min must be finite and > 0");
        if (!(dtMax >= dtMin) || !double.IsFinite(dtMax))
            throw new ArgumentOutOfRangeException(nameof(dtMax), dtMax, $"dt_max must be finite and >= dt_min ({dtMin})");
        var random = new Random(seed);
        double lo = Math.Log(dtMin), hi = Math.Log(dtMax);
        var dt = new double[channels];
        for (int h = 0; h < channels; h++) dt[h] = Math.Exp(lo + random.NextDouble() * (hi - lo));
        return dt;
    }

    /// <summary>The largest N whose A [N, N] one array holds.</summary>
    public static readonly int MaxStateSize = (int)Math.Sqrt(Array.MaxLength);

    private static void RequireSize(int n)
    {
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n), n, "state size N must be >= 1");
        if (n > MaxStateSize)
            throw new ArgumentOutOfRangeException(nameof(n), n, $"state size N must be <= {MaxStateSize}: A [N, N] would hold {(long)n * n} elements, an array at most {Array.MaxLength}");
    }
}

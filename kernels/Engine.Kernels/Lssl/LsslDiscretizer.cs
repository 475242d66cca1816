namespace Engine.Kernels.Lssl;

/// <summary>
/// Continuous (A, B, Δ) to discrete (Ā, B̄) in float64, one channel at a time. Ā is returned as Ā − I:
/// for small Δ, Ā is I plus a small matrix, and keeping the small part separate lets the fp32 kernels
/// hold it to fp32 relative precision (x ← x + (Ā − I)x) instead of rounding 1 − O(Δ) entries.
///   GBT(α):  Ā − I = (I − αΔA)⁻¹ ΔA,  B̄ = Δ (I − αΔA)⁻¹ B      (one LU of I − αΔA)
///   ZOH:     exp([[ΔA, ΔB], [0, 0]]) = [[Ā, B̄], [0, 1]]           (A⁻¹ never formed: A may be singular)
/// </summary>
public static class LsslDiscretizer
{
    /// <summary>Dense A [n × n] and B [n] of one channel with step dt: (Ā − I [n × n], B̄ [n]).</summary>
    public static (double[] AbarMinusI, double[] Bbar) Dense(ReadOnlySpan<double> a, ReadOnlySpan<double> b, int n, double dt,
        LsslDiscretization method, int channel = 0)
    {
        if (method.Method == LsslMethod.Zoh) return DenseZoh(a, b, n, dt, channel);

        double alpha = method.Alpha;
        var lhs = new double[n * n];
        var rhs = new double[n * (n + 1)];   // [ΔA | ΔB]
        for (int i = 0; i < n; i++)
        {
            for (int k = 0; k < n; k++)
            {
                double da = dt * a[i * n + k];
                lhs[i * n + k] = (i == k ? 1.0 : 0.0) - alpha * da;
                rhs[i * (n + 1) + k] = da;
            }
            rhs[i * (n + 1) + n] = dt * b[i];
        }
        var pivots = new int[n];
        if (!Float64Matrix.TryLuFactor(lhs, pivots, n))
            throw Singular(channel, dt, alpha);
        Float64Matrix.LuSolve(lhs, pivots, rhs, n, n + 1);
        var abarMinusI = new double[n * n];
        var bbar = new double[n];
        for (int i = 0; i < n; i++)
        {
            rhs.AsSpan(i * (n + 1), n).CopyTo(abarMinusI.AsSpan(i * n, n));
            bbar[i] = rhs[i * (n + 1) + n];
        }
        RequireFinite(abarMinusI, bbar, channel, dt, method);
        return (abarMinusI, bbar);
    }

    private static (double[] AbarMinusI, double[] Bbar) DenseZoh(ReadOnlySpan<double> a, ReadOnlySpan<double> b, int n, double dt, int channel)
    {
        int m = n + 1;
        var aug = new double[m * m];
        for (int i = 0; i < n; i++)
        {
            for (int k = 0; k < n; k++) aug[i * m + k] = dt * a[i * n + k];
            aug[i * m + n] = dt * b[i];
        }
        var e = Float64Matrix.Exp(aug, m);
        var abarMinusI = new double[n * n];
        var bbar = new double[n];
        for (int i = 0; i < n; i++)
        {
            for (int k = 0; k < n; k++) abarMinusI[i * n + k] = e[i * m + k] - (i == k ? 1.0 : 0.0);
            bbar[i] = e[i * m + n];
        }
        RequireFinite(abarMinusI, bbar, channel, dt, LsslDiscretization.ZeroOrderHold);
        return (abarMinusI, bbar);
    }

    /// <summary>Diagonal A [n] and B [n] of one channel: writes ā − 1 and b̄ per state element.</summary>
    public static void Diagonal(ReadOnlySpan<double> a, ReadOnlySpan<double> b, double dt, LsslDiscretization method,
        Span<double> abarMinusOne, Span<double> bbar, int channel = 0)
    {
        for (int i = 0; i < a.Length; i++)
        {
            double z = dt * a[i];
            if (method.Method == LsslMethod.Zoh)
            {
                // ā = e^z, b̄ = Δ b (e^z − 1)/z, written through expm1 so that z → 0 loses nothing.
                double em1 = ExpMinusOne(z);
                abarMinusOne[i] = em1;
                bbar[i] = dt * b[i] * (z == 0.0 ? 1.0 : em1 / z);
            }
            else
            {
                double den = 1.0 - method.Alpha * z;
                if (Math.Abs(den) <= 4 * Float64Matrix.MachineEpsilon * Math.Max(1.0, Math.Abs(method.Alpha * z)))
                    throw Singular(channel, dt, method.Alpha);
                abarMinusOne[i] = z / den;
                bbar[i] = dt * b[i] / den;
            }
            if (!double.IsFinite(abarMinusOne[i]) || !double.IsFinite(bbar[i]))
                throw new ArgumentException($"A: the {method} discretization of channel {channel} (dt = {dt}) overflows at state {i}", "A");
        }
    }

    /// <summary>e^x − 1 without cancellation near 0: 2t/(1 − t) with t = tanh(x/2) for |x| &lt; 1.</summary>
    public static double ExpMinusOne(double x)
    {
        if (Math.Abs(x) >= 1.0) return Math.Exp(x) - 1.0;
        double t = Math.Tanh(0.5 * x);
        return 2.0 * t / (1.0 - t);
    }

    private static ArgumentException Singular(int channel, double dt, double alpha) =>
        new($"A: the bilinear-transform discretization (alpha = {alpha}) of channel {channel} is singular: I − alpha·dt·A has no inverse at dt = {dt}", "A");

    private static void RequireFinite(double[] abarMinusI, double[] bbar, int channel, double dt, LsslDiscretization method)
    {
        foreach (var x in abarMinusI)
            if (!double.IsFinite(x)) throw new ArgumentException($"A: the {method} discretization of channel {channel} (dt = {dt}) overflows", "A");
        foreach (var x in bbar)
            if (!double.IsFinite(x)) throw new ArgumentException($"B: the {method} discretization of channel {channel} (dt = {dt}) overflows", "B");
    }
}

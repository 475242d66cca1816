using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Lssl;

/// <summary>
/// Small dense float64 matrices, row-major in flat arrays: what the discretization and the precomputed
/// tables need (products, LU with partial pivoting, the matrix exponential). Run once per parameter set.
/// </summary>
public static class Float64Matrix
{
    /// <summary>The spacing of doubles at 1 (2^-52).</summary>
    public const double MachineEpsilon = 2.220446049250313e-16;

    /// <summary>c = a · b with a [m × k], b [k × n], c [m × n]; c must not alias a or b.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Multiply(ReadOnlySpan<double> a, ReadOnlySpan<double> b, Span<double> c, int m, int k, int n)
    {
        c[..(m * n)].Clear();
        for (int i = 0; i < m; i++)
        {
            var ci = c.Slice(i * n, n);
            for (int p = 0; p < k; p++)
            {
                double x = a[i * k + p];
                if (x != 0.0) AddScaled(ci, b.Slice(p * n, n), x);
            }
        }
    }

    public static double[] Multiply(ReadOnlySpan<double> a, ReadOnlySpan<double> b, int m, int k, int n)
    {
        var c = new double[m * n];
        Multiply(a, b, c, m, k, n);
        return c;
    }

    /// <summary>[rows × cols] to [cols × rows].</summary>
    public static double[] Transpose(ReadOnlySpan<double> a, int rows, int cols)
    {
        var t = new double[rows * cols];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }

    /// <summary>dst += x · src.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AddScaled(Span<double> dst, ReadOnlySpan<double> src, double x)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var xv = Vector512.Create(x);
            for (; i + 8 <= dst.Length; i += 8)
                Vector512.MultiplyAddEstimate(xv, Vector512.Create(src.Slice(i, 8)), Vector512.Create(dst.Slice(i, 8))).CopyTo(dst.Slice(i, 8));
        }
        for (; i < dst.Length; i++) dst[i] += x * src[i];
    }

    /// <summary>The 1-norm: the largest column sum of absolute values.</summary>
    public static double NormOne(ReadOnlySpan<double> a, int n)
    {
        double max = 0;
        for (int j = 0; j < n; j++)
        {
            double s = 0;
            for (int i = 0; i < n; i++) s += Math.Abs(a[i * n + j]);
            max = Math.Max(max, s);
        }
        return max;
    }

    /// <summary>
    /// LU factorization with partial pivoting, in place: P a = L U. Returns false when a pivot is zero
    /// or negligible against the matrix's largest entry (n · eps · max|a|): the matrix is singular to working precision.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool TryLuFactor(Span<double> a, Span<int> pivots, int n)
    {
        double scale = 0;
        for (int i = 0; i < n * n; i++) scale = Math.Max(scale, Math.Abs(a[i]));
        if (!double.IsFinite(scale)) return false;
        double tiny = n * MachineEpsilon * scale;
        for (int k = 0; k < n; k++)
        {
            int p = k;
            double best = Math.Abs(a[k * n + k]);
            for (int i = k + 1; i < n; i++)
            {
                double v = Math.Abs(a[i * n + k]);
                if (v > best) { best = v; p = i; }
            }
            if (!(best > tiny)) return false;
            pivots[k] = p;
            if (p != k)
                for (int j = 0; j < n; j++) (a[k * n + j], a[p * n + j]) = (a[p * n + j], a[k * n + j]);
            double inv = 1.0 / a[k * n + k];
            var rowK = a.Slice(k * n + k + 1, n - k - 1);
            for (int i = k + 1; i < n; i++)
            {
                double f = a[i * n + k] * inv;
                a[i * n + k] = f;
                if (f != 0.0) AddScaled(a.Slice(i * n + k + 1, n - k - 1), rowK, -f);
            }
        }
        return true;
    }

    /// <summary>Solves (P⁻¹ L U) x = b in place for b [n × columns] (row-major), from <see cref="TryLuFactor"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void LuSolve(ReadOnlySpan<double> lu, ReadOnlySpan<int> pivots, Span<double> b, int n, int columns)
    {
        for (int k = 0; k < n; k++)
        {
            int p = pivots[k];
            if (p != k)
                for (int j = 0; j < columns; j++) (b[k * columns + j], b[p * columns + j]) = (b[p * columns + j], b[k * columns + j]);
        }
        for (int i = 1; i < n; i++)
        {
            var bi = b.Slice(i * columns, columns);
            for (int k = 0; k < i; k++)
            {
                double f = lu[i * n + k];
                if (f != 0.0) AddScaled(bi, b.Slice(k * columns, columns), -f);
            }
        }
        for (int i = n - 1; i >= 0; i--)
        {
            var bi = b.Slice(i * columns, columns);
            for (int k = i + 1; k < n; k++)
            {
                double f = lu[i * n + k];
                if (f != 0.0) AddScaled(bi, b.Slice(k * columns, columns), -f);
            }
            double inv = 1.0 / lu[i * n + i];
            for (int j = 0; j < columns; j++) bi[j] *= inv;
        }
    }

    // Padé [13/13] coefficients and the 1-norm bound under which it is accurate to double precision
    // (Higham, "The scaling and squaring method for the matrix exponential revisited", 2005).
    private static readonly double[] Pade13 =
    [
        64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0, 129060195264000.0,
        10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0,
    ];
    private const double Theta13 = 5.371920351148152;

    /// <summary>exp(a) for a [n × n] by scaling and squaring with the [13/13] Padé approximant.</summary>
    public static double[] Exp(ReadOnlySpan<double> a, int n)
    {
        double norm = NormOne(a, n);
        if (!double.IsFinite(norm)) throw new ArgumentException("matrix exponential of a matrix with non-finite entries");
        int s = norm > Theta13 ? (int)Math.Ceiling(Math.Log2(norm / Theta13)) : 0;
        double scale = Math.ScaleB(1.0, -s);
        var x = new double[n * n];
        for (int i = 0; i < x.Length; i++) x[i] = a[i] * scale;

        var x2 = Multiply(x, x, n, n, n);
        var x4 = Multiply(x2, x2, n, n, n);
        var x6 = Multiply(x4, x2, n, n, n);
        var b = Pade13;
        var inner = new double[n * n];
        var outer = new double[n * n];
        // U = x [x6 (b13 x6 + b11 x4 + b9 x2) + b7 x6 + b5 x4 + b3 x2 + b1 I]
        for (int i = 0; i < inner.Length; i++) inner[i] = b[13] * x6[i] + b[11] * x4[i] + b[9] * x2[i];
        Multiply(x6, inner, outer, n, n, n);
        for (int i = 0; i < outer.Length; i++) outer[i] += b[7] * x6[i] + b[5] * x4[i] + b[3] * x2[i];
        for (int i = 0; i < n; i++) outer[i * n + i] += b[1];
        var u = Multiply(x, outer, n, n, n);
        // V = x6 (b12 x6 + b10 x4 + b8 x2) + b6 x6 + b4 x4 + b2 x2 + b0 I
        for (int i = 0; i < inner.Length; i++) inner[i] = b[12] * x6[i] + b[10] * x4[i] + b[8] * x2[i];
        var v = Multiply(x6, inner, n, n, n);
        for (int i = 0; i < v.Length; i++) v[i] += b[6] * x6[i] + b[4] * x4[i] + b[2] * x2[i];
        for (int i = 0; i < n; i++) v[i * n + i] += b[0];

        // (V − U) r = (V + U)
        var lhs = new double[n * n];
        var r = new double[n * n];
        for (int i = 0; i < lhs.Length; i++) { lhs[i] = v[i] - u[i]; r[i] = v[i] + u[i]; }
        var pivots = new int[n];
        if (!TryLuFactor(lhs, pivots, n)) throw new ArgumentException("matrix exponential: the Padé denominator is singular");
        LuSolve(lhs, pivots, r, n, n);
        for (int k = 0; k < s; k++)
        {
            Multiply(r, r, x, n, n, n);
            (r, x) = (x, r);
        }
        return r;
    }

    /// <summary>a^power for a [n × n], power >= 1, by repeated squaring.</summary>
    public static double[] Power(ReadOnlySpan<double> a, int n, int power)
    {
        if (power < 1) throw new ArgumentOutOfRangeException(nameof(power), power, "power must be >= 1");
        double[]? result = null;
        var sq = a.ToArray();
        var tmp = new double[n * n];
        while (true)
        {
            if ((power & 1) != 0)
            {
                if (result is null) result = sq.ToArray();
                else { Multiply(result, sq, tmp, n, n, n); (result, tmp) = (tmp, result); }
            }
            power >>= 1;
            if (power == 0) return result!;
            Multiply(sq, sq, tmp, n, n, n);
            (sq, tmp) = (tmp, sq);
        }
    }

    /// <summary>
    /// (I + M)^power − I for M [n × n], by squaring on the parts minus I: (I + X)(I + Y) − I = X + Y + XY. A power near I
    /// keeps its small part to float64 relative precision, where (I + M)^power − I would cancel.
    /// </summary>
    public static double[] PowerMinusIdentity(ReadOnlySpan<double> m, int n, int power)
    {
        if (power < 1) throw new ArgumentOutOfRangeException(nameof(power), power, "power must be >= 1");
        double[]? result = null;
        var sq = m.ToArray();
        var tmp = new double[n * n];
        while (true)
        {
            if ((power & 1) != 0)
            {
                if (result is null) result = sq.ToArray();
                else { ComposeMinusIdentity(result, sq, tmp, n); (result, tmp) = (tmp, result); }
            }
            power >>= 1;
            if (power == 0) return result!;
            ComposeMinusIdentity(sq, sq, tmp, n);
            (sq, tmp) = (tmp, sq);
        }
    }

    /// <summary>(1 + m)^power − 1 the same way, for a diagonal entry.</summary>
    public static double PowerMinusIdentity(double m, int power)
    {
        if (power < 1) throw new ArgumentOutOfRangeException(nameof(power), power, "power must be >= 1");
        double result = 0.0, sq = m;
        while (true)
        {
            if ((power & 1) != 0) result = result + sq + result * sq;
            power >>= 1;
            if (power == 0) return result;
            sq = 2 * sq + sq * sq;
        }
    }

    /// <summary>dst = X + Y + X Y: (I + X)(I + Y) − I.</summary>
    private static void ComposeMinusIdentity(double[] x, double[] y, double[] dst, int n)
    {
        Multiply(x, y, dst, n, n, n);
        for (int i = 0; i < n * n; i++) dst[i] += x[i] + y[i];
    }
}

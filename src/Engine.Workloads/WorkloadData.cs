namespace Engine.Workloads;

/// <summary>Deterministic random inputs for workloads (benchmarks and the demo), shaped as models feed them.</summary>
public sealed class WorkloadData(int seed)
{
    private readonly Random _random = new(seed);

    public float[] Normal(long length, double std = 1.0)
    {
        var a = new float[length];
        for (long i = 0; i < length; i++)
        {
            double u1 = 1.0 - _random.NextDouble(), u2 = _random.NextDouble();
            a[i] = (float)(std * Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return a;
    }

    /// <summary>Rows of <paramref name="dim"/> scaled to unit L2 norm (keys as models normalize them).</summary>
    public float[] UnitRows(long rows, int dim)
    {
        var a = Normal(rows * dim);
        for (long r = 0; r < rows; r++)
        {
            double n = 0;
            for (int c = 0; c < dim; c++) n += (double)a[r * dim + c] * a[r * dim + c];
            float inv = (float)(1 / Math.Sqrt(n + 1e-12));
            for (int c = 0; c < dim; c++) a[r * dim + c] *= inv;
        }
        return a;
    }

    /// <summary>Log gates strength · logsigmoid(x + 2), x ~ N(0, 1): mostly mild decay, as trained GLA layers have.</summary>
    public float[] LogGates(long length, double strength = 1.0)
    {
        var x = Normal(length);
        for (long i = 0; i < length; i++)
        {
            double z = x[i] + 2.0;
            x[i] = (float)(strength * (z >= 0 ? -Math.Log(1 + Math.Exp(-z)) : z - Math.Log(1 + Math.Exp(z))));
        }
        return x;
    }

    public float[] Uniform(long length, double lo, double hi)
    {
        var a = new float[length];
        for (long i = 0; i < length; i++) a[i] = (float)(lo + (hi - lo) * _random.NextDouble());
        return a;
    }
}

namespace Engine.Tests.Harness;

/// <summary>Deterministic random inputs.</summary>
public sealed class TestData(int seed)
{
    private readonly Random _random = new(seed);

    /// <summary>Normal(0, std).</summary>
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

    public float[] Uniform(long length, double lo, double hi)
    {
        var a = new float[length];
        for (long i = 0; i < length; i++) a[i] = (float)(lo + (hi - lo) * _random.NextDouble());
        return a;
    }

    /// <summary>Log gates as models make them: scale · logsigmoid(x), x ~ N(0, 1) + 2 (mostly mild decay).</summary>
    public float[] LogGates(long length, double scale)
    {
        var x = Normal(length);
        var a = new float[length];
        for (long i = 0; i < length; i++)
        {
            double z = x[i] + 2.0;
            double logSigmoid = z >= 0 ? -Math.Log(1 + Math.Exp(-z)) : z - Math.Log(1 + Math.Exp(z));
            a[i] = (float)(scale * logSigmoid);
        }
        return a;
    }

    /// <summary>Keys L2-normalized per row of <paramref name="dim"/>, as delta-rule and GLA models feed them.</summary>
    public float[] UnitRows(long rows, int dim)
    {
        var a = Normal(rows * dim);
        for (long r = 0; r < rows; r++)
        {
            double n = 0;
            for (int c = 0; c < dim; c++) n += a[r * dim + c] * (double)a[r * dim + c];
            float inv = (float)(1 / Math.Sqrt(n + 1e-12));
            for (int c = 0; c < dim; c++) a[r * dim + c] *= inv;
        }
        return a;
    }

    /// <summary>Rounds through fp16, so an fp16 run and the reference see the same inputs.</summary>
    public static float[] RoundToHalf(float[] a) => a.Select(x => (float)(Half)x).ToArray();

    public static Half[] ToHalf(float[] a) => a.Select(x => (Half)x).ToArray();

    public static float[] FromHalf(Half[] a) => a.Select(x => (float)x).ToArray();

    public static double[] ToDouble(float[] a) => a.Select(x => (double)x).ToArray();
}

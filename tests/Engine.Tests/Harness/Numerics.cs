namespace Engine.Tests.Harness;

/// <summary>Error measures used by every comparison against the float64 reference.</summary>
public static class Numerics
{
    /// <summary>Tolerance (relative RMS error) for fp32 inputs and outputs.</summary>
    public const double Fp32Tolerance = 1e-5;

    /// <summary>Tolerance for fp16 inputs and outputs (fp32 accumulation and state).</summary>
    public const double Fp16Tolerance = 5e-3;

    /// <summary>
    /// Tolerance for bfloat16 inputs and outputs (fp32 accumulation and state): rounding an output to bfloat16's 8-bit
    /// significand alone gives about 2^-8 / sqrt(3) = 2.3e-3 relative RMS.
    /// </summary>
    public const double Bf16Tolerance = 1e-2;

    /// <summary>sqrt(Σ (a − e)² / Σ e²); NaN or infinity anywhere in <paramref name="actual"/> gives +∞.</summary>
    public static double RelativeRms(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        if (actual.Length != expected.Length) throw new ArgumentException($"length {actual.Length} vs {expected.Length}");
        double err = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!float.IsFinite(actual[i])) return double.PositiveInfinity;
            double d = actual[i] - expected[i];
            err += d * d;
            norm += expected[i] * expected[i];
        }
        if (norm == 0) return Math.Sqrt(err);
        return Math.Sqrt(err / norm);
    }

    public static double RelativeRms(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        return RelativeRms(actual, e);
    }

    public static float[] NaNs(long length)
    {
        var a = new float[length];
        Array.Fill(a, float.NaN);
        return a;
    }

    public static bool AllFinite(ReadOnlySpan<float> values)
    {
        foreach (var x in values) if (!float.IsFinite(x)) return false;
        return true;
    }
}

using Engine.Workloads;

namespace Engine.Tests.Harness;

/// <summary>Deterministic random inputs (the workloads' generator) and the fp16 round trips tests need.</summary>
public sealed class TestData(int seed)
{
    private readonly WorkloadData _data = new(seed);

    /// <summary>Normal(0, std).</summary>
    public float[] Normal(long length, double std = 1.0) => _data.Normal(length, std);

    public float[] Uniform(long length, double lo, double hi) => _data.Uniform(length, lo, hi);

    /// <summary>Log gates as models make them: scale · logsigmoid(x), x ~ N(0, 1) + 2 (mostly mild decay).</summary>
    public float[] LogGates(long length, double scale) => _data.LogGates(length, scale);

    /// <summary>Keys L2-normalized per row of <paramref name="dim"/>, as delta-rule and GLA models feed them.</summary>
    public float[] UnitRows(long rows, int dim) => _data.UnitRows(rows, dim);

    /// <summary>Rounds through fp16, so an fp16 run and the reference see the same inputs.</summary>
    public static float[] RoundToHalf(float[] a) => a.Select(x => (float)(Half)x).ToArray();

    public static Half[] ToHalf(float[] a) => a.Select(x => (Half)x).ToArray();

    public static float[] FromHalf(Half[] a) => a.Select(x => (float)x).ToArray();

    /// <summary>bfloat16 by ONNX Runtime's own conversion (round to nearest even), not the engine's.</summary>
    public static Microsoft.ML.OnnxRuntime.BFloat16[] ToBFloat16(float[] a) => a.Select(x => (Microsoft.ML.OnnxRuntime.BFloat16)x).ToArray();

    public static float[] FromBFloat16(Microsoft.ML.OnnxRuntime.BFloat16[] a) => a.Select(x => (float)x).ToArray();

    public static double[] ToDouble(float[] a) => a.Select(x => (double)x).ToArray();
}

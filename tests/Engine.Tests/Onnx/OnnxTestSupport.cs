using Engine.Onnx;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>One kernel host for the ONNX tests (its own, so live kernels can be counted), disposed at the end.</summary>
[SetUpFixture]
public sealed class OnnxTestHost
{
    private static readonly Lazy<KernelHost> CpuHost = new(() => new KernelHost(new KernelHostOptions { IntraOpThreads = 2 }));
    private static readonly Lazy<KernelHost> SimulatedGpuHost = new(() => new KernelHost(new KernelHostOptions { IntraOpThreads = 2, Gpu = GpuPreference.CpuAccelerator }));

    public static KernelHost Host => CpuHost.Value;
    public static KernelHost GpuHost => SimulatedGpuHost.Value;

    /// <summary>Session options for a backend; the host's intra-op threads do not spin (the test machine is shared).</summary>
    public static ModelSessionOptions Options(HandoverBackend backend) => new()
    {
        Backend = backend,
        Host = backend == HandoverBackend.Gpu ? GpuHost : Host,
        AllowSpinning = false,
    };

    public static ModelSession Open(OnnxModel model, HandoverBackend backend) => ModelSession.Open(model, Options(backend));

    [OneTimeTearDown]
    public void DisposeHosts()
    {
        if (CpuHost.IsValueCreated) CpuHost.Value.Dispose();
        if (SimulatedGpuHost.IsValueCreated) SimulatedGpuHost.Value.Dispose();
    }
}

/// <summary>Comparisons of model outputs with float64 references.</summary>
public static class OnnxAssert
{
    public static void Close(TensorData actual, double[] expected, string what, double tolerance = Numerics.Fp32Tolerance)
    {
        var values = Floats(actual);
        Assert.That(values, Has.Length.EqualTo(expected.Length), $"{what}: element count");
        double err = Numerics.RelativeRms(values, expected);
        Assert.That(err, Is.LessThanOrEqualTo(tolerance), $"{what}: relative RMS error {err:E2}");
    }

    public static void Close(TensorData actual, TensorData expected, string what, double tolerance = Numerics.Fp32Tolerance)
    {
        Assert.That(actual.Shape, Is.EqualTo(expected.Shape), $"{what}: shape");
        Close(actual, TestData.ToDouble(Floats(expected)), what, tolerance);
    }

    /// <summary>
    /// Every output of the hand-over's run close to ORT alone's on the same inputs, ORT's finite (so a fold that breaks a
    /// value shows as a difference, not as NaN on both sides).
    /// </summary>
    public static void AgreesWithOrtAlone(ModelSession engine, ModelSession ort, IReadOnlyDictionary<string, TensorData> inputs, string what)
    {
        var byOrt = ort.Run(inputs);
        var byEngine = engine.Run(inputs);
        foreach (var name in engine.OutputNames)
        {
            Assert.That(Floats(byOrt[name]).All(float.IsFinite), Is.True, $"ORT's {name} is finite");
            Close(byEngine[name], byOrt[name], $"{what}: {name}, hand-over vs ORT alone");
        }
    }

    /// <summary>A float or float16 tensor's values as floats.</summary>
    public static float[] Floats(TensorData t) => t.ElementType switch
    {
        TensorElementType.Float16 => TestData.FromHalf(t.As<Half>()),
        TensorElementType.BFloat16 => TestData.FromBFloat16(t.As<Microsoft.ML.OnnxRuntime.BFloat16>()),
        _ => t.As<float>(),
    };

    public static void Shape(TensorData actual, params long[] shape) => Assert.That(actual.Shape, Is.EqualTo(shape));
}

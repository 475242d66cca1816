using Engine.Onnx;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// The models in samples/models are the builder's output (set ENGINE_WRITE_SAMPLES=1 to rewrite them), and
/// each one runs with its hot node on the engine.
/// </summary>
[TestFixture]
public sealed class SampleModelTests
{
    private static string SamplesDirectory => Path.Combine(Repository.Root, "samples", "models");

    public static IEnumerable<TestCaseData> Names() => SampleModels.Samples().Keys.Select(n => new TestCaseData(n).SetName($"Sample model {n}"));

    [TestCaseSource(nameof(Names))]
    public void SampleIsTheBuildersOutputAndRunsOnTheEngine(string name)
    {
        if (Environment.GetEnvironmentVariable("ENGINE_WRITE_SAMPLES") == "1") SampleModels.WriteSamples(SamplesDirectory);
        string path = Path.Combine(SamplesDirectory, name);
        var built = SampleModels.Samples()[name];
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(built.ToBytes()), $"{name} differs from the builder's output: rerun this test with ENGINE_WRITE_SAMPLES=1");

        using var session = ModelSession.Open(path, OnnxTestHost.Options(HandoverBackend.Cpu));
        int expectedEngineNodes = built.Graph.Node.Count(n => n.OpType is "LinearAttention" or "LightningAttention" or "LsslScan");
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(expectedEngineNodes));
        var inputs = ModelInputs.Random(session.Model, new Dictionary<string, long> { ["B"] = 1, ["T"] = 5, ["L"] = 5 });
        foreach (var (output, tensor) in session.Run(inputs))
            Assert.That(Harness.Numerics.AllFinite(tensor.As<float>()), $"{output} is finite");
    }
}

using NUnit.Framework;

namespace Engine.Tests.Docs;

/// <summary>
/// Every C# block of the docs compiles with only what `using Engine;` / `using Engine.Onnx;` reach, and every block that
/// declares all it uses runs.
/// </summary>
[TestFixture]
public sealed class DocSnippetTests
{
    public static IEnumerable<TestCaseData> Snippets() =>
        DocSnippets.InRepository().Select(snippet => new TestCaseData(snippet).SetName($"Doc snippet {snippet}"));

    [TestCaseSource(nameof(Snippets))]
    public void Compiles(DocSnippet snippet) =>
        Assert.That(DocSnippets.Problems(snippet), Is.Empty, $"{snippet} as a user's program");

    public static IEnumerable<TestCaseData> RunnableSnippets() =>
        DocSnippets.InRepository().Where(DocSnippets.Runs).Select(snippet => new TestCaseData(snippet).SetName($"Doc snippet runs {snippet}"));

    [TestCaseSource(nameof(RunnableSnippets))]
    public void Runs(DocSnippet snippet) =>
        Assert.That(() => DocSnippets.Run(snippet), Throws.Nothing, $"{snippet} run as a user's program");

    [Test]
    public void TheDeltaRuleExamplesRun() =>
        Assert.That(DocSnippets.InRepository().Where(DocSnippets.Runs).Select(snippet => snippet.File), Has.Exactly(2).EqualTo("docs/delta-rule.md"));

    [Test]
    public void ASnippetThatThrowsFailsItsRun()
    {
        var snippet = new DocSnippet("guide.md", 1, "Console.WriteLine(Lightning.Slopes(heads: 0).Length);");
        Assert.Multiple(() =>
        {
            Assert.That(DocSnippets.Problems(snippet), Is.Empty);
            Assert.That(DocSnippets.Runs(snippet), Is.True);
            Assert.That(() => DocSnippets.Run(snippet), Throws.InstanceOf<ArgumentException>());
        });
    }

    [TestCase("using var device = EngineDevice.Create(Backend.Cpu);\nGla.Forward(device, q, k, v, g);", TestName = "A snippet using the well-known variables is not run")]
    [TestCase("using Engine.Onnx;\nusing var session = ModelSession.Open(\"model.onnx\");", TestName = "A snippet opening a file is not run")]
    [TestCase("using Engine.Onnx;\nusing var generator = Generator.Open(\"qwen3.5-hybrid\");", TestName = "A snippet opening a folder is not run")]
    public void NotRun(string code) =>
        Assert.That(DocSnippets.Runs(new DocSnippet("guide.md", 1, code)), Is.False);

    [TestCase("var t = Tensor.Create<float>([1, 64, 4]);")]
    [TestCase("DeltaRule.Forward<float>(EngineDevice.Create(Backend.Cpu), q, k, v, Tensor.Create<float>([1, 64, 4]), g, output);")]
    public void TensorCreateOfAShapeListIsAProblem(string code) =>
        Assert.That(DocSnippets.Problems(new DocSnippet("guide.md", 1, code)), Has.Some.StartsWith("guide.md(2,").And.Contains("Tensor.CreateFromShape"));

    [Test]
    public void TheReadmeSnippetsAreFound() =>
        Assert.That(DocSnippets.InRepository().Select(snippet => snippet.File), Does.Contain("README.md").And.Contain("src/Engine.Onnx/README.md"));

    [Test]
    public void OnlyCSharpFencesAreSnippetsAndTheirLinesAreTheFences()
    {
        const string markdown = "# Title\n\n```\nengine run model.onnx\n```\n\n```csharp\nvar a = 1;\n```\ntext\n```csharp\nvar b = 2;\nvar c = 3;\n```\n";
        Assert.That(DocSnippets.Parse("x.md", markdown), Is.EqualTo(new[]
        {
            new DocSnippet("x.md", 7, "var a = 1;"),
            new DocSnippet("x.md", 11, "var b = 2;\nvar c = 3;"),
        }));
    }

    [Test]
    public void AnUnclosedFenceIsRefused() =>
        Assert.That(() => DocSnippets.Parse("x.md", "text\n```csharp\nvar a = 1;\n").ToList(),
            Throws.TypeOf<FormatException>().With.Message.Contains("x.md:2"));

    [Test]
    public void ACompileErrorIsReportedAtItsMarkdownLine()
    {
        var snippet = new DocSnippet("guide.md", 10, "using var device = EngineDevice.Create(Backend.Cpu);\nvar r = Gla.Forward(device, q, k, v, gate);");
        Assert.That(DocSnippets.Problems(snippet), Has.Some.StartsWith("guide.md(12,").And.Contains("CS0103").And.Contains("'gate'"));
    }

    [Test]
    public void ACompilerWarningIsAProblem()
    {
        var snippet = new DocSnippet("guide.md", 1, "int unused;");
        Assert.That(DocSnippets.Problems(snippet), Has.Some.Contains("warning CS0168"));
    }

    [TestCase("using Engine.Kernels.Gla;\nConsole.WriteLine(q.Rank);", "imports Engine.Kernels.Gla")]
    [TestCase("var sizes = Engine.Kernels.Gla.GlaConfig.ChunkSizes;", "names Engine.Kernels.Gla.GlaConfig")]
    [TestCase("using Config = Engine.Kernels.Gla.GlaConfig;\nConsole.WriteLine(Config.ChunkSizes.Length);", "names Engine.Kernels.Gla.GlaConfig")]
    [TestCase("using Engine.Kernels;\nConsole.WriteLine(q.Rank);", "imports Engine.Kernels")]
    [TestCase("var x = new Engine.Workloads.WorkloadData(seed: 0);", "CS0234")]
    [TestCase("Console.WriteLine(TensorArgs.Format([1, 2]));", "CS0122")]
    public void WhatUsingEngineDoesNotReachIsAProblem(string code, string problem) =>
        Assert.That(DocSnippets.Problems(new DocSnippet("guide.md", 1, code)), Has.Some.Contains(problem));

    [TestCase("using Engine.Onnx;\nusing var session = ModelSession.Open(\"model.onnx\");")]
    [TestCase("using var device = EngineDevice.Create(Backend.Cpu);\nAttentionResult<float> r = Gla.Forward(device, q, k, v, g);\nConsole.WriteLine(r.Output.Lengths.Length);")]
    // The types the public API hands out or takes are named with `using Engine;` alone, not from the kernels' namespaces.
    [TestCase("var options = new GlaOptions { GpuPrecision = GpuPrecision.Tf32 };\nConsole.WriteLine(options);", TestName = "GpuPrecision is reached by using Engine")]
    [TestCase("using var gpu = EngineDevice.Create(Backend.Gpu);\nGpuTraffic before = gpu.GpuTraffic;\ngpu.StartGpuProfile();\nIReadOnlyList<GpuKernelTime> times = gpu.StopGpuProfile();\nConsole.WriteLine(gpu.GpuTraffic.Since(before).Launches + times.Count);", TestName = "GpuTraffic and GpuKernelTime are reached by using Engine")]
    [TestCase("var norm = new GatedOutputNorm { Scale = new float[4], Gate = new float[4], Activation = GateActivation.Sigmoid };\nConsole.WriteLine(norm);", TestName = "GateActivation is reached by using Engine")]
    public void WhatUsingEngineReachesCompiles(string code) =>
        Assert.That(DocSnippets.Problems(new DocSnippet("guide.md", 1, code)), Is.Empty);
}

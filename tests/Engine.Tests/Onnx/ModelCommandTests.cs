using Engine.IO;
using Engine.Onnx;
using Engine.Onnx.Ops;
using NUnit.Framework;
using Engine.Tests.Cli;
using Engine.Workloads;
using DataType = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>engine run, inspect and bench-model, run in-process on model files made by the builder.</summary>
[TestFixture]
public sealed class ModelCommandTests
{
    private string _dir = "";

    [SetUp]
    public void MakeDirectory() => _dir = Directory.CreateTempSubdirectory("engine-model-cli-").FullName;

    [TearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    private static readonly LinearAttentionBlockSpec Spec = new() { Hidden = 16, QHeads = 2, KvHeads = 1, KeyDim = 8, ValueDim = 8, Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead };

    private string SaveModel(OnnxModel model, string name = "block.onnx")
    {
        string path = Path.Combine(_dir, name);
        model.Save(path);
        return path;
    }

    [TestCase("cpu")]
    [TestCase("none")]
    public void RunWritesEveryOutputAsNpy(string backend)
    {
        var model = SampleModels.LinearAttentionBlock(Spec);
        var (inputs, x, pasts) = ModelGraphTests.BlockInputs(Spec);
        var expected = BlockReference.Run(Spec, model, x, 2, 30, pasts);
        string xPath = Path.Combine(_dir, "x.npy"), pastPath = Path.Combine(_dir, "past.npy");
        Npy.Write(xPath, ModelInputs.ToNpy(inputs["x"], "x"));
        Npy.Write(pastPath, ModelInputs.ToNpy(inputs["past_state"], "past_state"));
        string outDir = Path.Combine(_dir, "out");

        var (code, stdout, stderr) = CliFixture.Engine("run", SaveModel(model), "--input", $"x={xPath}", "--input", $"past_state={pastPath}",
            "--output-dir", outDir, "--backend", backend, "--threads", "2");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"engine kernel nodes: {(backend == "cpu" ? 1 : 0)}").And.Contain(backend == "none" ? " ms (ONNX Runtime only)" : " ms (cpu: ")
            .And.Contain($"y: float32 [2, 30, 16] -> {Path.Combine(outDir, "y.npy")}"));
        using var y = Npy.Read(Path.Combine(outDir, "y.npy"));
        Assert.That(y.Shape, Is.EqualTo(new nint[] { 2, 30, 16 }));
        Assert.That(Harness.Numerics.RelativeRms(y.ToFloat32(), expected.Y), Is.LessThanOrEqualTo(Harness.Numerics.Fp32Tolerance));
        using var state = Npy.Read(Path.Combine(outDir, "present_state.npy"));
        Assert.That(Harness.Numerics.RelativeRms(state.ToFloat32(), expected.States["present_state"]), Is.LessThanOrEqualTo(Harness.Numerics.Fp32Tolerance));

        var json = CliFixture.Engine("run", SaveModel(model), "--input", $"x={xPath}", "--input", $"past_state={pastPath}",
            "--output-dir", outDir, "--backend", backend, "--threads", "2", "--json");
        Assert.That(json.code, Is.Zero, json.stderr);
        var report = System.Text.Json.JsonDocument.Parse(json.stdout).RootElement;
        Assert.That(report.GetProperty("engine_kernel_nodes").GetInt32(), Is.EqualTo(backend == "cpu" ? 1 : 0));
        Assert.That(report.GetProperty("outputs").EnumerateArray().Select(o => o.GetProperty("name").GetString()), Is.EquivalentTo(new[] { "y", "present_state" }));
    }

    [Test]
    public void RunTakesAndGivesBFloat16AsFloat32Npy()
    {
        // .npy has no bfloat16: float32 arrays go in (rounded to the model's bfloat16 inputs), bfloat16 outputs come out widened.
        var c = new GatedDeltaNetNodeCase { Spec = new() { ElementType = TensorElementType.BFloat16, QkL2Norm = true } };
        var inputs = c.Inputs();
        var expected = c.Reference(inputs);
        var args = new List<string> { "run", SaveModel(c.Model(), "gdn.onnx"), "--output-dir", Path.Combine(_dir, "out"), "--backend", "cpu" };
        foreach (var (name, tensor) in inputs)
        {
            string path = Path.Combine(_dir, name + ".npy");
            Npy.Write(path, ModelInputs.ToNpy(tensor, name));
            args.AddRange(["--input", $"{name}={path}"]);
        }
        var (code, stdout, stderr) = CliFixture.Engine([.. args]);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("engine kernel nodes: 1").And.Contain("output: float32"));
        using var output = Npy.Read(Path.Combine(_dir, "out", "output.npy"));
        Assert.That(Harness.Numerics.RelativeRms(output.ToFloat32(), expected.Output), Is.LessThanOrEqualTo(Harness.Numerics.Bf16Tolerance));
        using var state = Npy.Read(Path.Combine(_dir, "out", "final_state.npy"));
        Assert.That(Harness.Numerics.RelativeRms(state.ToFloat32(), expected.FinalState), Is.LessThanOrEqualTo(Harness.Numerics.Bf16Tolerance));
    }

    /// <summary>y = cond ? x + 1 : x * 2 over x [3], and not_cond = !cond: a bool graph input drives an If, and a bool output comes back.</summary>
    private static OnnxModel IfModel()
    {
        var builder = new ModelBuilder();
        string cond = builder.Input("cond", DataType.Bool);
        string x = builder.Input("x", DataType.Float, 3);
        string one = builder.Initializer("one", [1f]);
        string two = builder.Initializer("two", [2f]);
        var thenBranch = new ModelBuilder(graphName: "then");
        thenBranch.Output(thenBranch.Node("Add", [x, one], outputNames: ["x_plus_one"])[0], DataType.Float, 3);
        var elseBranch = new ModelBuilder(graphName: "else");
        elseBranch.Output(elseBranch.Node("Mul", [x, two], outputNames: ["x_times_two"])[0], DataType.Float, 3);
        builder.Node("If", [cond], outputNames: ["y"], attributes: [("then_branch", thenBranch.Build()), ("else_branch", elseBranch.Build())]);
        builder.Output("y", DataType.Float, 3);
        builder.Output(builder.Node("Not", [cond], outputNames: ["not_cond"])[0], DataType.Bool);
        return builder.Build();
    }

    [TestCase(true, new[] { 2f, -1f, 4.5f })]
    [TestCase(false, new[] { 2f, -4f, 7f })]
    public void RunTakesABoolConditionAndWritesABoolOutput(bool cond, float[] branch)
    {
        string condPath = Path.Combine(_dir, "cond.npy"), xPath = Path.Combine(_dir, "x.npy"), outDir = Path.Combine(_dir, "out");
        Npy.Write(condPath, NpyArray.From([cond], []));
        Npy.Write(xPath, NpyArray.From([1f, -2f, 3.5f], [3]));

        var (code, stdout, stderr) = CliFixture.Engine("run", SaveModel(IfModel(), "if.onnx"), "--input", $"cond={condPath}", "--input", $"x={xPath}",
            "--output-dir", outDir, "--threads", "1");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"y: float32 [3] -> {Path.Combine(outDir, "y.npy")}").And.Contain($"not_cond: bool [] -> {Path.Combine(outDir, "not_cond.npy")}"));
        using var y = Npy.Read(Path.Combine(outDir, "y.npy"));
        Assert.That(y.Values<float>().ToArray(), Is.EqualTo(branch), cond ? "x + 1, the then branch" : "x * 2, the else branch");
        using var notCond = Npy.Read(Path.Combine(outDir, "not_cond.npy"));
        Assert.That(notCond.Type, Is.EqualTo(NpyType.Bool));
        Assert.That(notCond.Shape, Is.Empty);
        Assert.That(notCond.Values<bool>().ToArray(), Is.EqualTo(new[] { !cond }));
    }

    /// <summary>bench-model takes a bool condition from a file, and makes one (false: the else branch) when none is given.</summary>
    [Test]
    public void BenchModelTakesOrMakesABoolCondition()
    {
        string model = SaveModel(IfModel(), "if.onnx"), condPath = Path.Combine(_dir, "cond.npy");
        Npy.Write(condPath, NpyArray.From([true], []));
        foreach (var given in new[] { new[] { "--input", $"cond={condPath}" }, [] })
        {
            var (code, stdout, stderr) = CliFixture.Engine(["bench-model", model, .. given, "--repeats", "1", "--threads", "1", "--json"]);
            Assert.That(code, Is.Zero, stderr);
            Assert.That(System.Text.Json.JsonDocument.Parse(stdout).RootElement[0].GetProperty("engine_kernel_nodes").GetInt32(), Is.Zero);
        }
    }

    /// <summary>pixels uint8 [4] cast to float32 plus 0.5, and the pixels themselves back as uint8.</summary>
    [Test]
    public void RunTakesAndGivesUInt8()
    {
        var builder = new ModelBuilder();
        string pixels = builder.Input("pixels", DataType.Uint8, 4);
        string half = builder.Initializer("half", [0.5f]);
        string floats = builder.Node("Cast", [pixels], attributes: [("to", (long)DataType.Float)])[0];
        builder.Output(builder.Node("Add", [floats, half], outputNames: ["shifted"])[0], DataType.Float, 4);
        builder.Output(builder.Node("Identity", [pixels], outputNames: ["same"])[0], DataType.Uint8, 4);
        string model = SaveModel(builder.Build(), "pixels.onnx"), outDir = Path.Combine(_dir, "out");
        string pixelsPath = Path.Combine(_dir, "pixels.npy");
        Npy.Write(pixelsPath, NpyArray.From(new byte[] { 0, 1, 200, 255 }, [4]));

        var (code, stdout, stderr) = CliFixture.Engine("run", model, "--input", $"pixels={pixelsPath}", "--output-dir", outDir, "--threads", "1");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"same: uint8 [4] -> {Path.Combine(outDir, "same.npy")}"));
        using var shifted = Npy.Read(Path.Combine(outDir, "shifted.npy"));
        Assert.That(shifted.Values<float>().ToArray(), Is.EqualTo(new[] { 0.5f, 1.5f, 200.5f, 255.5f }));
        using var same = Npy.Read(Path.Combine(outDir, "same.npy"));
        Assert.That(same.Values<byte>().ToArray(), Is.EqualTo(new byte[] { 0, 1, 200, 255 }));

        string ints = Path.Combine(_dir, "ints.npy");
        Npy.Write(ints, NpyArray.From(new int[4], [4]));
        CliFixture.AssertOneLineError(CliFixture.Engine("run", model, "--input", $"pixels={ints}", "--output-dir", outDir), 1,
            $"pixels: the model takes UInt8, {ints} holds Int32");
    }

    [Test]
    public void RunNamesWhatIsWrong()
    {
        string path = SaveModel(SampleModels.LinearAttentionBlock(Spec));
        CliFixture.AssertOneLineError(CliFixture.Engine("run", path, "--output-dir", _dir), 1, "x, past_state");
        CliFixture.AssertOneLineError(CliFixture.Engine("run", "--output-dir", _dir), 2, "give the model file");
        string ints = Path.Combine(_dir, "ints.npy");
        Npy.Write(ints, NpyArray.From(new int[16], [1, 1, 16]));
        CliFixture.AssertOneLineError(CliFixture.Engine("run", path, "--input", $"x={ints}", "--output-dir", _dir), 1, $"x: the model takes Float, {ints} holds Int32");

        var bad = SampleModels.LinearAttentionNode(new LinearAttentionBlockSpec { QHeads = 3, KvHeads = 2, KeyDim = 8, ValueDim = 8 });
        string x = Path.Combine(_dir, "q.npy");
        Npy.Write(x, NpyArray.From(new float[24], [1, 1, 24]));
        CliFixture.AssertOneLineError(CliFixture.Engine("run", SaveModel(bad, "bad.onnx"), "--input", $"query={x}", "--output-dir", _dir), 1,
            "LinearAttention node 'linear_attention'");
    }

    [Test]
    public void AMissingInputFileNamesTheInputAndThePathAsGiven()
    {
        string path = SaveModel(SampleModels.LinearAttentionBlock(Spec));
        CliFixture.AssertOneLineError(CliFixture.Engine("run", path, "--input", "x=nope.npy", "--output-dir", _dir), 1,
            "engine: error: --input x: file not found: nope.npy");
        CliFixture.AssertOneLineError(CliFixture.Engine("bench-model", path, "--input", "past_state=no-such-folder/s.npy", "--dim", "B=1", "--dim", "T=4"), 1,
            "engine: error: --input past_state: file not found: no-such-folder/s.npy");
    }

    [Test]
    public void InspectListsInputsOutputsAndTheEngineNodes()
    {
        var (code, stdout, stderr) = CliFixture.Engine("inspect", SaveModel(SampleModels.LinearAttentionBlock(Spec with { Domain = "", Layers = 2 })));
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("x: Float [B, T, 16]").And.Contain("past_state_1: Float [B, 1, 8, 8]").And.Contain("y_1: Float [B, T, 16]"));
        Assert.That(stdout, Does.Contain("the engine takes over 2 nodes:").And.Contain("linear_attention_0 (ai.onnx.LinearAttention) -> engine: update_rule gated_delta, per-head decay"));
        Assert.That(stdout, Does.Contain("ai.onnx opset lowered from 27 to 26"));
        Assert.That(stdout, Does.Contain("(IR 13, from Engine.Workloads)"), "the producer: the library that built the model");
    }

    /// <summary>A layer whose companions fold into its LinearAttention: the nodes taken over and the one node that runs them (inspect counted only the first).</summary>
    [Test]
    public void InspectCountsTheEngineNodesLeftOnceFolded()
    {
        var (code, stdout, stderr) = CliFixture.Engine("inspect", SaveModel(GatedDeltaNetLayer.Model(new GatedDeltaNetSpec())));
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("the engine takes over 3 nodes, run as 1 engine node once folded:"));
    }

    [Test]
    public void InspectSaysWhyAFoldWasRefused()
    {
        var (code, stdout, stderr) = CliFixture.Engine("inspect", SaveModel(GatedNormFoldTests.Model(GatedNormFoldTests.Variant.WeightPerHead)));
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("note: gated norm at 'SimplifiedLayerNormalization_")
            .And.Contain("kept with ORT: its weight 'norm_weight' is [3, 16], the fold needs [16] (one head's)"));
    }

    /// <summary>A model ONNX Runtime refuses to run on the random inputs (a Reshape to zeros for a shape): one line, exit code 1.</summary>
    [Test]
    public void AModelThatFailsToRunIsOneLineAndExitCodeOne()
    {
        var builder = new ModelBuilder();
        string x = builder.Input("x", Engine.Onnx.Proto.TensorProto.Types.DataType.Float, 2, 2);
        string shape = builder.Input("shape", Engine.Onnx.Proto.TensorProto.Types.DataType.Int64, 3);
        builder.Output(builder.Op("Reshape", x, shape), Engine.Onnx.Proto.TensorProto.Types.DataType.Float);
        string path = SaveModel(builder.Build(), "reshape.onnx");
        CliFixture.AssertOneLineError(CliFixture.Engine("bench-model", path, "--repeats", "1"), 1, "running the model failed");
    }

    [Test]
    public void BenchModelTimesBothPaths()
    {
        var model = SampleModels.LinearAttentionNode(Spec);
        var (code, stdout, stderr) = CliFixture.Engine("bench-model", SaveModel(model), "--dim", "B=1", "--dim", "T=64", "--repeats", "1", "--threads", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        var row = System.Text.Json.JsonDocument.Parse(stdout).RootElement[0];
        Assert.That(row.GetProperty("engine_kernel_nodes").GetInt32(), Is.EqualTo(1));
        foreach (var key in new[] { "engine_ms", "ort_ms", "engine_node_ms", "ort_node_ms" })
            Assert.That(row.GetProperty(key).GetDouble(), Is.GreaterThan(0), key);
        Assert.That(row.GetProperty("engine_matmul_share").GetDouble(), Is.Zero, "the node alone has no MatMul");
    }
}

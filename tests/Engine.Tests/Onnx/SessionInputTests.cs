using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Onnx.Proto;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>Run and RunInto refuse inputs the model does not take before ONNX Runtime runs, naming the input and the model.</summary>
[TestFixture]
public sealed class SessionInputTests
{
    private static readonly LinearAttentionNodeCase Case = new() { Rule = UpdateRule.Gated, PastState = true, B = 1, T = 3 };

    public static IEnumerable<TestCaseData> BadInputs()
    {
        var inputs = Case.Inputs();
        TestCaseData Make(Action<Dictionary<string, TensorData>> edit, string why, string name)
        {
            var edited = new Dictionary<string, TensorData>(inputs);
            edit(edited);
            return new TestCaseData(edited, why).SetName(name);
        }
        yield return Make(d => d.Remove("past_state"), "the required input 'past_state' is missing", "Missing past_state");
        yield return Make(d => d["pastState"] = d["past_state"], "has no input 'pastState'", "Unknown input name");
        yield return Make(d => d["query"] = TensorData.Create(new double[1 * 3 * 32], 1, 3, 32), "input 'query' must be Float, got Double", "Wrong element type");
        yield return Make(d => d["key"] = TensorData.Create(new float[3 * 32], 3, 32), "input 'key' must have rank 3 [B, T, 32], got [3, 32]", "Wrong rank");
        // The shape is the caller's array: changed after the tensor was made, ORT was handed a shape the values do not
        // fill (its own error, naming neither the input nor the model) or a part of them (a silent prefix).
        foreach (long tokens in new long[] { 4, 2, -1 })
            yield return Make(d =>
            {
                var key = TensorData.Create(new float[1 * 3 * 32], 1, 3, 32);
                key.Shape[1] = tokens;
                d["key"] = key;
            }, $"input 'key' has the shape [1, {tokens}, 32] but holds 96 values: its Shape array was changed", $"Shape changed to {tokens} tokens");
    }

    [TestCaseSource(nameof(BadInputs))]
    public void RefusedNamingTheInputAndTheModel(Dictionary<string, TensorData> inputs, string why)
    {
        var folder = Directory.CreateTempSubdirectory("engine-session-").FullName;
        try
        {
            string path = Path.Combine(folder, "node.onnx");
            Case.Model().Save(path);
            using var session = ModelSession.Open(path, OnnxTestHost.Options(HandoverBackend.Cpu));
            var e = Assert.Throws<ArgumentException>(() => session.Run(inputs));
            Assert.That(e!.Message, Does.StartWith($"{path}: ").And.Contain(why));
            var outputs = new Dictionary<string, TensorData> { ["output"] = TensorData.Create(new float[1 * 3 * 24], 1, 3, 24) };
            e = Assert.Throws<ArgumentException>(() => session.RunInto(inputs, outputs));
            Assert.That(e!.Message, Does.StartWith($"{path}: ").And.Contain(why));

            var good = session.Run(Case.Inputs());
            OnnxAssert.Close(good["output"], Case.Reference(Case.Inputs()).Output, "output after the refused runs");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void AnOutputWhoseShapeWasChangedIsRefusedByName()
    {
        using var session = OnnxTestHost.Open(Case.Model(), HandoverBackend.Cpu);
        var output = TensorData.Create(new float[1 * 3 * 24], 1, 3, 24);
        output.Shape[1] = 2;
        var e = Assert.Throws<ArgumentException>(() => session.RunInto(Case.Inputs(), new Dictionary<string, TensorData> { ["output"] = output }));
        Assert.That(e!.Message, Does.StartWith("output: has the shape [1, 2, 24] but holds 72 values"));
    }

    [Test]
    public void ModelFromBytesIsNamedByItsGraph()
    {
        using var session = OnnxTestHost.Open(Case.Model(), HandoverBackend.Cpu);
        var inputs = Case.Inputs();
        inputs.Remove("past_state");
        var e = Assert.Throws<ArgumentException>(() => session.Run(inputs));
        Assert.That(e!.Message, Does.StartWith("model 'linear_attention': the required input 'past_state' is missing"));
    }

    /// <summary>The node's model with a String constant output, a Bool input negated to an output and, when asked, a String input.</summary>
    private static OnnxModel WithStringAndBool(bool stringInput)
    {
        var model = Case.Model();
        var graph = model.Proto.Graph;
        var label = new TensorProto { Name = "label_value", DataType = (int)TensorElementType.String };
        label.StringData.Add(Google.Protobuf.ByteString.CopyFromUtf8("gated"));
        var constant = new NodeProto { OpType = "Constant", Name = "label", Output = { "label" } };
        constant.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = label });
        graph.Node.Add(constant);
        graph.Node.Add(new NodeProto { OpType = "Not", Name = "not", Input = { "flag" }, Output = { "not_flag" } });
        graph.Input.Add(Scalar("flag", TensorElementType.Bool));
        graph.Output.Add(Scalar("label", TensorElementType.String));
        graph.Output.Add(Scalar("not_flag", TensorElementType.Bool));
        if (stringInput)
        {
            graph.Node.Add(new NodeProto { OpType = "Identity", Name = "echo", Input = { "text" }, Output = { "echoed" } });
            graph.Input.Add(Scalar("text", TensorElementType.String));
            graph.Output.Add(Scalar("echoed", TensorElementType.String));
        }
        return model;
    }

    private static ValueInfoProto Scalar(string name, TensorElementType type) =>
        new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = new TensorShapeProto() } } };

    [TestCase(HandoverBackend.Cpu)]
    [TestCase(HandoverBackend.None)]
    public void AStringOutputIsRefusedByNameAndTheOthersRun(HandoverBackend backend)
    {
        using var session = OnnxTestHost.Open(WithStringAndBool(stringInput: false), backend);
        var inputs = new Dictionary<string, TensorData>(Case.Inputs()) { ["flag"] = TensorData.Create([true]) };
        var e = Assert.Throws<ArgumentException>(() => session.Run(inputs));
        Assert.That(e!.Message, Does.StartWith("label: model 'linear_attention''s output is a String tensor, which TensorData does not hold")
            .And.Contain("(those it holds: output, present_state, not_flag)"));

        var outputs = session.Run(inputs, ["output", "not_flag"]);
        Assert.That(outputs["not_flag"].As<bool>(), Is.EqualTo(new[] { false }));
        OnnxAssert.Close(outputs["output"], Case.Reference(Case.Inputs()).Output, "output beside the String and Bool values");
    }

    [Test]
    public void AStringInputIsNamedAsOneTensorDataDoesNotHold()
    {
        using var session = OnnxTestHost.Open(WithStringAndBool(stringInput: true), HandoverBackend.Cpu);
        var inputs = new Dictionary<string, TensorData>(Case.Inputs()) { ["flag"] = TensorData.Create([true]) };
        var e = Assert.Throws<ArgumentException>(() => session.Run(inputs, ["output"]));
        Assert.That(e!.Message, Does.StartWith("model 'linear_attention': the required input 'text' is a String tensor, which TensorData does not hold"));
    }

    [TestCase(HandoverBackend.Cpu)]
    [TestCase(HandoverBackend.None)]
    public void AnOutputOfAnotherShapeIsOrtsInvalidArgumentAndTheSessionRunsOn(HandoverBackend backend)
    {
        using var session = OnnxTestHost.Open(Case.Model(), backend);
        var shortOutput = new Dictionary<string, TensorData> { ["output"] = TensorData.Create(new float[1 * 2 * 24], 1, 2, 24) };
        var e = Assert.Throws<ModelRunException>(() => session.RunInto(Case.Inputs(), shortOutput));
        Assert.That(e!.Message, Does.StartWith("running the model failed: [ErrorCode:InvalidArgument] ")
            .And.Contain("output 'output' of node 'linear_attention'"));

        var output = TensorData.Create(Enumerable.Repeat(float.NaN, 1 * 3 * 24).ToArray(), 1, 3, 24);
        session.RunInto(Case.Inputs(), new Dictionary<string, TensorData> { ["output"] = output });
        OnnxAssert.Close(output, Case.Reference(Case.Inputs()).Output, "output after the refused run");
    }
}

using Engine.Onnx;
using Engine.Onnx.Ops;
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
}

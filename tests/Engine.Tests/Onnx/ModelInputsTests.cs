using Engine.Onnx;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>Random model inputs: those given otherwise are left out, and the rest are what they would be without them.</summary>
[TestFixture]
public sealed class ModelInputsTests
{
    [Test]
    public void RandomLeavesOutTheExceptedInputsAndMakesTheOthersAsIfTheyWereAbsent()
    {
        var all = new ModelBuilder();
        all.Input("query", F.Float, 2, "T");
        all.Input("given", F.Float, "G");
        all.Input("decay", F.Float, 2, 3);
        all.Output("query", F.Float, null);
        var without = new ModelBuilder();
        without.Input("query", F.Float, 2, "T");
        without.Input("decay", F.Float, 2, 3);
        without.Output("query", F.Float, null);
        var dims = new Dictionary<string, long> { ["T"] = 4 };

        var made = ModelInputs.Random(all.Build(), dims, seed: 5, except: ["given"]);
        var expected = ModelInputs.Random(without.Build(), dims, seed: 5);

        Assert.That(made.Keys, Is.EquivalentTo(new[] { "query", "decay" }), "no value for the excepted input, whose dim 'G' is not given");
        foreach (var name in expected.Keys)
            Assert.That(made[name].As<float>(), Is.EqualTo(expected[name].As<float>()), name);
    }
}

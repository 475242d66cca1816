using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// The hand-over's kernels over graph inputs that lie flush against inaccessible pages, at their start and at their end
/// (ORT hands a node a graph input's memory as it is): a kernel that reads one byte outside the tensors of its call stops
/// the process. LinearAttention and GatedDeltaNet nodes of every element type and layout (packed QKV, ragged requests with an
/// empty and a one-token one, past states read in place) and CausalConvWithState nodes, against ONNX Runtime alone on
/// ordinary memory.
/// </summary>
[TestFixture]
public sealed class GuardedHandoverTests
{
    [SetUp]
    public void RequireGuardPages() => Assume.That(GuardedMemory.Supported, "guard pages need Linux");

    public static IEnumerable<TestCaseData> Cases()
    {
        GatedDeltaNetNodeCase[] gdn =
        [
            new() { Spec = new() { PackedQkv = true, Ragged = true, QkL2Norm = true }, Lengths = [5, 0, 1, 40] },
            new() { Spec = new() { DecayPerKey = true, Layout = GatedDeltaNetLayout.Batched, StateUpdateCapacity = 3 }, CaptureCount = [2, 3] },
            new() { Spec = new() { UpdateRule = "gated", DecayGateActivation = "softplus", PackedQkv = true, Ragged = true }, Lengths = [1, 0, 37] },
            new() { Spec = new() { ElementType = TensorElementType.Float16, PackedQkv = true }, Lengths = [1, 1] },
            new() { Spec = new() { ElementType = TensorElementType.BFloat16, UpdateRule = "linear", QkL2Norm = true } },
        ];
        LinearAttentionNodeCase[] la =
        [
            new() { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, T = 40, Hq = 2, Hkv = 4, Scale = 1f, PastState = true },
            new() { Rule = UpdateRule.Gated, T = 1, PastState = true },
            new() { Rule = UpdateRule.Delta, Half = true, T = 21, PastState = true },
        ];
        ConvNodeCase[] conv = [new() { T = 1, ChannelsLast = true }, new() { T = 2, Past = false }, new() { B = 1, T = 300, C = 64, Half = true }];
        foreach (bool flushEnd in new[] { false, true })
        {
            string end = flushEnd ? "flush end" : "flush start";
            foreach (var c in conv)
                yield return new TestCaseData(c.Model(), c.Inputs("guarded conv"), c.Tolerance, flushEnd)
                    .SetName($"GuardedHandover CausalConvWithState T={c.T} C={c.C}{(c.ChannelsLast ? " channels_last" : "")}{(c.Past ? "" : " no past")}{(c.Half ? " float16" : "")}, {end}");
            foreach (var c in gdn)
                yield return new TestCaseData(c.Model(), c.Inputs(), c.Tolerance, flushEnd).SetName($"GuardedHandover GatedDeltaNet {c.Name}, {end}");
            foreach (var c in la)
                yield return new TestCaseData(c.Model(), c.Inputs(), c.Tolerance, flushEnd).SetName($"GuardedHandover LinearAttention {c.Name}, {end}");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void KernelsReadOnlyTheirInputs(OnnxModel model, Dictionary<string, TensorData> inputs, double tolerance, bool flushEnd)
    {
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        var expected = ort.Run(inputs);
        var regions = inputs.ToDictionary(p => p.Key, p => GuardedMemory.Of(p.Value.Bytes, flushEnd));
        try
        {
            var guarded = inputs.ToDictionary(p => p.Key, p => TensorData.Over(p.Value.ElementType, p.Value.Shape, regions[p.Key].Memory));
            using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
            Assert.That(engine.Handover.EngineNodes, Has.Exactly(1).Items, "the engine takes the node");
            var actual = engine.Run(guarded);
            foreach (var (name, value) in expected)
                OnnxAssert.Close(actual[name], value, $"{name}, hand-over on guarded inputs vs ORT alone", tolerance);
        }
        finally
        {
            foreach (var region in regions.Values) region.Dispose();
        }
    }
}

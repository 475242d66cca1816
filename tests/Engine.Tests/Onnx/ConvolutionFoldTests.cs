using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// Transpose → CausalConvWithState → Transpose → Split → q/k normalization → LinearAttention (ONNX Runtime GenAI's Gated DeltaNet
/// mixer): the convolution folds into the engine's attention node, which convolves the packed rows as it loads them and writes
/// the convolution's present state. It folds only where nothing else reads the convolved rows, and every variant runs as ONNX
/// Runtime alone runs it, at lengths shorter and longer than the convolution's reach (past states random, as in decode).
/// </summary>
[TestFixture]
public sealed class ConvolutionFoldTests
{
    private const int Batch = 2, QkHeads = 2, ValueHeads = 4, Dk = 16, Dv = 8, ConvWidth = 4;
    private const int KeyWidth = QkHeads * Dk, ValueWidth = ValueHeads * Dv, Channels = 2 * KeyWidth + ValueWidth;

    /// <summary>
    /// How a test model departs from the builder's pattern. EveryAttributeWritten: the convolution's every attribute written out at
    /// its default, as ORT writes a model it saves optimized.
    /// </summary>
    public enum Variant { AsTheBuilderWrites, NoBiasNoActivation, EveryAttributeWritten, ConvolvedRowsAlsoAGraphOutput }

    [TestCase(Variant.AsTheBuilderWrites, 37, true)]
    [TestCase(Variant.AsTheBuilderWrites, 1, true)]
    [TestCase(Variant.AsTheBuilderWrites, 2, true)]
    [TestCase(Variant.NoBiasNoActivation, 37, true)]
    [TestCase(Variant.EveryAttributeWritten, 37, true)]
    [TestCase(Variant.EveryAttributeWritten, 1, true)]
    [TestCase(Variant.ConvolvedRowsAlsoAGraphOutput, 37, false)]
    public void FoldsWhereThePatternAllowsAndAgreesWithOrtAlone(Variant variant, int length, bool folded)
    {
        var model = Model(variant, length);
        using var ort = OnnxTestHost.Open(model, HandoverBackend.None);
        using var engine = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var attention = engine.Handover.EngineNodes.Single(n => n.OpType == "LinearAttention");
        Assert.That(attention.Detail.Contains("convolves the rows"), Is.EqualTo(folded), attention.Detail);
        Assert.That(engine.Handover.Model.NodeOpTypes.Contains("CausalConvWithState"), Is.EqualTo(!folded), "CausalConvWithState node left");
        if (!folded) Assert.That(attention.Detail, Does.Contain("convolution 'conv' kept: '").And.Contain("' has another reader"));

        var random = new Random(5);
        var inputs = new Dictionary<string, TensorData>
        {
            ["x"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * length * Channels), Batch, length, Channels),
            ["past_conv_state"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * Channels * (ConvWidth - 1)), Batch, Channels, ConvWidth - 1),
            ["past_state"] = TensorData.Create(SampleModels.Weights(random, 1, Batch * ValueHeads * Dk * Dv), Batch, ValueHeads, Dk, Dv),
            ["decay"] = TensorData.Create(Enumerable.Range(0, Batch * length * ValueHeads).Select(i => -0.05f * (1 + i % 7)).ToArray(), Batch, length, ValueHeads),
            ["beta"] = TensorData.Create(Enumerable.Range(0, Batch * length * ValueHeads).Select(i => 0.2f + 0.1f * (i % 6)).ToArray(), Batch, length, ValueHeads),
        };
        OnnxAssert.AgreesWithOrtAlone(engine, ort, inputs, $"{variant}, T = {length}");
    }

    private static OnnxModel Model(Variant variant, int length)
    {
        var b = new ModelBuilder().Import("com.microsoft", 1);
        const TensorProto.Types.DataType F = TensorProto.Types.DataType.Float;
        var random = new Random(11);
        string x = b.Input("x", F, Batch, length, Channels);
        string pastConv = b.Input("past_conv_state", F, Batch, Channels, ConvWidth - 1);
        string past = b.Input("past_state", F, Batch, ValueHeads, Dk, Dv);
        string decay = b.Input("decay", F, Batch, length, ValueHeads);
        string beta = b.Input("beta", F, Batch, length, ValueHeads);

        string channelsFirst = b.Node("Transpose", [x], attributes: [("perm", new long[] { 0, 2, 1 })])[0];
        string weight = b.Initializer("conv_weight", SampleModels.Weights(random, ConvWidth, Channels), Channels, 1, ConvWidth);
        string[] convInputs = variant == Variant.NoBiasNoActivation
            ? [channelsFirst, weight, "", pastConv]
            : [channelsFirst, weight, b.Initializer("conv_bias", SampleModels.Weights(random, 1, Channels), Channels), pastConv];
        (string, object)[] convAttributes = variant switch
        {
            Variant.NoBiasNoActivation => [("ndim", 1L)],
            Variant.EveryAttributeWritten =>
            [
                ("channels_last", 0L), ("input_channel_offset", 0L), ("state_window", 0L), ("activation", "silu"), ("ndim", 1L), ("dilation", 1L),
                ("state_update_capacity", 0L), ("input_channels", 0L), ("state_length", 0L), ("state_channels_last", -1L),
            ],
            _ => [("ndim", 1L), ("activation", "silu")],
        };
        string conv = b.Node("CausalConvWithState", convInputs, domain: "com.microsoft", name: "conv", outputNames: ["conv_out", "present_conv_state"],
            attributes: convAttributes)[0];
        string rows = b.Node("Transpose", [conv], attributes: [("perm", new long[] { 0, 2, 1 })])[0];

        var split = b.Node("Split", [rows, b.Int64s("sizes", KeyWidth, KeyWidth, ValueWidth)], outputs: 3, attributes: [("axis", -1L)]);
        string PerHead(string part, string input)
        {
            string heads = b.Op("Reshape", input, b.Int64s(part + "_heads", 0, 0, QkHeads, Dk));
            string unit = b.Node("LpNormalization", [heads], attributes: [("axis", -1L), ("p", 2L)])[0];
            return b.Op("Reshape", unit, b.Int64s(part + "_packed", 0, 0, KeyWidth));
        }
        string q = b.Op("Mul", PerHead("q", split[0]), b.Initializer("q_scale", [1f / MathF.Sqrt(Dk)], 1));
        b.Node("LinearAttention", [q, PerHead("k", split[1]), split[2], past, decay, beta], domain: "com.microsoft", name: "attention",
            outputNames: ["output", "present_state"],
            attributes: [("q_num_heads", (long)QkHeads), ("kv_num_heads", (long)ValueHeads), ("update_rule", "gated_delta"), ("scale", 1f)]);
        b.Output("output", F, Batch, length, ValueWidth);
        b.Output("present_state", F, Batch, ValueHeads, Dk, Dv);
        b.Output("present_conv_state", F, Batch, Channels, ConvWidth - 1);
        if (variant == Variant.ConvolvedRowsAlsoAGraphOutput) b.Output(rows, F, Batch, length, Channels);
        return b.Build();
    }
}

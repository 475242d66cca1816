using System.Numerics.Tensors;
using Engine.Kernels.Lssl;
using Engine.Onnx;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// The ai.engine LsslScan node against the LSSL layer on the float64 reference backend, built from the same
/// initializers: alone, between ORT nodes, decoding with its state fed back, and refused when it is malformed.
/// </summary>
[TestFixture]
public sealed class LsslScanTests
{
    private const int Batch = 2, Length = 45;

    /// <summary>y and the final state of the model's LSSL layer on the reference backend.</summary>
    public static (double[] Y, double[] State) Reference(OnnxModel model, float[] u, float[]? past, string discretization, int batch, int length)
    {
        Tensor<float> Parameter(string name)
        {
            var t = model.ReadTensor(model.Graph.Initializer.Single(i => i.Name == name));
            return Tensor.Create(t.As<float>(), Array.ConvertAll(t.Shape, d => (nint)d));
        }
        var options = new LsslOptions
        {
            LogDt = true,
            Discretization = discretization switch { "zoh" => LsslDiscretization.ZeroOrderHold, _ => LsslDiscretization.Bilinear },
        };
        using var layer = new LsslLayer(Parameter("A"), Parameter("B"), Parameter("C"), Parameter("D"), Parameter("dt"), options);
        int h = layer.Channels, n = layer.StateSize;
        var y = new float[batch * length * h];
        var state = new float[batch * h * n];
        layer.Forward(TestDevices.Reference, new ReadOnlyTensorSpan<float>(u, [batch, length, h]), new TensorSpan<float>(y, [batch, length, h]),
            past is null ? default : new ReadOnlyTensorSpan<float>(past, [batch, h, n]), new TensorSpan<float>(state, [batch, h, n]), LsslMode.Recurrent);
        return (TestData.ToDouble(y), TestData.ToDouble(state));
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        yield return new TestCaseData(6, 8, false, "bilinear", true).SetName("LsslScan dense shared A, bilinear, past state");
        yield return new TestCaseData(5, 16, true, "zoh", false).SetName("LsslScan diagonal A, zero-order hold");
    }

    [TestCaseSource(nameof(Cases))]
    public void LsslScanMatchesTheReference(int channels, int stateSize, bool diagonal, string discretization, bool past)
    {
        var model = SampleModels.LsslScanNode(channels, stateSize, diagonal, past, discretization);
        var data = new TestData(AttentionCase.StableSeed($"lssl {channels} {stateSize} {diagonal} {discretization}"));
        var u = data.Normal(Batch * Length * channels);
        var state = past ? data.Normal(Batch * channels * stateSize, 0.3) : null;
        var inputs = new Dictionary<string, TensorData> { ["u"] = TensorData.Create(u, Batch, Length, channels) };
        if (state is not null) inputs["past_state"] = TensorData.Create(state, Batch, channels, stateSize);
        var expected = Reference(model, u, state, discretization, Batch, Length);

        using var session = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        Assert.That(session.Handover.EngineNodes.Single().OpType, Is.EqualTo("LsslScan"));
        var result = session.Run(inputs);
        OnnxAssert.Close(result["y"], expected.Y, "y vs reference");
        OnnxAssert.Close(result["present_state"], expected.State, "present_state vs reference");
    }

    [Test]
    public void LsslScanDecodesWithItsStateFedBack()
    {
        const int channels = 4, stateSize = 8;
        var model = SampleModels.LsslScanNode(channels, stateSize);
        var data = new TestData(AttentionCase.StableSeed("lssl decode"));
        var u = data.Normal(Length * channels);
        var expected = Reference(model, u, new float[channels * stateSize], "bilinear", 1, Length);
        using var session = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        var state = TensorData.Create(new float[channels * stateSize], 1, channels, stateSize);
        var y = new List<float>();
        for (int t = 0; t < Length; t++)
        {
            var result = session.Run(new Dictionary<string, TensorData>
            {
                ["u"] = TensorData.Create(u.AsSpan(t * channels, channels).ToArray(), 1, 1, channels),
                ["past_state"] = state,
            });
            y.AddRange(result["y"].As<float>());
            state = result["present_state"];
        }
        OnnxAssert.Close(TensorData.Create(y.ToArray(), 1, Length, channels), expected.Y, "y step by step");
        OnnxAssert.Close(state, expected.State, "state after the steps");
    }

    [Test]
    public void LsslScanBetweenOrtNodes()
    {
        // x → MatMul → LsslScan → Tanh → y: ORT nodes on both sides of the engine node.
        const int hidden = 3, channels = 4, stateSize = 8;
        var scan = SampleModels.LsslScanNode(channels, stateSize, pastState: false);
        var b = new ModelBuilder(21).Import(HandoverRewriter.EngineDomain, 1);
        var data = new TestData(AttentionCase.StableSeed("lssl between ORT nodes"));
        var w = data.Normal(hidden * channels, 0.5);
        b.Input("x", F.Float, "B", "L", hidden);
        var u = b.Op("MatMul", "x", b.Initializer("w", w, hidden, channels));
        var parameters = scan.Graph.Initializer.Select(t => b.Initializer(t.Name, scan.ReadTensor(t))).ToArray();
        var y = b.Node("LsslScan", [u, "", .. parameters], domain: HandoverRewriter.EngineDomain, name: "lssl", outputNames: ["scanned"],
            attributes: [("log_dt", 1L)])[0];
        b.Node("Tanh", [y], outputNames: ["y"]);
        b.Output("y", F.Float, "B", "L", channels);
        var model = b.Build();

        var x = data.Normal(Batch * Length * hidden);
        var projected = new float[Batch * Length * channels];
        for (int r = 0; r < Batch * Length; r++)
            for (int c = 0; c < channels; c++)
            {
                double sum = 0;
                for (int i = 0; i < hidden; i++) sum += (double)x[r * hidden + i] * w[i * channels + c];
                projected[r * channels + c] = (float)sum;
            }
        var expected = Reference(model, projected, null, "bilinear", Batch, Length).Y.Select(Math.Tanh).ToArray();
        using var session = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        OnnxAssert.Close(session.Run(new Dictionary<string, TensorData> { ["x"] = TensorData.Create(x, Batch, Length, hidden) })["y"], expected, "y vs reference");
    }

    [Test]
    public void LsslScanRefusesParametersThatAreNotInitializers()
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.EngineDomain, 1);
        b.Input("u", F.Float, 1, 5, 2);
        b.Input("A", F.Float, 2, 4);
        b.Node("LsslScan", ["u", "", "A", b.Initializer("B", new float[4], 4), b.Initializer("C", new float[8], 2, 4), b.Initializer("D", new float[2], 2),
            b.Initializer("dt", [0.01f, 0.02f], 2)], domain: HandoverRewriter.EngineDomain, name: "lssl", outputNames: ["y"]);
        b.Output("y", F.Float, null);
        var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(b.Build(), HandoverBackend.Cpu).Dispose());
        Assert.That(e!.Message, Does.Contain("LsslScan node 'lssl'").And.Contain("input A ('A') must be a float32 initializer"));
    }

    [Test]
    public void LsslScanRefusesInconsistentShapes()
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.EngineDomain, 1);
        b.Input("u", F.Float, 1, 5, 3);
        b.Node("LsslScan", ["u", "", b.Initializer("A", new float[8], 2, 4), b.Initializer("B", new float[4], 4), b.Initializer("C", new float[8], 2, 4),
            b.Initializer("D", new float[2], 2), b.Initializer("dt", [0.01f, 0.02f], 2)], domain: HandoverRewriter.EngineDomain, name: "lssl", outputNames: ["y"]);
        b.Output("y", F.Float, null);
        var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(b.Build(), HandoverBackend.Cpu).Dispose());
        Assert.That(e!.Message, Does.Contain("LsslScan node 'lssl'").And.Contain("u has 3 channels, C (H, N) has 2"));
    }

    [TestCase(1L << 40, TestName = "LsslScan refuses a chunk_length beyond int's range naming the value given")]
    [TestCase(-5L, TestName = "LsslScan refuses a negative chunk_length naming the value given")]
    public void LsslScanRefusesAChunkLengthNamingTheValueGiven(long chunkLength)
    {
        var model = SampleModels.LsslScanNode(channels: 4, stateSize: 8);
        model.Proto.Graph.Node.Single().Attribute.Add(new Engine.Onnx.Proto.AttributeProto
        {
            Name = "chunk_length", Type = Engine.Onnx.Proto.AttributeProto.Types.AttributeType.Int, I = chunkLength,
        });
        var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, HandoverBackend.Cpu).Dispose());
        Assert.That(e!.Message, Does.Contain($"LsslScan node 'lssl': chunk_length must be one of 16, 32, 64, 128, 256, got {chunkLength}"));
    }
}

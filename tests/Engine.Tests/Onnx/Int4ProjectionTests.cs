using Engine.Onnx;
using Engine.Onnx.Proto;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// The int4 projections of the sample decoders hold what ONNX Runtime's MatMulNBits reads: its product agrees with x times the
/// weights decoded from the model's initializers by MatMulNBits' definition ((code − 8) · scale, codes packed two a byte,
/// the lower row in the low nibble), in float64, and those weights are the float weights to int4's rounding.
/// </summary>
[TestFixture]
public sealed class Int4ProjectionTests
{
    [TestCase(64, 48)]
    [TestCase(70, 5)]   // rows not a multiple of the block: the last block is padded with zeros
    public void OrtsProductIsXTimesTheDecodedWeights(int rows, int columns)
    {
        var random = new Random(11);
        var weight = SampleModels.Weights(random, rows, columns);
        var b = new ModelBuilder(21, "projection").Import(HandoverRewriter.MicrosoftDomain, 1);
        string x = b.Input("x", TensorProto.Types.DataType.Float, 1, 3, rows);
        Projection.Add(b, x, "w", weight, rows, columns, TensorElementType.Float, int4AccuracyLevel: 4, "/proj", "y");
        b.Output("y", TensorProto.Types.DataType.Float, 1, 3, columns);
        var model = b.Build();
        Assert.That(model.NodeOpTypes, Is.EqualTo(new[] { "MatMulNBits" }));

        var initializers = model.Proto.Graph.Initializer.ToDictionary(t => t.Name);
        byte[] codes = initializers[$"w_Q4G{Projection.Int4Block}"].RawData.ToByteArray();
        float[] scales = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(initializers["w_scales"].RawData.Span).ToArray();
        int blocks = (rows + Projection.Int4Block - 1) / Projection.Int4Block;
        var decoded = new double[rows * columns];
        for (int n = 0; n < columns; n++)
            for (int r = 0; r < rows; r++)
            {
                int block = r / Projection.Int4Block, i = r % Projection.Int4Block;
                byte pair = codes[(n * blocks + block) * (Projection.Int4Block / 2) + i / 2];
                int code = i % 2 == 0 ? pair & 0xF : pair >> 4;
                decoded[r * columns + n] = (code - 8) * (double)scales[n * blocks + block];
            }
        double rounding = Math.Sqrt(decoded.Select((d, i) => (d - weight[i]) * (d - weight[i])).Average() / weight.Select(w => (double)w * w).Average());
        Assert.That(rounding, Is.GreaterThan(0).And.LessThan(0.15), "the decoded weights are the float weights to int4's rounding");

        var xs = Enumerable.Range(0, 3 * rows).Select(_ => (float)(2 * random.NextDouble() - 1)).ToArray();
        var expected = new double[3 * columns];
        for (int t = 0; t < 3; t++)
            for (int n = 0; n < columns; n++)
                for (int r = 0; r < rows; r++)
                    expected[t * columns + n] += xs[t * rows + r] * decoded[r * columns + n];
        using var session = OnnxTestHost.Open(model, HandoverBackend.None);
        var y = session.Run(new Dictionary<string, TensorData> { ["x"] = TensorData.Create(xs, 1, 3, rows) })["y"];
        // accuracy_level 4 multiplies in int8: x is quantized per block of 32 to 8 bits.
        OnnxAssert.Close(y, expected, "MatMulNBits against x times the decoded weights", tolerance: 2e-2);
    }
}

using Engine.Onnx.Ops;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// The hand-over's bfloat16 conversions against ONNX Runtime's own (round to nearest even), over whole vectors and the
/// scalar tail, ties included; results bfloat16 would write as infinity are refused, naming the tensor and the index.
/// </summary>
[TestFixture]
public sealed class BFloat16ValuesTests
{
    [TestCase(1)]
    [TestCase(31)]
    [TestCase(32)]
    [TestCase(1000)]
    public void RoundTripsAsOnnxRuntimeConverts(int count)
    {
        var data = new TestData(count);
        var values = data.Normal(count, 100.0);
        // Ties: a float halfway between two bfloat16 values (the lower 16 bits 0x8000), each way of the even rule.
        if (count > 2)
        {
            values[0] = BitConverter.UInt32BitsToSingle(0x3F80_8000);
            values[1] = BitConverter.UInt32BitsToSingle(0x3F81_8000);
        }
        var bits = new ushort[count];
        BFloat16Values.FromSingle(values, bits, "output");
        var expected = TestData.ToBFloat16(values);
        Assert.That(bits, Is.EqualTo(expected.Select(b => b.value)), "rounded bits");

        var back = Numerics.NaNs(count);
        BFloat16Values.ToSingle(bits, back);
        Assert.That(back, Is.EqualTo(TestData.FromBFloat16(expected)), "widened");
    }

    [TestCase(3.397e38f, "outside bfloat16's range")]
    [TestCase(float.PositiveInfinity, "is not finite")]
    [TestCase(float.NaN, "is not finite")]
    public void ValuesBFloat16CannotHoldAreRefused(float bad, string fragment)
    {
        // In a whole vector, and in the scalar tail.
        foreach (int at in new[] { 3, 49 })
        {
            var values = new float[50];
            values[at] = bad;
            var e = Assert.Catch<ArgumentException>(() => BFloat16Values.FromSingle(values, new ushort[50], "output"))!;
            Assert.That(e.Message, Does.StartWith($"output: value {bad} at flat index {at} ").And.Contain(fragment));
        }
        Assert.DoesNotThrow(() => BFloat16Values.FromSingle([3.396e38f, -3.396e38f], new ushort[2], "output"), "the largest values that round to finite ones");
    }
}

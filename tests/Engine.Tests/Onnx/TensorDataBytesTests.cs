using Engine.Onnx;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>TensorData.Over and FromBytes take bytes that hold exactly what the shape says.</summary>
[TestFixture]
public sealed class TensorDataBytesTests
{
    /// <summary>
    /// The shape's byte count wrapped past long's range: 2^62 floats "needed" 0 bytes, so Over made a tensor of 2^62
    /// elements over no memory, and FromBytes failed inside Array.CreateInstance instead of naming the shape.
    /// </summary>
    [TestCase(TensorElementType.Float, 1L << 62)]
    [TestCase(TensorElementType.Double, 1L << 61)]
    public void AShapeWhoseByteCountPassesALongIsRefused(TensorElementType type, long elements)
    {
        long[] shape = [elements];
        var over = Assert.Throws<ArgumentException>(() => TensorData.Over(type, shape, ReadOnlyMemory<byte>.Empty))!;
        Assert.That(over.Message, Does.Contain($"tensor of shape [{elements}] needs"));
        var copy = Assert.Throws<ArgumentException>(() => TensorData.FromBytes(type, shape, ReadOnlySpan<byte>.Empty))!;
        Assert.That(copy.Message, Does.Contain($"tensor of shape [{elements}] needs"));
    }

    [Test]
    public void BytesThatHoldTheShapeAreTaken()
    {
        var data = TensorData.Over(TensorElementType.Float, [2, 3], new byte[24]);
        Assert.That(data.ElementCount, Is.EqualTo(6));
        Assert.That(TensorData.FromBytes(TensorElementType.Float16, [4], new byte[8]).ElementCount, Is.EqualTo(4));
        Assert.Throws<ArgumentException>(() => TensorData.Over(TensorElementType.Float, [2, 3], new byte[20]));
    }
}

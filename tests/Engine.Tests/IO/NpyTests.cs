using System.Text;
using Engine.IO;
using NUnit.Framework;

namespace Engine.Tests.IO;

[TestFixture]
public sealed class NpyTests
{
    private static NpyArray RoundTrip(NpyArray a)
    {
        using var stream = new MemoryStream();
        Npy.Write(stream, a);
        stream.Position = 0;
        return Npy.Read(stream);
    }

    [Test]
    public void EveryTypeRoundTrips()
    {
        var f = RoundTrip(NpyArray.From([1f, -2.5f, 3e-8f, float.MaxValue, 0f, 7f], [2, 3]));
        Assert.That(f.Shape, Is.EqualTo(new nint[] { 2, 3 }));
        Assert.That(f.ToFloat32(), Is.EqualTo(new[] { 1f, -2.5f, 3e-8f, float.MaxValue, 0f, 7f }));
        Assert.That(RoundTrip(NpyArray.From([(Half)1.5f, (Half)(-2f)], [2])).ToFloat16(), Is.EqualTo(new[] { (Half)1.5f, (Half)(-2f) }));
        Assert.That(RoundTrip(NpyArray.From([1.0, 0.1], [2, 1])).ToFloat32(), Is.EqualTo(new[] { 1f, 0.1f }));
        Assert.That(RoundTrip(NpyArray.From([0, 5, 9], [3])).ToInt32(), Is.EqualTo(new[] { 0, 5, 9 }));
        Assert.That(RoundTrip(NpyArray.From([0L, 1L << 20], [2])).ToInt32(), Is.EqualTo(new[] { 0, 1 << 20 }));
        var scalar = RoundTrip(NpyArray.From([4f], []));
        Assert.That(scalar.Shape, Is.Empty);
        Assert.That(RoundTrip(NpyArray.From(ReadOnlySpan<float>.Empty, [0, 4])).Shape, Is.EqualTo(new nint[] { 0, 4 }));
    }

    /// <summary>A finite value past the narrower type's range is refused by value and index (it became ±∞ silently).</summary>
    [Test]
    public void NarrowingPastTheRangeIsRefused()
    {
        var wide = RoundTrip(NpyArray.From([1.5, 1e300], [2]));
        Assert.That(() => wide.ToFloat32(), Throws.InstanceOf<InvalidDataException>().With.Message.Contain("value 1E+300 at flat index 1 is outside float32's range"));
        var single = RoundTrip(NpyArray.From([1.5f, 70000f], [2]));
        Assert.That(() => single.ToFloat16(), Throws.InstanceOf<InvalidDataException>().With.Message.Contain("value 70000 at flat index 1 is outside float16's range"));
        var infinite = RoundTrip(NpyArray.From([double.PositiveInfinity, 2.0], [2]));
        Assert.That(infinite.ToFloat32(), Is.EqualTo(new[] { float.PositiveInfinity, 2f }), "an infinity stays one: the caller's finite checks name it");
    }

    /// <summary>
    /// float64 values round once, straight to float16: through float32, 1 + 2^-11 + 2^-40 became the tie 1 + 2^-11 and went to
    /// 1, and 65519.999, which rounds to 65504, became 65520 and was refused as past the range.
    /// </summary>
    [Test]
    public void Float64RoundsOnceToFloat16()
    {
        double justPastATie = 1 + Math.Pow(2, -11) + Math.Pow(2, -40);
        var wide = RoundTrip(NpyArray.From([justPastATie, 65519.999, -0.1, 65520.0], [4]));
        Assert.That(() => wide.ToFloat16(), Throws.InstanceOf<InvalidDataException>().With.Message.Contain("value 65520 at flat index 3 is outside float16's range"));
        var inRange = RoundTrip(NpyArray.From([justPastATie, 65519.999, -0.1], [3]));
        Assert.That(inRange.ToFloat16(), Is.EqualTo(new[] { (Half)1.0009765625, (Half)65504, (Half)(-0.0999755859375) }));
        Assert.That(() => RoundTrip(NpyArray.From([1e300], [1])).ToFloat16(), Throws.InstanceOf<InvalidDataException>().With.Message.Contain("outside float16's range"));
    }

    [Test]
    public void HeaderIsNumPysLayout()
    {
        using var stream = new MemoryStream();
        Npy.Write(stream, NpyArray.From([1f, 2f, 3f], [3]));
        var bytes = stream.ToArray();
        Assert.That(bytes[..8], Is.EqualTo(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0 }));
        int headerLength = bytes[8] | bytes[9] << 8;
        Assert.That((10 + headerLength) % 64, Is.Zero, "data starts on a 64-byte boundary");
        Assert.That(Encoding.Latin1.GetString(bytes, 10, headerLength), Does.StartWith("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"));
    }

    /// <summary>A file written by hand the way NumPy writes format versions 2.0 and 3.0.</summary>
    internal static byte[] Handmade(int major, string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var total = (12 + h.Length + 1 + 63) / 64 * 64;
        var padded = new byte[total - 12];
        Array.Fill(padded, (byte)' ');
        h.CopyTo(padded, 0);
        padded[^1] = (byte)'\n';
        var file = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', (byte)major, 0 };
        file.AddRange(BitConverter.GetBytes((uint)padded.Length));
        file.AddRange(padded);
        file.AddRange(data);
        return file.ToArray();
    }

    /// <summary>A '=' (native order) dtype is read as NumPy reads it, little-endian here; it was refused as an unsupported dtype.</summary>
    [TestCase("=f4")]
    [TestCase("=i4")]
    public void NativeOrderIsReadAsLittleEndian(string descr)
    {
        var data = BitConverter.GetBytes(3).Concat(BitConverter.GetBytes(-7)).ToArray();
        var a = Npy.Read(new MemoryStream(Handmade(2, $"{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}", data)));
        Assert.That(a.Type, Is.EqualTo(descr == "=f4" ? NpyType.Float32 : NpyType.Int32));
        Assert.That(a.Data.ToArray(), Is.EqualTo(data));
        Assert.That(a.Shape, Is.EqualTo(new nint[] { 2 }));
    }

    [TestCase(2)]
    [TestCase(3)]
    public void ReadsVersionsTwoAndThree(int major)
    {
        var data = BitConverter.GetBytes(1.25f).Concat(BitConverter.GetBytes(-4f)).ToArray();
        var a = Npy.Read(new MemoryStream(Handmade(major, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", data)));
        Assert.That(a.Shape, Is.EqualTo(new nint[] { 1, 2 }));
        Assert.That(a.ToFloat32(), Is.EqualTo(new[] { 1.25f, -4f }));
    }

    [TestCase("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", "big-endian")]
    [TestCase("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", "Fortran-order")]
    [TestCase("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype")]
    [TestCase("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "file ends")]
    public void RefusesWhatItCannotRead(string header, string message)
    {
        var bytes = Handmade(2, header, new byte[4]);
        var e = Assert.Throws<InvalidDataException>(() => Npy.Read(new MemoryStream(bytes)));
        Assert.That(e!.Message, Does.Contain(message));
    }

    [Test]
    public void RefusesNonNpyData()
    {
        Assert.Throws<InvalidDataException>(() => Npy.Read(new MemoryStream(Encoding.ASCII.GetBytes("not numpy at all"))));
    }

    private static byte[] Valid()
    {
        using var stream = new MemoryStream();
        Npy.Write(stream, NpyArray.From([1f, 2f, 3f], [3]));
        return stream.ToArray();
    }

    [TestCase(0, "file ends inside the preamble (the .npy magic and version): expected 8 bytes, got 0")]
    [TestCase(7, "file ends inside the preamble (the .npy magic and version): expected 8 bytes, got 7")]
    [TestCase(9, "file ends inside the header length: expected 2 bytes, got 1")]
    [TestCase(40, "file ends inside the header: expected 118 bytes, got 30")]
    [TestCase(130, "file ends inside the data of shape [3] (<f4): expected 12 bytes, got 2")]
    public void TruncatedFileIsInvalidData(int length, string message)
    {
        var e = Assert.Throws<InvalidDataException>(() => Npy.Read(new MemoryStream(Valid()[..length])));
        Assert.That(e!.Message, Does.Contain(message));
    }

    [TestCase("(2147483647, 2147483647, 2147483647)", "too large")]
    [TestCase("(1048576, 1048576)", "too large")]
    [TestCase("(0, 2147483647, 2147483647, 2147483647)", "too large")]
    [TestCase("(100000,)", "file ends inside the data of shape [100000] (<f4): expected 400000 bytes, got 16")]
    public void ShapeLargerThanTheFileIsRefusedBeforeAnyAllocation(string shape, string message)
    {
        var bytes = Handmade(2, $"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}", new byte[16]);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<InvalidDataException>(() => Npy.Read(new MemoryStream(bytes)));
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.LessThan(1 << 16), "bytes allocated to refuse it");
        Assert.That(e!.Message, Does.Contain(message));
    }

    [Test]
    public void EmptyArrayWithLargeDimsIsRead()
    {
        var a = Npy.Read(new MemoryStream(Handmade(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 0, 1048576), }", [])));
        Assert.That(a.Shape, Is.EqualTo(new nint[] { 1048576, 0, 1048576 }));
        Assert.That(a.Data.IsEmpty);
    }

    [Test]
    public void ConversionErrorsNameTheFile()
    {
        var folder = Directory.CreateTempSubdirectory("engine-npy-").FullName;
        try
        {
            string path = Path.Combine(folder, "ints.npy");
            Npy.Write(path, NpyArray.From([0L, 1L << 40], [2]));
            using var ints = Npy.Read(path);
            var e = Assert.Throws<InvalidDataException>(() => ints.ToInt32());
            Assert.That(e!.Message, Does.StartWith($"{path}: ").And.Contain("1099511627776 at index 1").And.Contain("int32"));
            e = Assert.Throws<InvalidDataException>(() => ints.ToFloat32());
            Assert.That(e!.Message, Does.StartWith($"{path}: ").And.Contain("expected a float array").And.Contain("<i8"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}

using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;
using Engine.IO;
using NUnit.Framework;

namespace Engine.Tests.IO;

/// <summary>
/// .npy files on disk: read memory-mapped and written straight from a tensor, checked against bytes laid out here by
/// hand as NumPy writes them (format 1.0: magic, version, a 16-bit header length, the dict padded with spaces and a
/// newline so the data start on a 64-byte boundary), not by the code under test.
/// </summary>
[TestFixture]
public sealed class NpyFileTests
{
    private string _dir = "";

    [SetUp]
    public void MakeDirectory() => _dir = Directory.CreateTempSubdirectory("engine-npy-file-").FullName;

    [TearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>A version 1.0 file as NumPy 1.x/2.x writes one.</summary>
    private static byte[] NumPyFile(string descr, string shape, byte[] data)
    {
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        int headerLength = (10 + dict.Length + 1 + 63) / 64 * 64 - 10;
        var file = new List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)headerLength, (byte)(headerLength >> 8) };
        file.AddRange(Encoding.ASCII.GetBytes(dict.PadRight(headerLength - 1) + "\n"));
        file.AddRange(data);
        return file.ToArray();
    }

    /// <summary>Little-endian bytes of the values, laid out one by one.</summary>
    private static byte[] LittleEndian<T>(T[] values, Func<T, byte[]> bytes) => values.SelectMany(bytes).ToArray();

    private static readonly float[] Floats = [1f, -2.5f, 3e-8f, float.MaxValue, 0f, 7f];
    private static readonly Half[] Halves = [(Half)1.5f, (Half)(-2f), Half.MaxValue, (Half)0f];
    private static readonly double[] Doubles = [1.0, 0.1, -3.0, 3e38];
    private static readonly int[] Ints = [0, 5, -9, int.MaxValue];
    private static readonly long[] Longs = [0L, 1L << 40, -1L];

    private static IEnumerable<TestCaseData> KnownFiles()
    {
        yield return new TestCaseData("<f4", "(2, 3)", LittleEndian(Floats, BitConverter.GetBytes), (Action<NpyArray>)(a => Assert.That(a.Values<float>().ToArray(), Is.EqualTo(Floats)))).SetName("float32 [2, 3]");
        yield return new TestCaseData("<f2", "(4,)", LittleEndian(Halves, BitConverter.GetBytes), (Action<NpyArray>)(a => Assert.That(a.Values<Half>().ToArray(), Is.EqualTo(Halves)))).SetName("float16 [4]");
        yield return new TestCaseData("<f8", "(2, 1, 2)", LittleEndian(Doubles, BitConverter.GetBytes), (Action<NpyArray>)(a => Assert.That(a.Values<double>().ToArray(), Is.EqualTo(Doubles)))).SetName("float64 [2, 1, 2]");
        yield return new TestCaseData("<i4", "(4,)", LittleEndian(Ints, BitConverter.GetBytes), (Action<NpyArray>)(a => Assert.That(a.Values<int>().ToArray(), Is.EqualTo(Ints)))).SetName("int32 [4]");
        yield return new TestCaseData("<i8", "(3,)", LittleEndian(Longs, BitConverter.GetBytes), (Action<NpyArray>)(a => Assert.That(a.Values<long>().ToArray(), Is.EqualTo(Longs)))).SetName("int64 [3]");
    }

    [TestCaseSource(nameof(KnownFiles))]
    public void FileWrittenByHandIsReadInPlace(string descr, string shape, byte[] data, Action<NpyArray> check)
    {
        File.WriteAllBytes(PathOf("a.npy"), NumPyFile(descr, shape, data));
        using var array = Npy.Read(PathOf("a.npy"));
        Assert.That(array.SourceFile, Is.EqualTo(PathOf("a.npy")));
        Assert.That(array.Data.ToArray(), Is.EqualTo(data));
        check(array);
    }

    [Test]
    public void TensorIsWrittenAsNumPyWritesIt()
    {
        Npy.Write(PathOf("f.npy"), new ReadOnlyTensorSpan<float>(Floats, [2, 3]));
        Assert.That(File.ReadAllBytes(PathOf("f.npy")), Is.EqualTo(NumPyFile("<f4", "(2, 3)", LittleEndian(Floats, BitConverter.GetBytes))));
        Npy.Write(PathOf("h.npy"), new ReadOnlyTensorSpan<Half>(Halves, [4]));
        Assert.That(File.ReadAllBytes(PathOf("h.npy")), Is.EqualTo(NumPyFile("<f2", "(4,)", LittleEndian(Halves, BitConverter.GetBytes))));
        Npy.Write(PathOf("l.npy"), new ReadOnlyTensorSpan<long>(Longs, [3, 1]));
        Assert.That(File.ReadAllBytes(PathOf("l.npy")), Is.EqualTo(NumPyFile("<i8", "(3, 1)", LittleEndian(Longs, BitConverter.GetBytes))));
        Npy.Write(PathOf("bytes.npy"), NpyType.Float64, [2, 2], MemoryMarshal.AsBytes(Doubles.AsSpan()));
        Assert.That(File.ReadAllBytes(PathOf("bytes.npy")), Is.EqualTo(NumPyFile("<f8", "(2, 2)", LittleEndian(Doubles, BitConverter.GetBytes))));
    }

    /// <summary>
    /// Bool and the integer types besides int32 and int64, each written from a tensor and read back: the file is the bytes
    /// NumPy writes, laid out here literally ('|' for the one-byte types, which have no byte order).
    /// </summary>
    private static IEnumerable<TestCaseData> IntegerAndBoolFiles()
    {
        TestCaseData Case<T>(T[] values, nint[] shape, NpyType type, string descr, string shapeText, byte[] data) where T : unmanaged =>
            new TestCaseData((Action<string>)(path => Npy.Write(path, new ReadOnlyTensorSpan<T>(values, shape))), type, descr, shapeText, data,
                (Func<NpyArray, Array>)(a => a.Values<T>().ToArray()), values).SetName($"{descr} {shapeText}");
        yield return Case(new[] { true, false, true }, [3], NpyType.Bool, "|b1", "(3,)", [1, 0, 1]);
        yield return Case(new sbyte[] { 0, -1, 127, -128 }, [2, 2], NpyType.Int8, "|i1", "(2, 2)", [0, 0xff, 0x7f, 0x80]);
        yield return Case(new byte[] { 0, 1, 200, 255 }, [4], NpyType.UInt8, "|u1", "(4,)", [0, 1, 200, 255]);
        yield return Case(new short[] { 1, -2, short.MaxValue }, [3], NpyType.Int16, "<i2", "(3,)", [1, 0, 0xfe, 0xff, 0xff, 0x7f]);
        yield return Case(new ushort[] { 258, ushort.MaxValue }, [2, 1], NpyType.UInt16, "<u2", "(2, 1)", [2, 1, 0xff, 0xff]);
        yield return Case(new uint[] { 0x01020304, uint.MaxValue }, [2], NpyType.UInt32, "<u4", "(2,)", [4, 3, 2, 1, 0xff, 0xff, 0xff, 0xff]);
        yield return Case(new ulong[] { 0x0102030405060708, ulong.MaxValue }, [2], NpyType.UInt64, "<u8", "(2,)", [8, 7, 6, 5, 4, 3, 2, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }

    [TestCaseSource(nameof(IntegerAndBoolFiles))]
    public void IntegerAndBoolTypesAreWrittenAsNumPyWritesThemAndReadBack(Action<string> write, NpyType type, string descr, string shape, byte[] data,
        Func<NpyArray, Array> read, Array values)
    {
        write(PathOf("a.npy"));
        Assert.That(File.ReadAllBytes(PathOf("a.npy")), Is.EqualTo(NumPyFile(descr, shape, data)));
        using var array = Npy.Read(PathOf("a.npy"));
        Assert.That(array.Type, Is.EqualTo(type));
        Assert.That(read(array), Is.EqualTo(values));
    }

    /// <summary>A one-byte type has no byte order: NumPy writes '|', and reads '&lt;', '&gt;', '=' or no mark the same.</summary>
    [TestCase("|u1")]
    [TestCase("<u1")]
    [TestCase(">u1")]
    [TestCase("=u1")]
    [TestCase("u1")]
    public void OneByteTypesAreReadWithAnyByteOrderMark(string descr)
    {
        File.WriteAllBytes(PathOf("a.npy"), NumPyFile(descr, "(2,)", [7, 250]));
        using var array = Npy.Read(PathOf("a.npy"));
        Assert.That(array.Values<byte>().ToArray(), Is.EqualTo(new byte[] { 7, 250 }));
    }

    [Test]
    public void WritingRefusesDataThatDoesNotFillTheShape()
    {
        var e = Assert.Throws<ArgumentException>(() => Npy.Write(PathOf("x.npy"), NpyType.Float32, [2, 3], new byte[20]));
        Assert.That(e!.Message, Does.Contain("data holds 20 bytes, shape [2, 3] of Float32 needs 24"));
    }

    [Test]
    public void BigFileIsMappedNotCopied()
    {
        // 96 MB: reading it allocates nothing of its size, and every value is where the file has it.
        const int count = 24 << 20;
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = i % 1000003;
        Npy.Write(PathOf("big.npy"), new ReadOnlyTensorSpan<float>(values, [count / 1024, 1024]));
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var array = Npy.Read(PathOf("big.npy"));
        var read = array.Values<float>();
        var tensor = array.AsTensorSpan<float>();
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.LessThan(1 << 20), "bytes allocated to read a 96 MB file");
        Assert.That(array.Shape, Is.EqualTo(new nint[] { count / 1024, 1024 }));
        Assert.That(tensor.FlattenedLength, Is.EqualTo((nint)count));
        Assert.That(read.SequenceEqual(values), "the mapped values are the file's");
    }

    [Test]
    public void DisposedArrayRefusesItsData()
    {
        Npy.Write(PathOf("a.npy"), new ReadOnlyTensorSpan<float>(Floats, [6]));
        var array = Npy.Read(PathOf("a.npy"));
        array.Dispose();
        Assert.Throws<ObjectDisposedException>(() => array.Values<float>());
    }

    [Test]
    public void MappedFileIsNotLockedAgainstWriting()
    {
        Npy.Write(PathOf("a.npy"), new ReadOnlyTensorSpan<float>(Floats, [6]));
        using var array = Npy.Read(PathOf("a.npy"));
        Assert.That(array.Values<float>().ToArray(), Is.EqualTo(Floats));
        Assert.DoesNotThrow(() => Npy.Write(PathOf("a.npy"), new ReadOnlyTensorSpan<float>([1f], [1])));
    }

    /// <summary>A file is written beside its path and moved over it: a mapping of the old one keeps its values (writing in place truncated them under it).</summary>
    [Test]
    public void WritingOverAMappedFileLeavesTheMappingAsItWas()
    {
        Npy.Write(PathOf("a.npy"), new ReadOnlyTensorSpan<float>(Floats, [6]));
        using var old = Npy.Read(PathOf("a.npy"));
        Npy.Write(PathOf("a.npy"), old.Type, old.Shape, old.Data.Span);
        Npy.Write(PathOf("a.npy"), new ReadOnlyTensorSpan<float>([7f, 8f], [2]));
        using var now = Npy.Read(PathOf("a.npy"));
        Assert.That(old.Values<float>().ToArray(), Is.EqualTo(Floats), "the mapping as it was");
        Assert.That(now.Values<float>().ToArray(), Is.EqualTo(new[] { 7f, 8f }));
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temporary file left");
    }

    [Test]
    public void AMissingFolderIsNamed()
    {
        string path = Path.Combine(_dir, "missing", "a.npy");
        var e = Assert.Throws<DirectoryNotFoundException>(() => Npy.Write(path, new ReadOnlyTensorSpan<float>(Floats, [6])));
        Assert.That(e!.Message, Does.StartWith($"{path}: the folder"));
    }

    [Test]
    public void ValuesOfAnotherTypeAreRefusedNamingTheFile()
    {
        File.WriteAllBytes(PathOf("ints.npy"), NumPyFile("<i4", "(4,)", LittleEndian(Ints, BitConverter.GetBytes)));
        using var array = Npy.Read(PathOf("ints.npy"));
        var e = Assert.Throws<InvalidDataException>(() => array.Values<float>());
        Assert.That(e!.Message, Is.EqualTo($"{PathOf("ints.npy")}: expected <f4, got <i4"));
        e = Assert.Throws<InvalidDataException>(() => array.AsTensorSpan<float>());
        Assert.That(e!.Message, Does.StartWith($"{PathOf("ints.npy")}: expected a float array"));
    }

    /// <summary>A file holds one array: bytes past its data (another array appended, a wrong shape) are refused, not ignored.</summary>
    [Test]
    public void BytesPastTheDataAreRefused()
    {
        File.WriteAllBytes(PathOf("long.npy"), [.. NumPyFile("<f4", "(6,)", LittleEndian(Floats, BitConverter.GetBytes)), 0, 0, 0, 0]);
        Assert.That(() => Npy.Read(PathOf("long.npy")), Throws.InstanceOf<InvalidDataException>()
            .With.Message.EqualTo($"{PathOf("long.npy")}: 4 bytes follow the data of shape [6] (<f4): a .npy file ends with its one array's data"));
    }

    /// <summary>A symbolic link is written through, as a shell's redirection writes it: the link stays, its target gets the array.</summary>
    [Test]
    public void ASymbolicLinkIsWrittenThroughAndKept()
    {
        File.WriteAllText(PathOf("target.npy"), "precious");
        File.CreateSymbolicLink(PathOf("link.npy"), PathOf("target.npy"));
        Npy.Write(PathOf("link.npy"), new ReadOnlyTensorSpan<float>(Floats, [6]));
        Assert.That(new FileInfo(PathOf("link.npy")).LinkTarget, Is.EqualTo(PathOf("target.npy")), "still a link to the target");
        using var array = Npy.Read(PathOf("target.npy"));
        Assert.That(array.Values<float>().ToArray(), Is.EqualTo(Floats));
    }

    /// <summary>
    /// A FIFO (as a shell's process substitution gives) is written through and read from as a pipe: it was replaced by a
    /// regular file when written, and refused as "Stream does not support seeking" when read.
    /// </summary>
    [Test]
    public void AFifoIsWrittenAndReadThrough()
    {
        Assume.That(OperatingSystem.IsLinux(), "mkfifo");
        string fifo = PathOf("pipe.npy");
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", fifo)) mkfifo.WaitForExit();
        float[]? read = null;
        Exception? failure = null;
        var reader = new Thread(() =>
        {
            try
            {
                using var array = Npy.Read(fifo);
                read = array.Values<float>().ToArray();
            }
            catch (Exception e) { failure = e; }
        }) { IsBackground = true };
        reader.Start();
        Npy.Write(fifo, new ReadOnlyTensorSpan<float>(Floats, [6]));
        Assert.That(reader.Join(TimeSpan.FromSeconds(30)), Is.True, "the reader got the array");
        Assert.That(failure, Is.Null);
        Assert.That(read, Is.EqualTo(Floats));
        Assert.That(new FileInfo(fifo).Length, Is.Zero, "still a FIFO, not a file moved over it");
    }

    /// <summary>
    /// A device that seeks but reports a length of 0 is read as a stream: /dev/zero is not a .npy file; it was refused as one
    /// that "ends inside the preamble" after 0 bytes.
    /// </summary>
    [Test]
    public void ADeviceIsReadAsAStream()
    {
        Assume.That(File.Exists("/dev/zero"), "/dev/zero");
        Assert.That(() => Npy.Read("/dev/zero"), Throws.InstanceOf<InvalidDataException>().With.Message.EqualTo("/dev/zero: not a .npy file (bad magic)"));
    }

    /// <summary>A folder given as the file to write, by its name or with a trailing separator: said as such (it was "Could not find a part of the path").</summary>
    [Test]
    public void AFolderIsNotWrittenAsAFile()
    {
        string folder = Directory.CreateDirectory(PathOf("out")).FullName;
        foreach (var path in new[] { folder, folder + Path.DirectorySeparatorChar })
            Assert.That(() => Npy.Write(path, NpyArray.From([1f], [1])), Throws.InstanceOf<IOException>().With.Message.EqualTo($"{path}: is a folder, not a file to write"));
    }

    [Test]
    public void OtherFloatTypesConvertOnce()
    {
        File.WriteAllBytes(PathOf("d.npy"), NumPyFile("<f8", "(2, 2)", LittleEndian(Doubles, BitConverter.GetBytes)));
        using var array = Npy.Read(PathOf("d.npy"));
        var tensor = array.AsTensorSpan<float>();
        Assert.That(tensor.Lengths.ToArray(), Is.EqualTo(new nint[] { 2, 2 }));
        var flat = new float[4];
        tensor.FlattenTo(flat);
        Assert.That(flat, Is.EqualTo(Doubles.Select(d => (float)d).ToArray()));
    }

    /// <summary>Every file the stream reader refuses (NpyTests' cases) is refused from disk too, with the message naming the file.</summary>
    private static IEnumerable<TestCaseData> RefusedFiles()
    {
        var valid = NumPyFile("<f4", "(3,)", new byte[12]);
        yield return new TestCaseData(NpyTests.Handmade(2, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", new byte[4]), "big-endian arrays are not supported (descr >f4)").SetName("big-endian");
        yield return new TestCaseData(NpyTests.Handmade(2, "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", new byte[4]), "Fortran-order arrays are not supported").SetName("Fortran order");
        yield return new TestCaseData(NpyTests.Handmade(2, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", new byte[4]), "unsupported dtype <c8").SetName("complex dtype");
        // NumPy writes a bool as 0 or 1: another byte is not read as either.
        yield return new TestCaseData(NumPyFile("|b1", "(3,)", [1, 2, 0]), "bool value 2 at flat index 1 is not 0 or 1").SetName("bool byte 2");
        yield return new TestCaseData(NpyTests.Handmade(2, "{'descr': '<f4', 'shape': (1,), }", new byte[4]), "header has no 'fortran_order'").SetName("no fortran_order");
        yield return new TestCaseData(NpyTests.Handmade(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (a,), }", new byte[4]), "bad dimension 'a'").SetName("bad dimension");
        yield return new TestCaseData(NpyTests.Handmade(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }", new byte[4]), "too large").SetName("too large");
        // A structured dtype is named whole: its value was cut at the first field's comma.
        yield return new TestCaseData(NpyTests.Handmade(2, "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }", new byte[8]),
            "unsupported dtype [('a', '<f4'), ('b', '<i4')]: use").SetName("structured dtype");
        yield return new TestCaseData(Encoding.ASCII.GetBytes("not numpy at all"), "not a .npy file (bad magic)").SetName("bad magic");
        // numpy.savez's archive given as a .npy: a zip's local file header, then an empty zip's end record.
        yield return new TestCaseData(new byte[] { (byte)'P', (byte)'K', 3, 4, 20, 0, 0, 0, 0, 0, 0, 0 }, "a .npz archive (zip), not a .npy file").SetName("npz");
        yield return new TestCaseData(new byte[] { (byte)'P', (byte)'K', 5, 6, 0, 0, 0, 0, 0, 0, 0, 0 }, "a .npz archive (zip), not a .npy file").SetName("empty npz");
        yield return new TestCaseData(valid[..7], "file ends inside the preamble (the .npy magic and version): expected 8 bytes, got 7").SetName("cut in the preamble");
        yield return new TestCaseData(valid[..40], "file ends inside the header: expected 118 bytes, got 30").SetName("cut in the header");
        yield return new TestCaseData(valid[..130], "file ends inside the data of shape [3] (<f4): expected 12 bytes, got 2").SetName("cut in the data");
        var badVersion = (byte[])valid.Clone();
        badVersion[6] = 4;
        yield return new TestCaseData(badVersion, "unsupported .npy format version 4.0").SetName("version 4");
    }

    [TestCaseSource(nameof(RefusedFiles))]
    public void RefusedFileIsRefusedFromDiskNamingIt(byte[] bytes, string message)
    {
        File.WriteAllBytes(PathOf("bad.npy"), bytes);
        var fromStream = Assert.Throws<InvalidDataException>(() => Npy.Read(new MemoryStream(bytes)));
        Assert.That(fromStream!.Message, Does.Contain(message));
        var fromFile = Assert.Throws<InvalidDataException>(() => Npy.Read(PathOf("bad.npy")));
        Assert.That(fromFile!.Message, Does.StartWith(PathOf("bad.npy") + ": ").And.Contain(message));
    }
}

using System.Buffers.Binary;
using System.Text;
using Engine.IO;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.IO;

/// <summary>
/// Seeded mutations of valid .npy files: each read ends in an InvalidDataException (naming the file when read
/// from one) or in an array whose data is the bytes the header points at; each conversion of what was read
/// ends in a converted array or an InvalidDataException.
/// </summary>
[TestFixture]
public sealed class NpyFuzzTests
{
    private const int Mutations = 3000;

    private static byte[] Bytes(NpyArray array)
    {
        using var stream = new MemoryStream();
        Npy.Write(stream, array);
        return stream.ToArray();
    }

    private static readonly byte[][] ValidFiles =
    [
        Bytes(NpyArray.From([1f, -2.5f, 3e-8f, 4f, 0f, 7f], [2, 3])),
        Bytes(NpyArray.From([(Half)1.5f, (Half)(-2f), (Half)0f], [3])),
        Bytes(NpyArray.From([1.0, 0.1, -3.0, 1e300], [1, 2, 2])),
        Bytes(NpyArray.From([0, 5, 9, -7], [4])),
        Bytes(NpyArray.From([0L, 1L << 20, -1L], [3])),
        Bytes(NpyArray.From([4f], [])),
        Bytes(NpyArray.From(ReadOnlySpan<float>.Empty, [0, 4])),
        NpyTests.Handmade(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", new byte[8]),
        NpyTests.Handmade(3, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", new byte[16]),
    ];

    private static readonly string[] Descrs = ["'<f4'", "'<f2'", "'<f8'", "'<i4'", "'<i8'", "'f4'", "'>f4'", "'<c8'", "'|u1'", "'|b1'", "'>u2'", "'<f4", "", "<f4", "'<f4' '<f8'"];

    private static readonly string[] Shapes =
    [
        "(2, 3)", "(3,)", "()", "(0,)", "(0, 2147483647, 2147483647, 2147483647)", "(2147483647, 2147483647, 2147483647)",
        "(2147483648,)", "(9223372036854775807,)", "(99999999999999999999,)", "(-1,)", "(1000000,)", "(6L,)", "(1, 2, 3, 4, 5, 6, 7, 8)",
        "(,)", "((2, 3))", "(2, 3", "2, 3)", "", "(a,)",
    ];

    private static readonly string[] FortranOrders = ["True", "false", "0", ""];

    /// <summary>A header of NumPy's layout (versions 2.0 and 3.0) with fields picked from the lists above, mostly readable ones, or left out.</summary>
    private static byte[] EditedHeader(Random random)
    {
        string Pick(string[] values, string usual) => random.Next(4) == 0 ? values[random.Next(values.Length)] : usual;
        var fields = new List<string>
        {
            $"'descr': {Pick(Descrs, Descrs[random.Next(5)])}",
            $"'fortran_order': {Pick(FortranOrders, "False")}",
            $"'shape': {Shapes[random.Next(Shapes.Length)]}",
        };
        if (random.Next(8) == 0) fields.RemoveAt(random.Next(fields.Count));
        var data = new byte[random.Next(4) switch { 0 => 0, 1 => 4, 2 => 24, _ => random.Next(64) }];
        random.NextBytes(data);
        return NpyTests.Handmade(random.Next(2, 4), "{" + string.Join(", ", fields) + ", }", data);
    }

    /// <summary>The valid file with its version or header length field set to an arbitrary value.</summary>
    private static byte[] EditedPreamble(byte[] valid, Random random)
    {
        var bytes = (byte[])valid.Clone();
        if (random.Next(2) == 0) bytes[6] = (byte)random.Next(5);
        else BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)random.Next(ushort.MaxValue + 1));
        return bytes;
    }

    private static byte[] Mutation(Random random)
    {
        var valid = ValidFiles[random.Next(ValidFiles.Length)];
        return random.Next(8) switch
        {
            0 or 1 => EditedHeader(random),
            2 => EditedPreamble(valid, random),
            3 => Fuzz.Mutate(EditedHeader(random), random),
            _ => Fuzz.Mutate(valid, random),
        };
    }

    /// <summary>Where the data starts, as the format defines it: after the preamble and the header whose length it gives.</summary>
    private static long DataStart(byte[] file) => file[6] == 1
        ? 10 + BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan(8))
        : 12 + (long)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(8));

    /// <summary>What is wrong with reading <paramref name="file"/> (from a stream, or every 16th case from disk, where errors must name it), or null.</summary>
    private static string? Check(byte[] file, string? path)
    {
        string naming = path is null ? "" : path + ": ";
        NpyArray array;
        try
        {
            array = path is null ? Npy.Read(new MemoryStream(file)) : Npy.Read(path);
        }
        catch (Exception e)
        {
            return Fuzz.Judge(e, naming, typeof(InvalidDataException));
        }
        using var read = array;
        long start = DataStart(file);
        if (!array.Data.Span.SequenceEqual(file.AsSpan((int)start, array.Data.Length)))
            return $"read {array.Type} [{string.Join(", ", array.Shape)}], but its data is not the {array.Data.Length} bytes at {start}";
        foreach (var convert in new Action[] { () => array.ToFloat32(), () => array.ToFloat16(), () => array.ToInt32() })
        {
            try
            {
                convert();
            }
            catch (Exception e)
            {
                if (Fuzz.Judge(e, naming, typeof(InvalidDataException)) is { } problem) return "converting: " + problem;
            }
        }
        return null;
    }

    [Test]
    public void MutatedFilesAreReadOrRefusedNamingTheFile()
    {
        var folder = Directory.CreateTempSubdirectory("engine-npy-fuzz-").FullName;
        try
        {
            var random = new Random(20260611);
            Fuzz.Run(Mutations, i =>
            {
                var file = Mutation(random);
                string? path = null;
                if (i % 16 == 0)
                {
                    path = Path.Combine(folder, "mutated.npy");
                    File.WriteAllBytes(path, file);
                }
                return Check(file, path) is { } problem ? $"{problem}\n  file: {Convert.ToHexString(file)}\n  ({Encoding.Latin1.GetString(file)})" : null;
            }, TimeSpan.FromMinutes(2));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}

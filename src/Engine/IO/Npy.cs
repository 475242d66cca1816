using System.Buffers.Binary;
using System.Globalization;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;

namespace Engine.IO;

/// <summary>Element types the .npy reader and writer handle (little-endian).</summary>
public enum NpyType { Float32, Float16, Float64, Int32, Int64 }

/// <summary>An array read from or written to a NumPy .npy file: C order, little-endian.</summary>
public sealed class NpyArray
{
    public NpyArray(NpyType type, nint[] shape, byte[] data)
    {
        long count = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape {TensorArgs.Format(shape)}", nameof(shape));
            count *= d;
        }
        if (data.Length != count * Npy.ElementSize(type))
            throw new ArgumentException($"data holds {data.Length} bytes, shape {TensorArgs.Format(shape)} of {type} needs {count * Npy.ElementSize(type)}", nameof(data));
        Type = type; Shape = shape; Data = data;
    }

    public NpyType Type { get; }
    public nint[] Shape { get; }
    public byte[] Data { get; }
    public long Count => Data.Length / Npy.ElementSize(Type);

    /// <summary>The file the array was read from, if any: conversion errors name it.</summary>
    public string? SourceFile { get; init; }

    /// <summary>The values as float32 (float16 and float64 converted).</summary>
    public float[] ToFloat32() => Type switch
    {
        NpyType.Float32 => MemoryMarshal.Cast<byte, float>(Data).ToArray(),
        NpyType.Float16 => ToArray(MemoryMarshal.Cast<byte, Half>(Data), h => (float)h),
        NpyType.Float64 => ToArray(MemoryMarshal.Cast<byte, double>(Data), d => (float)d),
        _ => throw Invalid($"expected a float array (float32, float16 or float64), got {Npy.Descr(Type)}"),
    };

    public Half[] ToFloat16() => Type == NpyType.Float16 ? MemoryMarshal.Cast<byte, Half>(Data).ToArray() : ToArray(ToFloat32(), f => (Half)f);

    /// <summary>The values as int32 (int64 checked for range). Used for offsets such as cu_seqlens.</summary>
    public int[] ToInt32() => Type switch
    {
        NpyType.Int32 => MemoryMarshal.Cast<byte, int>(Data).ToArray(),
        NpyType.Int64 => NarrowInt64(),
        _ => throw Invalid($"expected an integer array (int32 or int64), got {Npy.Descr(Type)}"),
    };

    private int[] NarrowInt64()
    {
        var wide = MemoryMarshal.Cast<byte, long>(Data);
        var result = new int[wide.Length];
        for (int i = 0; i < result.Length; i++)
            result[i] = wide[i] is >= int.MinValue and <= int.MaxValue ? (int)wide[i]
                : throw Invalid($"expected values in the int32 range, got {wide[i]} at index {i}");
        return result;
    }

    private InvalidDataException Invalid(string why) => new(SourceFile is null ? why : $"{SourceFile}: {why}");

    public Tensor<float> ToTensorFloat32() => Tensor.Create(ToFloat32(), Shape);
    public Tensor<Half> ToTensorFloat16() => Tensor.Create(ToFloat16(), Shape);

    public static NpyArray From(ReadOnlySpan<float> values, ReadOnlySpan<nint> shape) => new(NpyType.Float32, shape.ToArray(), MemoryMarshal.AsBytes(values).ToArray());
    public static NpyArray From(ReadOnlySpan<Half> values, ReadOnlySpan<nint> shape) => new(NpyType.Float16, shape.ToArray(), MemoryMarshal.AsBytes(values).ToArray());
    public static NpyArray From(ReadOnlySpan<double> values, ReadOnlySpan<nint> shape) => new(NpyType.Float64, shape.ToArray(), MemoryMarshal.AsBytes(values).ToArray());
    public static NpyArray From(ReadOnlySpan<int> values, ReadOnlySpan<nint> shape) => new(NpyType.Int32, shape.ToArray(), MemoryMarshal.AsBytes(values).ToArray());
    public static NpyArray From(ReadOnlySpan<long> values, ReadOnlySpan<nint> shape) => new(NpyType.Int64, shape.ToArray(), MemoryMarshal.AsBytes(values).ToArray());

    private static TOut[] ToArray<TIn, TOut>(ReadOnlySpan<TIn> source, Func<TIn, TOut> convert)
    {
        var result = new TOut[source.Length];
        for (int i = 0; i < result.Length; i++) result[i] = convert(source[i]);
        return result;
    }
}

/// <summary>NumPy .npy files, format versions 1.0, 2.0 and 3.0.</summary>
public static class Npy
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static int ElementSize(NpyType type) => type switch
    {
        NpyType.Float16 => 2,
        NpyType.Float32 or NpyType.Int32 => 4,
        _ => 8,
    };

    public static string Descr(NpyType type) => type switch
    {
        NpyType.Float32 => "<f4",
        NpyType.Float16 => "<f2",
        NpyType.Float64 => "<f8",
        NpyType.Int32 => "<i4",
        _ => "<i8",
    };

    public static NpyArray Read(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return Read(stream, path);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads an array; a stream that is not a .npy array this reader takes (truncated, a bad header, an
    /// unsupported dtype, a shape over 2 GB) is an <see cref="InvalidDataException"/> saying what was expected.
    /// </summary>
    public static NpyArray Read(Stream stream) => Read(stream, sourceFile: null);

    private static NpyArray Read(Stream stream, string? sourceFile)
    {
        var preamble = ReadBlock(stream, 8, "the preamble (the .npy magic and version)");
        if (!preamble.AsSpan(0, 6).SequenceEqual(Magic)) throw new InvalidDataException("not a .npy file (bad magic)");
        int major = preamble[6];
        int headerLength;
        if (major == 1)
        {
            headerLength = BinaryPrimitives.ReadUInt16LittleEndian(ReadBlock(stream, 2, "the header length"));
        }
        else if (major is 2 or 3)
        {
            uint l = BinaryPrimitives.ReadUInt32LittleEndian(ReadBlock(stream, 4, "the header length"));
            if (l > 1 << 24) throw new InvalidDataException($"header length {l} is implausible");
            headerLength = (int)l;
        }
        else
        {
            throw new InvalidDataException($"unsupported .npy format version {major}.{preamble[7]} (1.0, 2.0 and 3.0 are read)");
        }
        string header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(ReadBlock(stream, headerLength, "the header"));
        var (type, fortran, shape) = ParseHeader(header);
        if (fortran) throw new InvalidDataException("Fortran-order arrays are not supported: save with C order");
        // As NumPy does, the dims other than 0 must not overflow even when another dim is 0.
        InvalidDataException TooLarge() => new($"shape {TensorArgs.Format(shape)} of {Descr(type)} is too large: more than {Array.MaxLength} bytes");
        long bytes = ElementSize(type);
        foreach (var d in shape.Where(d => d != 0))
            bytes = bytes <= long.MaxValue / d ? bytes * d : throw TooLarge();
        if (shape.Contains(0)) bytes = 0;
        if (bytes > Array.MaxLength) throw TooLarge();
        var data = ReadBlock(stream, bytes, $"the data of shape {TensorArgs.Format(shape)} ({Descr(type)})");
        return new NpyArray(type, shape, data) { SourceFile = sourceFile };
    }

    /// <summary>The stream's next <paramref name="length"/> bytes; a seekable stream is checked to hold them before they are allocated.</summary>
    private static byte[] ReadBlock(Stream stream, long length, string what)
    {
        if (stream.CanSeek && stream.Length - stream.Position < length)
            throw Truncated(what, length, Math.Max(0, stream.Length - stream.Position));
        var block = new byte[length];
        int got = stream.ReadAtLeast(block, block.Length, throwOnEndOfStream: false);
        return got == length ? block : throw Truncated(what, length, got);
    }

    private static InvalidDataException Truncated(string what, long expected, long got) =>
        new($"file ends inside {what}: expected {expected} bytes, got {got}");

    public static void Write(string path, NpyArray array)
    {
        using var stream = File.Create(path);
        Write(stream, array);
    }

    /// <summary>Writes version 1.0 (version 2.0 if the header does not fit 65535 bytes).</summary>
    public static void Write(Stream stream, NpyArray array)
    {
        var dims = string.Join(", ", array.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture)));
        if (array.Shape.Length == 1) dims += ",";
        string dict = $"{{'descr': '{Descr(array.Type)}', 'fortran_order': False, 'shape': ({dims}), }}";
        int prefix = dict.Length + 1 + 10 > 65535 ? 12 : 10;
        int total = (prefix + dict.Length + 1 + 63) / 64 * 64;
        string header = dict + new string(' ', total - prefix - dict.Length - 1) + "\n";
        stream.Write(Magic);
        Span<byte> len = stackalloc byte[4];
        if (prefix == 10)
        {
            stream.Write([1, 0]);
            BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)header.Length);
            stream.Write(len[..2]);
        }
        else
        {
            stream.Write([2, 0]);
            BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)header.Length);
            stream.Write(len);
        }
        stream.Write(Encoding.Latin1.GetBytes(header));
        stream.Write(array.Data);
    }

    private static (NpyType type, bool fortran, nint[] shape) ParseHeader(string header)
    {
        string descr = Field(header, "descr");
        string trimmed = descr.Trim().Trim('\'', '"');
        NpyType type = trimmed switch
        {
            "<f4" or "f4" => NpyType.Float32,
            "<f2" or "f2" => NpyType.Float16,
            "<f8" or "f8" => NpyType.Float64,
            "<i4" or "i4" => NpyType.Int32,
            "<i8" or "i8" => NpyType.Int64,
            _ when trimmed.StartsWith('>') => throw new InvalidDataException($"big-endian arrays are not supported (descr {trimmed})"),
            _ => throw new InvalidDataException($"unsupported dtype {trimmed}: use float32, float16, float64, int32 or int64"),
        };
        bool fortran = Field(header, "fortran_order").Trim() switch
        {
            "True" => true,
            "False" => false,
            var other => throw new InvalidDataException($"bad fortran_order value {other}"),
        };
        string shapeText = Field(header, "shape").Trim();
        if (!shapeText.StartsWith('(') || !shapeText.EndsWith(')')) throw new InvalidDataException($"bad shape {shapeText}");
        var shape = shapeText[1..^1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => long.TryParse(s.TrimEnd('L'), NumberStyles.None, CultureInfo.InvariantCulture, out var d) && d <= int.MaxValue
                ? (nint)d : throw new InvalidDataException($"bad dimension '{s}' in shape {shapeText}"))
            .ToArray();
        return (type, fortran, shape);
    }

    /// <summary>The value text of a key in the header's dict literal (values here never contain ':' or '{').</summary>
    private static string Field(string header, string key)
    {
        int k = header.IndexOf($"'{key}'", StringComparison.Ordinal);
        if (k < 0) k = header.IndexOf($"\"{key}\"", StringComparison.Ordinal);
        if (k < 0) throw new InvalidDataException($"header has no '{key}'");
        int colon = header.IndexOf(':', k);
        int i = colon + 1;
        int depth = 0;
        var value = new StringBuilder();
        for (; i < header.Length; i++)
        {
            char c = header[i];
            if (c == '(') depth++;
            if (c == ')') depth--;
            if (depth == 0 && (c == ',' || c == '}')) break;
            value.Append(c);
        }
        return value.ToString();
    }
}

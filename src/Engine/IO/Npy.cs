using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text;

namespace Engine.IO;

/// <summary>Element types the .npy reader and writer handle (little-endian); lower-cased, each is NumPy's name of it.</summary>
public enum NpyType { Float32, Float16, Float64, Int32, Int64, Bool, Int8, UInt8, Int16, UInt16, UInt32, UInt64 }

/// <summary>
/// An array read from or written to a NumPy .npy file: C order, little-endian. An array read from a file
/// (<see cref="Npy.Read(string)"/>) is the file's data memory-mapped, never copied: dispose it when done, and use
/// no span taken from it after that.
/// </summary>
public sealed class NpyArray : IDisposable
{
    private readonly MappedData? _mapped;

    /// <summary>An array over <paramref name="data"/> (not copied), its length checked against the shape.</summary>
    public NpyArray(NpyType type, nint[] shape, byte[] data) : this(type, shape, data, mapped: null)
    {
    }

    private NpyArray(NpyType type, nint[] shape, ReadOnlyMemory<byte> data, MappedData? mapped)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape {TensorArgs.Format(shape)}", nameof(shape));
            count *= d;
        }
        if (data.Length != count * Npy.ElementSize(type))
            throw new ArgumentException($"data holds {data.Length} bytes, shape {TensorArgs.Format(shape)} of {type} needs {count * Npy.ElementSize(type)}", nameof(data));
        Type = type; Shape = shape; Data = data; _mapped = mapped;
    }

    internal static NpyArray Mapped(NpyType type, nint[] shape, MappedData data, string sourceFile) =>
        new(type, shape, data.Memory, data) { SourceFile = sourceFile };

    public NpyType Type { get; }
    public nint[] Shape { get; }

    /// <summary>The data as stored: in memory, or the mapped bytes of the file it was read from.</summary>
    public ReadOnlyMemory<byte> Data { get; }

    public long Count => Data.Length / Npy.ElementSize(Type);

    /// <summary>The file the array was read from, if any: conversion errors name it.</summary>
    public string? SourceFile { get; init; }

    /// <summary>The values where they lie, as <typeparamref name="T"/>, which must be the stored type (see <see cref="Npy.TypeOf{T}"/>).</summary>
    public ReadOnlySpan<T> Values<T>() where T : unmanaged
    {
        var wanted = Npy.TypeOf<T>();
        if (wanted != Type) throw Invalid($"expected {Npy.Descr(wanted)}, got {Npy.Descr(Type)}");
        return MemoryMarshal.Cast<byte, T>(Data.Span);
    }

    /// <summary>
    /// The values as a float32 or float16 tensor (<typeparamref name="T"/> float or Half): the array's own memory
    /// when it holds that type, else converted once into a new array.
    /// </summary>
    public ReadOnlyTensorSpan<T> AsTensorSpan<T>() where T : unmanaged
    {
        if (Npy.TypeOf<T>() == Type) return new ReadOnlyTensorSpan<T>(Values<T>(), Shape);
        T[] converted = typeof(T) == typeof(float) ? (T[])(object)ToFloat32()
            : typeof(T) == typeof(Half) ? (T[])(object)ToFloat16()
            : throw new NotSupportedException($"only float and Half tensors convert, not {typeof(T).Name}");
        return new ReadOnlyTensorSpan<T>(converted, Shape);
    }

    /// <summary>
    /// The values as float32 (float16 and float64 converted), in a new array. A finite float64 past float32's range is
    /// refused, not turned into an infinity.
    /// </summary>
    public float[] ToFloat32() => Type switch
    {
        NpyType.Float32 => MemoryMarshal.Cast<byte, float>(Data.Span).ToArray(),
        NpyType.Float16 => ToArray(MemoryMarshal.Cast<byte, Half>(Data.Span), h => (float)h),
        NpyType.Float64 => Narrowed(MemoryMarshal.Cast<byte, double>(Data.Span), d => (float)d, double.IsFinite, float.IsFinite, "float32"),
        _ => throw Invalid($"expected a float array (float32, float16 or float64), got {Npy.Descr(Type)}"),
    };

    /// <summary>
    /// The values as float16, in a new array; a finite value that rounds past float16's range (65504) is refused. float64
    /// values are rounded once, straight to float16: through float32 they would be rounded twice.
    /// </summary>
    public Half[] ToFloat16() => Type switch
    {
        NpyType.Float16 => MemoryMarshal.Cast<byte, Half>(Data.Span).ToArray(),
        NpyType.Float64 => Narrowed(MemoryMarshal.Cast<byte, double>(Data.Span), d => (Half)d, double.IsFinite, Half.IsFinite, "float16"),
        _ => Narrowed<float, Half>(ToFloat32(), f => (Half)f, float.IsFinite, Half.IsFinite, "float16"),
    };

    /// <summary>Each value converted to a narrower type; a finite one that becomes infinite there is refused, naming it.</summary>
    public TOut[] Narrowed<TIn, TOut>(ReadOnlySpan<TIn> source, Func<TIn, TOut> convert, Func<TIn, bool> finite, Func<TOut, bool> finiteThere, string type)
    {
        var result = new TOut[source.Length];
        for (int i = 0; i < result.Length; i++)
        {
            result[i] = convert(source[i]);
            if (!finiteThere(result[i]) && finite(source[i])) throw Invalid($"value {source[i]} at flat index {i} is outside {type}'s range");
        }
        return result;
    }

    /// <summary>The values as int32 (int64 checked for range). Used for offsets such as cu_seqlens.</summary>
    public int[] ToInt32() => Type switch
    {
        NpyType.Int32 => MemoryMarshal.Cast<byte, int>(Data.Span).ToArray(),
        NpyType.Int64 => NarrowInt64(),
        _ => throw Invalid($"expected an integer array (int32 or int64), got {Npy.Descr(Type)}"),
    };

    private int[] NarrowInt64()
    {
        var wide = MemoryMarshal.Cast<byte, long>(Data.Span);
        var result = new int[wide.Length];
        for (int i = 0; i < result.Length; i++)
            result[i] = wide[i] is >= int.MinValue and <= int.MaxValue ? (int)wide[i]
                : throw Invalid($"expected values in the int32 range, got {wide[i]} at index {i}");
        return result;
    }

    private InvalidDataException Invalid(string why) => new(SourceFile is null ? why : $"{SourceFile}: {why}");

    public Tensor<float> ToTensorFloat32() => Tensor.Create(ToFloat32(), Shape);
    public Tensor<Half> ToTensorFloat16() => Tensor.Create(ToFloat16(), Shape);

    public static NpyArray From(ReadOnlySpan<float> values, ReadOnlySpan<nint> shape) => From<float>(values, shape);
    public static NpyArray From(ReadOnlySpan<Half> values, ReadOnlySpan<nint> shape) => From<Half>(values, shape);
    public static NpyArray From(ReadOnlySpan<double> values, ReadOnlySpan<nint> shape) => From<double>(values, shape);
    public static NpyArray From(ReadOnlySpan<int> values, ReadOnlySpan<nint> shape) => From<int>(values, shape);
    public static NpyArray From(ReadOnlySpan<long> values, ReadOnlySpan<nint> shape) => From<long>(values, shape);
    public static NpyArray From(ReadOnlySpan<bool> values, ReadOnlySpan<nint> shape) => From<bool>(values, shape);
    public static NpyArray From(ReadOnlySpan<sbyte> values, ReadOnlySpan<nint> shape) => From<sbyte>(values, shape);
    public static NpyArray From(ReadOnlySpan<byte> values, ReadOnlySpan<nint> shape) => From<byte>(values, shape);
    public static NpyArray From(ReadOnlySpan<short> values, ReadOnlySpan<nint> shape) => From<short>(values, shape);
    public static NpyArray From(ReadOnlySpan<ushort> values, ReadOnlySpan<nint> shape) => From<ushort>(values, shape);
    public static NpyArray From(ReadOnlySpan<uint> values, ReadOnlySpan<nint> shape) => From<uint>(values, shape);
    public static NpyArray From(ReadOnlySpan<ulong> values, ReadOnlySpan<nint> shape) => From<ulong>(values, shape);

    private static NpyArray From<T>(ReadOnlySpan<T> values, ReadOnlySpan<nint> shape) where T : unmanaged =>
        new(Npy.TypeOf<T>(), shape.ToArray(), MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>Unmaps the file an array read from one lies in; nothing for an array in memory.</summary>
    public void Dispose() => ((IDisposable?)_mapped)?.Dispose();

    private static TOut[] ToArray<TIn, TOut>(ReadOnlySpan<TIn> source, Func<TIn, TOut> convert)
    {
        var result = new TOut[source.Length];
        for (int i = 0; i < result.Length; i++) result[i] = convert(source[i]);
        return result;
    }
}

/// <summary>Bytes of a file mapped read-only into memory, from an offset; unmapped on dispose, after which their spans are refused.</summary>
internal sealed unsafe class MappedData : MemoryManager<byte>
{
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _start;
    private readonly int _length;
    private int _disposed;

    /// <summary>
    /// Maps <paramref name="length"/> (> 0) bytes of the file at <paramref name="offset"/>. Only the view is kept: the
    /// stream and the mapping object may be closed once it exists, so the file is not held open or locked against writers.
    /// </summary>
    public MappedData(FileStream stream, long offset, int length)
    {
        using var file = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
        _view = file.CreateViewAccessor(0, offset + length, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        // The view starts on a page boundary: PointerOffset is where the requested offset 0 lies in it.
        _start = pointer + _view.PointerOffset + offset;
        _length = length;
    }

    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return new Span<byte>(_start, _length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return new MemoryHandle(_start + elementIndex);
    }

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
    }
}

/// <summary>NumPy .npy files, format versions 1.0, 2.0 and 3.0.</summary>
public static class Npy
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Bytes per element: the digit <see cref="Descr"/> ends with.</summary>
    public static int ElementSize(NpyType type) => Descr(type)[2] - '0';

    /// <summary>
    /// The dtype as NumPy writes it: byte order, kind, bytes. A one-byte type has no byte order, which NumPy writes as '|'.
    /// </summary>
    public static string Descr(NpyType type) => type switch
    {
        NpyType.Float32 => "<f4",
        NpyType.Float16 => "<f2",
        NpyType.Float64 => "<f8",
        NpyType.Int32 => "<i4",
        NpyType.Int64 => "<i8",
        NpyType.Bool => "|b1",
        NpyType.Int8 => "|i1",
        NpyType.UInt8 => "|u1",
        NpyType.Int16 => "<i2",
        NpyType.UInt16 => "<u2",
        NpyType.UInt32 => "<u4",
        NpyType.UInt64 => "<u8",
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "not an .npy element type"),
    };

    /// <summary>The element type of <typeparamref name="T"/>: float, Half, double, int, long, bool, sbyte, byte, short, ushort, uint or ulong.</summary>
    public static NpyType TypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? NpyType.Float32
        : typeof(T) == typeof(Half) ? NpyType.Float16
        : typeof(T) == typeof(double) ? NpyType.Float64
        : typeof(T) == typeof(int) ? NpyType.Int32
        : typeof(T) == typeof(long) ? NpyType.Int64
        : typeof(T) == typeof(bool) ? NpyType.Bool
        : typeof(T) == typeof(sbyte) ? NpyType.Int8
        : typeof(T) == typeof(byte) ? NpyType.UInt8
        : typeof(T) == typeof(short) ? NpyType.Int16
        : typeof(T) == typeof(ushort) ? NpyType.UInt16
        : typeof(T) == typeof(uint) ? NpyType.UInt32
        : typeof(T) == typeof(ulong) ? NpyType.UInt64
        : throw new NotSupportedException($".npy arrays of {typeof(T).Name} are not supported (float, Half, double, int, long, bool, sbyte, byte, short, ushort, uint, ulong)");

    /// <summary>
    /// Reads a file: its header is checked as <see cref="Read(Stream)"/> checks it, and its data memory-mapped, not
    /// copied (dispose the array); a pipe (a FIFO, a shell's process substitution) is read into memory. The file holds one
    /// array: bytes past its data are refused. Errors name the file.
    /// </summary>
    public static NpyArray Read(string path)
    {
        if (Directory.Exists(path)) throw new IOException($"{path}: is a folder, not a .npy file");
        try
        {
            using var stream = File.OpenRead(path);
            var header = ReadHeader(stream);
            if (!IsSized(stream))
            {
                var bytes = ReadBlock(stream, header.Bytes, header.Data);
                RequireBools(header.Type, bytes);
                if (stream.ReadByte() >= 0) throw TrailingBytes(header, "more bytes");
                return new NpyArray(header.Type, header.Shape, bytes) { SourceFile = path };
            }
            RequireRemaining(stream, header.Bytes, header.Data);
            if (stream.Length - stream.Position > header.Bytes) throw TrailingBytes(header, $"{stream.Length - stream.Position - header.Bytes} bytes");
            if (header.Bytes == 0) return new NpyArray(header.Type, header.Shape, []) { SourceFile = path };
            var data = new MappedData(stream, stream.Position, (int)header.Bytes);
            try
            {
                RequireBools(header.Type, data.GetSpan());
            }
            catch (InvalidDataException)
            {
                ((IDisposable)data).Dispose();
                throw;
            }
            return NpyArray.Mapped(header.Type, header.Shape, data, path);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads an array into memory; a stream that is not a .npy array this reader takes (truncated, a bad header, an
    /// unsupported dtype, a shape over 2 GB, a bool byte other than 0 or 1) is an <see cref="InvalidDataException"/>
    /// saying what was expected.
    /// </summary>
    public static NpyArray Read(Stream stream)
    {
        var header = ReadHeader(stream);
        var data = ReadBlock(stream, header.Bytes, header.Data);
        RequireBools(header.Type, data);
        return new NpyArray(header.Type, header.Shape, data);
    }

    /// <summary>
    /// A bool array must hold only 0 (False) and 1 (True), as NumPy writes them: any other byte is no bool that .NET or
    /// ONNX Runtime reads reliably.
    /// </summary>
    private static void RequireBools(NpyType type, ReadOnlySpan<byte> data)
    {
        if (type != NpyType.Bool) return;
        int bad = data.IndexOfAnyExcept((byte)0, (byte)1);
        if (bad >= 0) throw new InvalidDataException($"bool value {data[bad]} at flat index {bad} is not 0 or 1 (False or True)");
    }

    /// <summary>A parsed header: element type, shape, the data's length and how the data are named in errors.</summary>
    private readonly record struct Header(NpyType Type, nint[] Shape, long Bytes, string Data);

    /// <summary>Reads and checks the preamble and the header, leaving the stream at the data.</summary>
    private static Header ReadHeader(Stream stream)
    {
        var preamble = ReadBlock(stream, 8, "the preamble (the .npy magic and version)");
        // numpy.savez writes a zip of .npy files, easily given for one: name it rather than report a bad magic.
        if (preamble.AsSpan().StartsWith("PK\x03\x04"u8) || preamble.AsSpan().StartsWith("PK\x05\x06"u8))
            throw new InvalidDataException("a .npz archive (zip), not a .npy file: give one array of it saved with numpy.save");
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
        return new Header(type, shape, bytes, $"the data of shape {TensorArgs.Format(shape)} ({Descr(type)})");
    }

    /// <summary>The stream's next <paramref name="length"/> bytes; a seekable stream is checked to hold them before they are allocated.</summary>
    private static byte[] ReadBlock(Stream stream, long length, string what)
    {
        RequireRemaining(stream, length, what);
        var block = new byte[length];
        int got = stream.ReadAtLeast(block, block.Length, throwOnEndOfStream: false);
        return got == length ? block : throw Truncated(what, length, got);
    }

    /// <summary>A stream whose length says what it holds must hold <paramref name="length"/> more bytes.</summary>
    private static void RequireRemaining(Stream stream, long length, string what)
    {
        if (IsSized(stream) && stream.Length - stream.Position < length)
            throw Truncated(what, length, Math.Max(0, stream.Length - stream.Position));
    }

    /// <summary>
    /// Whether the stream's length is what it holds: a device such as /dev/zero, or a file under /proc, seeks but says 0 and
    /// is read as a pipe is (a file that is empty reads 0 bytes either way).
    /// </summary>
    private static bool IsSized(Stream stream) => stream.CanSeek && stream.Length > 0;

    private static InvalidDataException TrailingBytes(Header header, string extra) =>
        new($"{extra} follow {header.Data}: a .npy file ends with its one array's data");

    private static InvalidDataException Truncated(string what, long expected, long got) =>
        new($"file ends inside {what}: expected {expected} bytes, got {got}");

    public static void Write(string path, NpyArray array)
    {
        ArgumentNullException.ThrowIfNull(array);
        Write(path, array.Type, array.Shape, array.Data.Span);
    }

    /// <summary>Writes version 1.0 (version 2.0 if the header does not fit 65535 bytes).</summary>
    public static void Write(Stream stream, NpyArray array)
    {
        ArgumentNullException.ThrowIfNull(array);
        Write(stream, array.Type, array.Shape, array.Data.Span);
    }

    /// <summary>
    /// Writes a dense tensor (of a type <see cref="TypeOf{T}"/> takes) straight from its memory: the header, then its
    /// bytes, with no copy between.
    /// </summary>
    public static void Write<T>(string path, ReadOnlyTensorSpan<T> tensor) where T : unmanaged
    {
        if (!tensor.IsDense) throw new ArgumentException("only a dense tensor is written (C order, no strides)", nameof(tensor));
        var values = MemoryMarshal.CreateReadOnlySpan(in tensor.GetPinnableReference(), checked((int)tensor.FlattenedLength));
        Write(path, TypeOf<T>(), tensor.Lengths, MemoryMarshal.AsBytes(values));
    }

    /// <summary>
    /// Writes <paramref name="data"/>, the values of an array of this type and shape in C order, straight from where they lie.
    /// The file is written beside <paramref name="path"/> and then moved over it: whatever maps the old file (a hard link of
    /// it, the very data written here) keeps its contents, and a write that fails leaves no half-written file. A path that is
    /// not a regular file (a symbolic link, a device such as /dev/null, a FIFO) is written through instead, as a shell's
    /// redirection would: the link, the device stay.
    /// </summary>
    public static void Write(string path, NpyType type, ReadOnlySpan<nint> shape, ReadOnlySpan<byte> data)
    {
        nint[] dims = shape.ToArray();
        OutputFile.Write(path, data, (stream, bytes) => Write(stream, type, dims, bytes));
    }

    private static void Write(Stream stream, NpyType type, ReadOnlySpan<nint> shape, ReadOnlySpan<byte> data)
    {
        long count = 1;
        foreach (var d in shape) count *= d;
        if (data.Length != count * ElementSize(type))
            throw new ArgumentException($"data holds {data.Length} bytes, shape {TensorArgs.Format(shape)} of {type} needs {count * ElementSize(type)}", nameof(data));
        var dimTexts = new string[shape.Length];
        for (int i = 0; i < shape.Length; i++) dimTexts[i] = shape[i].ToString(CultureInfo.InvariantCulture);
        var dims = string.Join(", ", dimTexts);
        if (shape.Length == 1) dims += ",";
        string dict = $"{{'descr': '{Descr(type)}', 'fortran_order': False, 'shape': ({dims}), }}";
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
        stream.Write(data);
    }

    private static (NpyType type, bool fortran, nint[] shape) ParseHeader(string header)
    {
        string descr = Field(header, "descr");
        string trimmed = descr.Trim().Trim('\'', '"');
        bool marked = trimmed.Length > 0 && "<>|=".Contains(trimmed[0]);
        // '=' is the writing machine's order, which NumPy reads as its own: on a little-endian machine, little-endian.
        char order = !marked ? '<' : trimmed[0] == '=' && BitConverter.IsLittleEndian ? '<' : trimmed[0];
        string kindAndSize = marked ? trimmed[1..] : trimmed;
        var known = Enum.GetValues<NpyType>().Where(t => Descr(t)[1..] == kindAndSize).Select(t => (NpyType?)t).SingleOrDefault();
        // A one-byte type has no byte order: NumPy writes '|' and reads any mark alike. Wider types are read little-endian only.
        NpyType type = known is { } t && (order == '<' || ElementSize(t) == 1) ? t
            : order == '>' ? throw new InvalidDataException($"big-endian arrays are not supported (descr {trimmed})")
            : throw new InvalidDataException($"unsupported dtype {trimmed}: use float32, float16, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64 or bool");
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

    /// <summary>
    /// The value text of a key in the header's dict literal (values here never contain ':' or '{'): to the comma or brace
    /// outside parentheses and brackets, so a structured dtype's list of fields is its whole value.
    /// </summary>
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
            if (c is '(' or '[') depth++;
            if (c is ')' or ']') depth--;
            if (depth == 0 && (c == ',' || c == '}')) break;
            value.Append(c);
        }
        return value.ToString();
    }
}

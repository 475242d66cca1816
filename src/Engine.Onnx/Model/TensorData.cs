using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Engine.Onnx;

/// <summary>
/// A dense tensor of any element type a model takes or gives: its ONNX element type, shape and values
/// (a float[], Half[], BFloat16[] (ONNX Runtime's), double[], long[], int[], short[], sbyte[], byte[], ushort[], uint[],
/// ulong[] or bool[]),
/// or, made by <see cref="Over"/>, read-only bytes kept elsewhere (a memory-mapped .npy file's data).
/// </summary>
public sealed class TensorData
{
    private static readonly Dictionary<Type, TensorElementType> ElementTypes = new()
    {
        [typeof(float)] = TensorElementType.Float,
        [typeof(Half)] = TensorElementType.Float16,
        [typeof(Microsoft.ML.OnnxRuntime.BFloat16)] = TensorElementType.BFloat16,
        [typeof(double)] = TensorElementType.Double,
        [typeof(long)] = TensorElementType.Int64,
        [typeof(int)] = TensorElementType.Int32,
        [typeof(short)] = TensorElementType.Int16,
        [typeof(sbyte)] = TensorElementType.Int8,
        [typeof(byte)] = TensorElementType.UInt8,
        [typeof(ushort)] = TensorElementType.UInt16,
        [typeof(uint)] = TensorElementType.UInt32,
        [typeof(ulong)] = TensorElementType.UInt64,
        [typeof(bool)] = TensorElementType.Bool,
    };

    private readonly Array? _values;
    private readonly ReadOnlyMemory<byte> _memory;

    private TensorData(TensorElementType elementType, long[] shape, Array values)
    {
        ElementType = elementType;
        Shape = shape;
        _values = values;
    }

    private TensorData(TensorElementType elementType, long[] shape, ReadOnlyMemory<byte> memory)
    {
        ElementType = elementType;
        Shape = shape;
        _memory = memory;
    }

    public TensorElementType ElementType { get; }
    public long[] Shape { get; }

    /// <summary>The values' array; a tensor made by <see cref="Over"/> has none (read <see cref="Bytes"/>).</summary>
    public Array Values => _values
        ?? throw new InvalidOperationException($"this {this} lies in memory kept elsewhere (TensorData.Over): it has no array; read its Bytes");

    public Type ClrType => ClrTypeOf(ElementType);
    public long ElementCount => _values?.LongLength ?? _memory.Length / ElementSize(ElementType);

    /// <summary>
    /// Whether the tensor is over read-only bytes kept elsewhere (made by <see cref="Over"/>, not copied): an input only,
    /// whose bytes must stay valid as long as the tensor is used.
    /// </summary>
    public bool IsReadOnly => _values is null;

    /// <summary>Wraps <paramref name="values"/> (not copied, row-major) with the given shape.</summary>
    /// <exception cref="ArgumentException">A negative dimension, or a shape that does not hold exactly values.Length elements.</exception>
    /// <exception cref="NotSupportedException">T is not one of the element types above.</exception>
    public static TensorData Create<T>(T[] values, params long[] shape) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(values);
        if (!ElementTypes.TryGetValue(typeof(T), out var type))
            throw new NotSupportedException($"element type {typeof(T).Name} is not supported");
        if (!TryCount(shape, out long count)) throw BadShape(shape);
        if (count != values.LongLength)
            throw new ArgumentException($"shape {Format(shape)} holds {count} elements, got {values.LongLength} values", nameof(values));
        return new TensorData(type, (long[])shape.Clone(), values);
    }

    /// <summary>A copy of <paramref name="tensor"/>'s values with its shape.</summary>
    public static TensorData FromTensor<T>(Tensor<T> tensor) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var values = new T[tensor.FlattenedLength];
        tensor.FlattenTo(values);
        var shape = new long[tensor.Rank];
        for (int i = 0; i < shape.Length; i++) shape[i] = tensor.Lengths[i];
        return Create(values, shape);
    }

    /// <summary>Whether a tensor of this ONNX element type can be held (the CLR types above).</summary>
    public static bool Holds(TensorElementType type) => ElementTypes.ContainsValue(type);

    /// <summary>The CLR element type for an ONNX element type.</summary>
    public static Type ClrTypeOf(TensorElementType type) =>
        ElementTypes.FirstOrDefault(e => e.Value == type).Key
        ?? throw new NotSupportedException($"ONNX element type {type} is not supported");

    /// <summary>The values' array as T[] (not copied); <see cref="InvalidCastException"/> when the tensor holds another type.</summary>
    public T[] As<T>() where T : unmanaged =>
        Values as T[] ?? throw new InvalidCastException($"tensor holds {ClrType.Name}, not {typeof(T).Name}");

    /// <summary>A <see cref="Tensor{T}"/> over the values' array (not copied) with this shape.</summary>
    public Tensor<T> ToTensor<T>() where T : unmanaged
    {
        var lengths = new nint[Shape.Length];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = checked((nint)Shape[i]);
        return Tensor.Create(As<T>(), lengths);
    }

    /// <summary>
    /// Whether <see cref="Shape"/> still holds exactly <see cref="ElementCount"/> elements: it is the caller's array, which
    /// may be changed after the tensor was made, and a run must not hand ORT a shape its values do not fill.
    /// </summary>
    internal bool ShapeHoldsValues => TryCount(Shape, out long count) && count == ElementCount;

    /// <summary>The element count of <paramref name="shape"/>; false for a negative dimension or a count past a long.</summary>
    private static bool TryCount(long[] shape, out long count)
    {
        count = 0;
        if (shape.Any(d => d < 0)) return false;
        if (shape.Contains(0)) return true;
        count = 1;
        foreach (long d in shape)
        {
            if (count > long.MaxValue / d) return false;
            count *= d;
        }
        return true;
    }

    private static ArgumentException BadShape(long[] shape) =>
        new($"shape {Format(shape)} has a negative dimension or more elements than a long counts", nameof(shape));

    /// <summary>The values as bytes, in memory order.</summary>
    public ReadOnlySpan<byte> Bytes => _values is null ? _memory.Span : MemoryMarshal.CreateReadOnlySpan(
        ref MemoryMarshal.GetArrayDataReference(_values), checked((int)(_values.LongLength * ElementSize(ElementType))));

    /// <summary>The values pinned where they lie, for ORT to read or write them.</summary>
    internal unsafe MemoryHandle Pin()
    {
        if (_values is null) return _memory.Pin();
        var handle = GCHandle.Alloc(_values, GCHandleType.Pinned);
        return new MemoryHandle((void*)handle.AddrOfPinnedObject(), handle);
    }

    public static int ElementSize(TensorElementType type) => type switch
    {
        TensorElementType.Double or TensorElementType.Int64 or TensorElementType.UInt64 => 8,
        TensorElementType.Float or TensorElementType.Int32 or TensorElementType.UInt32 => 4,
        TensorElementType.Float16 or TensorElementType.Int16 or TensorElementType.UInt16
            or TensorElementType.BFloat16 => 2,
        TensorElementType.Int8 or TensorElementType.UInt8 or TensorElementType.Bool => 1,
        _ => throw new NotSupportedException($"ONNX element type {type} is not supported"),
    };

    /// <summary>A tensor of <paramref name="type"/> over a copy of <paramref name="bytes"/>.</summary>
    public static TensorData FromBytes(TensorElementType type, long[] shape, ReadOnlySpan<byte> bytes)
    {
        long count = ElementsFor(type, shape, bytes.Length);
        var values = Array.CreateInstance(ClrTypeOf(type), count);
        bytes.CopyTo(MemoryMarshal.CreateSpan(ref MemoryMarshal.GetArrayDataReference(values), bytes.Length));
        return new TensorData(type, (long[])shape.Clone(), values);
    }

    /// <summary>
    /// A tensor of <paramref name="type"/> over <paramref name="bytes"/> where they lie (a memory-mapped .npy file's
    /// data), not copied: ORT reads them in place. They must stay valid while the tensor is used; the tensor is an
    /// input only (<see cref="IsReadOnly"/>), and has no <see cref="Values"/> array.
    /// </summary>
    public static TensorData Over(TensorElementType type, long[] shape, ReadOnlyMemory<byte> bytes)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ElementsFor(type, shape, bytes.Length);
        return new TensorData(type, (long[])shape.Clone(), bytes);
    }

    /// <summary>The element count of the shape, which <paramref name="length"/> bytes of the type must hold exactly.</summary>
    private static long ElementsFor(TensorElementType type, long[] shape, int length)
    {
        ClrTypeOf(type);
        if (!TryCount(shape, out long count)) throw BadShape(shape);
        int size = ElementSize(type);
        // Compared as a count first: the byte count of a shape past long's range / size wrapped, and a shape of 2^62 floats
        // "needed" 0 bytes.
        if (count > length / size || count * size != length)
            throw new ArgumentException($"{type} tensor of shape {Format(shape)} needs {(Int128)count * size} bytes, got {length}", "bytes");
        return count;
    }

    public static string Format(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    public override string ToString() => $"{ElementType} {Format(Shape)}";
}

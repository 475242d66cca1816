using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Engine.Onnx;

/// <summary>
/// A dense tensor of any element type a model takes or gives: its ONNX element type, shape and values
/// (a float[], Half[], double[], long[], int[], short[], sbyte[], byte[], ushort[], uint[], ulong[] or bool[]).
/// </summary>
public sealed class TensorData
{
    private static readonly Dictionary<Type, TensorElementType> ElementTypes = new()
    {
        [typeof(float)] = TensorElementType.Float,
        [typeof(Half)] = TensorElementType.Float16,
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

    private TensorData(TensorElementType elementType, long[] shape, Array values)
    {
        ElementType = elementType;
        Shape = shape;
        Values = values;
    }

    public TensorElementType ElementType { get; }
    public long[] Shape { get; }
    public Array Values { get; }
    public Type ClrType => Values.GetType().GetElementType()!;
    public long ElementCount => Values.LongLength;

    /// <summary>Wraps <paramref name="values"/> (not copied) with the given shape.</summary>
    public static TensorData Create<T>(T[] values, params long[] shape) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(values);
        if (!ElementTypes.TryGetValue(typeof(T), out var type))
            throw new NotSupportedException($"element type {typeof(T).Name} is not supported");
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentException($"shape {Format(shape)} has a negative dimension", nameof(shape));
            count = checked(count * d);
        }
        if (count != values.LongLength)
            throw new ArgumentException($"shape {Format(shape)} holds {count} elements, got {values.LongLength} values", nameof(values));
        return new TensorData(type, (long[])shape.Clone(), values);
    }

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

    public T[] As<T>() where T : unmanaged =>
        Values as T[] ?? throw new InvalidCastException($"tensor holds {ClrType.Name}, not {typeof(T).Name}");

    public Tensor<T> ToTensor<T>() where T : unmanaged
    {
        var lengths = new nint[Shape.Length];
        for (int i = 0; i < lengths.Length; i++) lengths[i] = checked((nint)Shape[i]);
        return Tensor.Create(As<T>(), lengths);
    }

    /// <summary>The values as bytes, in memory order.</summary>
    public ReadOnlySpan<byte> Bytes => MemoryMarshal.CreateReadOnlySpan(
        ref MemoryMarshal.GetArrayDataReference(Values), checked((int)(Values.LongLength * ElementSize(ElementType))));

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
        var clr = ClrTypeOf(type);
        long count = 1;
        foreach (long d in shape) count = checked(count * d);
        if (count * ElementSize(type) != bytes.Length)
            throw new ArgumentException($"{type} tensor of shape {Format(shape)} needs {count * ElementSize(type)} bytes, got {bytes.Length}", nameof(bytes));
        var values = Array.CreateInstance(clr, count);
        bytes.CopyTo(MemoryMarshal.CreateSpan(ref MemoryMarshal.GetArrayDataReference(values), bytes.Length));
        return new TensorData(type, (long[])shape.Clone(), values);
    }

    public static string Format(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    public override string ToString() => $"{ElementType} {Format(Shape)}";
}
